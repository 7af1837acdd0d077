"""The task interface shared by Reach, Pack, Cap, USB and Case.

A task owns its scene (objects added to the bench), its initial-state distributions (``id``
and ``ood``, chosen by name and seed), its stages, a success predicate and failure predicates
computed from privileged simulator state, and a closed-loop scripted expert.

Tasks are stateless apart from a per-episode ``memo`` dict that the environment owns and
includes in every snapshot, so rollback restores it with the physics.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import mujoco
import numpy as np

from envs.xtrainer import SceneFragment

if TYPE_CHECKING:
    from envs.env import XTrainerEnv

SPLITS = ("id", "ood")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


class Expert(Protocol):
    """Closed-loop scripted demonstrator: it reads the env's current state at every call,
    so it can take over from any reachable state (e.g. one the policy was rolled back to)."""

    def reset(self, env: XTrainerEnv, rng: np.random.Generator) -> None: ...

    def act(self, env: XTrainerEnv) -> np.ndarray:
        """The next 20-dim end-effector action."""
        ...

    def get_state(self) -> dict[str, Any]: ...

    def set_state(self, state: dict[str, Any]) -> None: ...


class Task(ABC):
    name: ClassVar[str]  # lower-case registry key, e.g. "usb"
    title: ClassVar[str]  # gymnasium id part, e.g. "USB" -> FlowPRO/USB-v0
    instruction: ClassVar[str]
    time_limit_s: ClassVar[float] = 40.0
    success_hold_s: ClassVar[float] = 0.5
    terminal_failures: ClassVar[frozenset[str]] = frozenset()  # failure kinds that end an episode
    stages: ClassVar[tuple[str, ...]] = ()  # every name ``stage`` returns, in task order

    @abstractmethod
    def scene(self) -> SceneFragment:
        """Objects, assets and contact settings added to the bench."""

    def bind(self, model: mujoco.MjModel, control_dt: float) -> None:
        """Called once with the compiled model and the control period (cache ids here)."""

    @abstractmethod
    def sample_initial_state(self, rng: np.random.Generator, split: str) -> dict[str, float]:
        """Randomised scene parameters (named, plain floats) for one episode."""

    @abstractmethod
    def apply_initial_state(self, model: mujoco.MjModel, data: mujoco.MjData, init: dict[str, float]) -> None:
        """Write the initial scene into ``data`` (arms are already at home)."""

    def new_memo(self) -> dict[str, Any]:
        """Per-episode Python-side task state (e.g. progress history for stall detection)."""
        return {}

    def view(self, data: mujoco.MjData) -> Any:
        """What ``stage``, ``is_success`` and ``failures`` share about the current state (e.g. one
        scan of the contacts). The environment computes it once per control step and passes it to
        all three as ``view``; without one (None, the default here) each reads ``data`` itself."""
        return None

    @abstractmethod
    def stage(self, data: mujoco.MjData, memo: dict[str, Any], view: Any = None) -> str:
        """Name of the current stage, for operators, experts and reports."""

    @abstractmethod
    def is_success(self, data: mujoco.MjData, view: Any = None) -> bool:
        """Instantaneous success predicate; the env requires it to hold ``success_hold_s``."""

    @abstractmethod
    def failures(self, data: mujoco.MjData, memo: dict[str, Any], view: Any = None) -> list[str]:
        """Failure kinds detected now (may update ``memo``)."""

    @abstractmethod
    def privileged_state(self, data: mujoco.MjData, view: Any = None) -> np.ndarray:
        """Flat vector of object poses for ``obs_mode='state'`` (``view``: this state's, if at hand)."""

    def make_expert(self) -> Expert:
        """A fresh scripted expert for this task (the class registered for its name, :func:`register_expert`)."""
        if self.name not in EXPERTS:
            raise ValueError(f"task {self.name!r} has no scripted expert; tasks with one: {', '.join(sorted(EXPERTS))}")
        return EXPERTS[self.name](self)


# The registries: name -> Task class, name -> its expert's class. A task module registers its
# classes when it is imported (envs/tasks/__init__.py imports them all).
TASKS: dict[str, type[Task]] = {}
EXPERTS: dict[str, type] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def register_expert(task: str):
    """Class decorator: the scripted expert of ``task``; constructed as ``cls(task_instance)``."""
    def register(cls: type) -> type:
        EXPERTS[task] = cls
        return cls
    return register


# ---------------------------------------------------------------------------------------------- variants
def task_options(cls: type[Task]) -> dict[str, inspect.Parameter]:
    """The options of a task class: its constructor's keyword parameters, by name."""
    if cls.__init__ is object.__init__:
        return {}
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]  # without self
    return {p.name: p for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _describe_options(name: str, params: dict[str, inspect.Parameter]) -> str:
    if not params:
        return f"task {name!r} takes no options"
    listed = ", ".join(p.name if p.default is p.empty else f"{p.name} (default {_format_value(p.default)})"
                       for p in params.values())
    return f"valid options of task {name!r}: {listed}"


def _format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")


def _option_value(param: inspect.Parameter, value: Any) -> Any:
    """``value`` as the type of the parameter's default (text from a command line is converted);
    a ValueError says what was expected."""
    default = param.default
    if isinstance(default, bool):
        if isinstance(value, str) and value.lower() in _TRUE + _FALSE:
            return value.lower() in _TRUE
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
    elif isinstance(default, (int, float)):
        kind, expected = type(default), "an integer" if isinstance(default, int) else "a number"
        if isinstance(value, bool) or not isinstance(value, (int, float, str)) or (
                kind is int and isinstance(value, float)):
            raise ValueError(f"expected {expected}")
        try:
            value = kind(value)
        except ValueError:
            raise ValueError(f"expected {expected}") from None
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ValueError("expected text")
    elif isinstance(value, str):  # no default to go by: text that reads as a number or truth value is one
        for convert in (int, float):
            try:
                return convert(value)
            except ValueError:
                pass
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
    elif not isinstance(value, (bool, int, float)):
        raise ValueError("expected a number, true/false or text")
    if isinstance(value, str) and any(c in value for c in ",="):
        raise ValueError("text cannot hold ',' or '='")
    return value


@dataclass(frozen=True)
class TaskSpec:
    """A task variant as data: a registered task's name and options for its constructor.

    Its text form, ``name`` or ``name:option=value,option=value`` (``usb:clearance_m=0.001,lead_m=0.0``
    is ``UsbTask(clearance_m=0.001, lead_m=0.0)``), holds no character a shell treats specially, so
    it goes on a command line as it is (``--task usb:clearance_m=0.001``); ``str()`` writes it in a
    canonical form (options sorted by name, values as Python writes them) that :meth:`parse` reads
    back to an equal spec. A spec or its text is what crosses into worker processes, where
    :func:`get_task` builds the task; a configured :class:`Task` instance is not (it need not pickle,
    and cannot be written down). Options are checked against the constructor's signature when the
    spec is made: an unknown option or a value of the wrong type is a ValueError that names it and
    lists the task's options; the constructor checks the values' ranges when the task is built.
    A plain name has no options and builds the task exactly as before."""

    name: str
    options: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()

    def __post_init__(self) -> None:
        name = self.name.strip().lower()
        if name not in TASKS:
            raise ValueError(f"unknown task {self.name!r}; valid tasks: {', '.join(sorted(TASKS))}")
        items = list(self.options.items() if isinstance(self.options, Mapping) else self.options)
        params = task_options(TASKS[name])
        options: dict[str, Any] = {}
        for key, value in items:
            if key not in params:
                raise ValueError(f"task {name!r} has no option {key!r}; {_describe_options(name, params)}")
            if key in options:
                raise ValueError(f"task {name!r}: option {key!r} given twice")
            try:
                options[key] = _option_value(params[key], value)
            except ValueError as e:
                raise ValueError(f"task {name!r}: bad value {value!r} for option {key!r} ({e}); "
                                 f"{_describe_options(name, params)}") from None
        missing = [p for p in params.values() if p.default is p.empty and p.name not in options]
        if missing:
            raise ValueError(f"task {name!r} needs option(s) {', '.join(p.name for p in missing)}; "
                             f"{_describe_options(name, params)}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "options", tuple(sorted(options.items())))

    @classmethod
    def parse(cls, spec: str | TaskSpec) -> TaskSpec:
        """The spec written ``name`` or ``name:option=value,...`` (a TaskSpec is returned as it is)."""
        if isinstance(spec, TaskSpec):
            return spec
        if isinstance(spec, Task):
            raise TypeError(f"a configured {type(spec).__name__} is not a task spec; name its variant as data, "
                            f"e.g. TaskSpec({spec.name!r}, {{...}}) or the text {spec.name + ':option=value'!r}")
        if not isinstance(spec, str):
            raise TypeError(f"a task spec is a string or a TaskSpec, got {type(spec).__name__}")
        name, colon, rest = spec.partition(":")
        items: list[tuple[str, str]] = []
        if colon:
            for item in rest.split(","):
                key, eq, value = (part.strip() for part in item.partition("="))
                if not (key and eq and value):
                    raise ValueError(f"task spec {spec!r}: {item!r} is not option=value "
                                     f"(write {name!r} or {name + ':option=value,option=value'!r})")
                items.append((key, value))
        return cls(name, tuple(items))

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + ":" + ",".join(f"{k}={_format_value(v)}" for k, v in self.options)

    def build(self) -> Task:
        """A fresh task of this variant (the constructor's own checks name a value out of range)."""
        try:
            return TASKS[self.name](**dict(self.options))
        except ValueError as e:
            raise ValueError(f"task {str(self)!r}: {e}") from e


def spec_text(task: str | TaskSpec) -> str:
    """The canonical text of a task spec (``"usb"`` stays ``"usb"``): what to hand to worker
    processes and to write into results. The task is built once here, so an unknown task or
    option, or a value the task refuses, is a ValueError in the caller, before any worker starts."""
    spec = TaskSpec.parse(task)
    spec.build()
    return str(spec)


def task_name(task: str | TaskSpec | Task) -> str:
    """The registered name of a task or variant (``"usb:lead_m=0.0"`` -> ``"usb"``): for
    registry lookups, file and dataset names."""
    return task.name if isinstance(task, Task) else TaskSpec.parse(task).name


def task_help() -> str:
    """What a ``--task`` argument takes: the tasks and their options (for a CLI's ``--help``)."""
    options = "; ".join(f"{name}: " + (", ".join(f"{p.name}={_format_value(p.default)}"
                                                 for p in task_options(cls).values()) or "none")
                        for name, cls in sorted(TASKS.items()))
    return (f"a task ({', '.join(sorted(TASKS))}) or a variant of one with options for its constructor, written "
            f"NAME:OPTION=VALUE,OPTION=VALUE (e.g. usb:clearance_m=0.001,lead_m=0.0; no shell quoting needed). "
            f"Options and defaults: {options}")


def get_task(name: str | TaskSpec | Task) -> Task:
    """A fresh task instance by name or spec (``"usb"``, ``"usb:clearance_m=0.001"``, a
    :class:`TaskSpec`; a configured instance, e.g. ``UsbTask(lead_m=0.002)``, is used as it is);
    unknown names list the valid tasks, unknown options the task's options."""
    if isinstance(name, Task):
        return name
    return TaskSpec.parse(name).build()
