"""The task interface shared by Reach, Pack, Cap, USB and Case.

A task owns its scene (objects added to the bench), its initial-state distributions (``id``
and ``ood``, chosen by name and seed), its stages, a success predicate and failure predicates
computed from privileged simulator state, and a closed-loop scripted expert.

Tasks are stateless apart from a per-episode ``memo`` dict that the environment owns and
includes in every snapshot, so rollback restores it with the physics.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
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


def get_task(name: str | Task) -> Task:
    """A fresh task instance by name (a configured instance, e.g. ``UsbTask(lead_m=0.002)``, is
    used as it is); unknown names list the valid ones."""
    if isinstance(name, Task):
        return name
    key = name.lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]()
