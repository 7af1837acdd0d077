"""Where the FlowPRO rounds run: in simulation or on the real X-Trainer (docs/method.md §Pipeline; docs/platform.md).

A round collects intervention-and-rollback pairs with the current policy and evaluates the
fine-tuned one; :func:`flowpro.finetune.run_rounds` asks a :class:`Bench` for both and does
everything else (tuples, buffers, fine-tuning, resuming) the same way on either:

- :class:`flowpro.sim_bench.SimulatedBench`: the scripted oracle collects in parallel rollouts
  (:func:`flowpro.collect.collect`), evaluation runs on the task's ID/OOD scenes
  (:func:`flowpro.rollout.evaluate`).
- :class:`hardware.bench.RealBench`: a human operator on the robot. It lives in :mod:`hardware`
  and registers as backend ``"real"`` (:func:`register_bench`); :mod:`flowpro` knows it only
  through the :class:`Bench` protocol.

:func:`open_bench` is the one factory: the CLIs pass the backend they were given (``--backend``)
and it returns the bench registered under that name. Both benches register when their module is
imported (:func:`flowpro.plugins.load_plugins`), so this module imports neither.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, Self, TypeVar

from flowpro.plugins import load_plugins

if TYPE_CHECKING:
    from flowpro.finetune import RPROConfig


class BenchStopped(RuntimeError):
    """A real session stopped before its work was done (the operator ended it, or the bench
    faulted); what was finished is on disk and rerunning the same command continues."""


class Bench(Protocol):
    """What the rounds need of a bench: collect a round's pairs, evaluate a policy, close."""

    backend: str  # the name it is registered under (RPROConfig.backend, --backend)
    robot_config: str | None  # the robot configuration file of a real bench

    @classmethod
    def check(cls, cfg: RPROConfig) -> None:
        """Raise ``ValueError`` if ``cfg``'s bench settings do not fit this bench (before anything runs)."""

    def collect(self, cfg: RPROConfig, policy_dir: str | Path, round_k: int, root: Path) -> dict: ...

    def evaluate(self, task: str, policy_dir: str | Path, split: str, rollouts: int, record: Path,
                 workers: int | None = None, seed: int | None = None) -> list[dict]: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


BENCHES: dict[str, Callable[..., Bench]] = {}
B = TypeVar("B")


def register_bench(backend: str) -> Callable[[type[B]], type[B]]:
    """Class decorator: the bench of ``--backend backend``, built as ``cls(robot_config=..., progress=...,
    keys=..., teleop=...)`` by :func:`open_bench`."""

    def register(cls: type[B]) -> type[B]:
        cls.backend = backend
        BENCHES[backend] = cls
        return cls

    return register


def bench_class(backend: str) -> Any:
    """The bench registered as ``backend`` (each registers when its module is imported: :mod:`flowpro.sim_bench`,
    :mod:`hardware.bench`)."""
    if backend not in BENCHES:
        load_plugins("benches")
    if backend not in BENCHES:
        raise ValueError(f"backend must be {' or '.join(repr(b) for b in BENCHES)}, got {backend!r}")
    return BENCHES[backend]


def open_bench(backend: str, robot_config: str | Path | None = None, progress: bool = True, **kwargs: Any) -> Bench:
    """The bench of ``backend``; ``kwargs`` (a real bench's ``keys`` and ``teleop``: the keyboard and the
    leader arms replaced, for tests and other front ends) go to the bench that takes them."""
    return bench_class(backend)(robot_config=robot_config, progress=progress, **kwargs)


def make_bench(cfg: RPROConfig, progress: bool = True, **kwargs: Any) -> Bench:
    """The bench of ``cfg.backend`` (``keys``/``teleop`` replace the real bench's keyboard and leader arms)."""
    return open_bench(cfg.backend, cfg.robot_config, progress, **kwargs)
