"""The backend-agnostic robot interface and the one rollout loop everything downstream uses.

A backend is anything that can ``reset``, ``observe``, ``act`` (one control step) and
``close``; simulated backends also ``snapshot``/``restore``. :class:`envs.env.XTrainerEnv`
implements it in simulation and ``hardware/`` implements it on the real X-Trainer, so
evaluation, data collection and the operator code never ask which one they drive.

Policies act in chunks (SPEC §2): the loop asks for an ``H``-step chunk, executes its first
``n_action_steps`` actions and re-plans.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    task_description: str
    control_dt: float
    time_limit_s: float

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Start an episode; returns (observation, info)."""
        ...

    def observe(self) -> dict[str, Any]: ...

    def act(self, action: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        """Execute one control step; returns (observation, info) with at least ``is_success``,
        ``completion_time_s``, ``failures``, ``terminal_failure`` (a kind or None) and ``time_s``."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class RollbackBackend(Backend, Protocol):
    """A backend whose whole state can be captured and put back (simulation)."""

    def snapshot(self) -> Any: ...

    def restore(self, snapshot: Any) -> dict[str, Any]: ...


class ChunkPolicy(Protocol):
    def reset(self) -> None: ...

    def predict_chunk(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        """An ``(H, action_dim)`` chunk of absolute actions for the current observation."""
        ...


@dataclass
class StepRecord:
    obs: dict[str, Any]
    action: np.ndarray
    info: dict[str, Any]


@dataclass
class EpisodeResult:
    seed: int | None
    success: bool
    completion_time_s: float | None
    steps: int
    time_s: float
    failures_seen: list[str]
    terminated_by: str  # "success", "failure:<kind>", "time_limit" or "stopped"
    stages_seen: list[str] = field(default_factory=list)  # in order of first appearance: how far it got
    initial_state: dict[str, float] = field(default_factory=dict)
    trajectory: list[StepRecord] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "trajectory"}


# A hook sees every executed step and may return "stop" to end the episode early (an operator
# taking over, a safety monitor).
StepHook = Callable[[Backend, StepRecord], "str | None"]


def rollout(backend: Backend, policy: ChunkPolicy, *, seed: int | None = None, options: dict | None = None,
            n_action_steps: int = 15, record: bool = False, hook: StepHook | None = None) -> EpisodeResult:
    """Run one closed-loop episode with chunked execution (re-plan every ``n_action_steps``)."""
    if n_action_steps < 1:
        raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")
    obs, info = backend.reset(seed=seed, options=options)
    policy.reset()
    trajectory: list[StepRecord] = []
    steps, terminated_by = 0, "time_limit"
    queue: list[np.ndarray] = []
    initial_state = dict(getattr(backend, "initial_state", {}) or {})
    stages = [info["stage"]] if "stage" in info else []
    while info["time_s"] < backend.time_limit_s - 1e-9:
        if not queue:
            chunk = np.asarray(policy.predict_chunk(obs, backend.task_description))
            queue = list(chunk[:n_action_steps])
        action = queue.pop(0)
        prev_obs = obs
        obs, info = backend.act(action)
        steps += 1
        if "stage" in info and info["stage"] not in stages:
            stages.append(info["stage"])
        step = StepRecord(prev_obs, np.asarray(action), info)
        if record:
            trajectory.append(step)
        if info["is_success"]:
            terminated_by = "success"
            break
        # The hook sees a failing step before the episode ends on it: an operator may still roll back.
        if hook is not None and hook(backend, step) == "stop":
            terminated_by = "stopped"
            break
        if info.get("terminal_failure"):
            terminated_by = f"failure:{info['terminal_failure']}"
            break
    return EpisodeResult(seed=seed, success=bool(info["is_success"]), completion_time_s=info["completion_time_s"],
                         steps=steps, time_s=info["time_s"], failures_seen=list(info.get("failures_seen", [])),
                         terminated_by=terminated_by, stages_seen=stages, initial_state=initial_state,
                         trajectory=trajectory)


@contextmanager
def worker_pool(workers: int | None = None) -> Iterator[Any]:
    """Worker processes (default: one per core) to ``map`` picklable functions over, kept for as
    many ``map`` calls as the caller needs, so each worker builds its environment and policy once;
    with one worker, an in-process stand-in."""
    workers = workers or os.cpu_count() or 1
    if workers == 1:
        yield SimpleNamespace(map=map)
        return
    # forkserver: forking a process that already runs torch/GL threads can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver")) as pool:
        yield pool


def parallel_map(fn: Callable[[int], dict], seeds: list[int], workers: int | None = None) -> list[dict]:
    """``[fn(seed) for seed in seeds]`` over :func:`worker_pool`, in order.

    ``fn`` must be picklable (a module-level function or a ``functools.partial`` of one); each
    worker should build its environment once and reuse it across seeds.
    """
    with worker_pool(workers) as pool:
        return list(pool.map(fn, seeds))


class ExpertPolicy:
    """Wraps a task's scripted expert as a one-step chunk policy (for demos and tests)."""

    def __init__(self, env, seed: int = 0):
        self.env = env
        self.expert = env.task.make_expert()
        self.rng = np.random.default_rng(seed)

    def reset(self) -> None:
        self.expert.reset(self.env, self.rng)

    def predict_chunk(self, obs, instruction) -> np.ndarray:
        return self.expert.act(self.env)[None]
