"""The backend-agnostic robot interface and the one rollout loop everything downstream uses.

A backend is anything that can ``reset``, ``observe``, ``act`` (one control step) and
``close``; simulated backends also ``snapshot``/``restore``. :class:`envs.env.XTrainerEnv`
implements it in simulation and ``hardware/`` implements it on the real X-Trainer, so
evaluation, data collection and the operator code never ask which one they drive.

Policies act in chunks (docs/method.md §Flow matching): the loop asks for an ``H``-step chunk, executes its first
``n_action_steps`` actions and re-plans. :func:`rollout_batch` runs the same episodes on several
backends in lock-step, so that one policy call serves every episode that re-plans.
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
        ``failures``, ``terminal_failure`` (a kind or None), ``time_s``, and ``completion_time_s``
        once ``is_success`` (absent before: every key keeps one type, for gymnasium's vector envs)."""
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
    terminated_by: str  # "success", "failure:<kind>", "time_limit", "stopped"; rollout_batch: "error:<type>: <msg>"
    stages_seen: list[str] = field(default_factory=list)  # in order of first appearance: how far it got
    initial_state: dict[str, float] = field(default_factory=dict)
    trajectory: list[StepRecord] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "trajectory"}


# A hook sees every executed step and may return "stop" to end the episode early (an operator
# taking over, a safety monitor).
StepHook = Callable[[Backend, StepRecord], "str | None"]


class _Episode:
    """One episode's bookkeeping, shared by :func:`rollout` and :func:`rollout_batch`: reset on
    construction, then ``plan`` a chunk whenever ``needs_chunk`` and ``step`` until ``done``."""

    def __init__(self, backend: Backend, seed: int | None, options: dict | None, n_action_steps: int, record: bool):
        self.backend, self.seed, self.n_action_steps, self.record = backend, seed, n_action_steps, record
        self.obs, self.info = backend.reset(seed=seed, options=options)
        self.initial_state = dict(getattr(backend, "initial_state", {}) or {})
        self.stages = [self.info["stage"]] if "stage" in self.info else []
        self.queue: list[np.ndarray] = []
        self.trajectory: list[StepRecord] = []
        self.steps = 0
        self.ended_by: str | None = None  # None while it runs (and when it runs out of time)
        self.error = False

    @property
    def done(self) -> bool:
        return self.ended_by is not None or self.info["time_s"] >= self.backend.time_limit_s - 1e-9

    @property
    def needs_chunk(self) -> bool:
        return not self.queue

    def plan(self, chunk: np.ndarray) -> None:
        self.queue = list(np.asarray(chunk)[:self.n_action_steps])

    def step(self, hook: StepHook | None = None) -> None:
        """Execute the next queued action."""
        action = self.queue.pop(0)
        prev_obs = self.obs
        self.obs, info = self.backend.act(action)
        self.info = info
        self.steps += 1
        if "stage" in info and info["stage"] not in self.stages:
            self.stages.append(info["stage"])
        step = StepRecord(prev_obs, np.asarray(action), info)
        if self.record:
            self.trajectory.append(step)
        if info["is_success"]:
            self.ended_by = "success"
        # The hook sees a failing step before the episode ends on it: an operator may still roll back.
        elif hook is not None and hook(self.backend, step) == "stop":
            self.ended_by = "stopped"
        elif info.get("terminal_failure"):
            self.ended_by = f"failure:{info['terminal_failure']}"

    def crash(self, error: Exception) -> None:
        """End the episode on an exception raised by the backend (it counts as failed)."""
        self.ended_by, self.error = f"error:{type(error).__name__}: {error}", True

    def result(self) -> EpisodeResult:
        info = self.info
        return EpisodeResult(seed=self.seed, success=bool(info["is_success"]) and not self.error,
                             completion_time_s=None if self.error or not info["is_success"]
                             else info["completion_time_s"],
                             steps=self.steps, time_s=info["time_s"], failures_seen=list(info.get("failures_seen", [])),
                             terminated_by=self.ended_by or "time_limit", stages_seen=self.stages,
                             initial_state=self.initial_state, trajectory=self.trajectory)


def _check_n_action_steps(n_action_steps: int) -> None:
    if n_action_steps < 1:
        raise ValueError(f"n_action_steps must be >= 1, got {n_action_steps}")


def rollout(backend: Backend, policy: ChunkPolicy, *, seed: int | None = None, options: dict | None = None,
            n_action_steps: int = 15, record: bool = False, hook: StepHook | None = None) -> EpisodeResult:
    """Run one closed-loop episode with chunked execution (re-plan every ``n_action_steps``)."""
    _check_n_action_steps(n_action_steps)
    episode = _Episode(backend, seed, options, n_action_steps, record)
    policy.reset()
    while not episode.done:
        if episode.needs_chunk:
            episode.plan(policy.predict_chunk(episode.obs, backend.task_description))
        episode.step(hook)
    return episode.result()


class BatchChunkPolicy(Protocol):
    def predict_chunks(self, episodes: list[int], observations: list[dict[str, Any]],
                       instruction: str) -> list[np.ndarray]:
        """One ``(H, action_dim)`` chunk per listed episode (indices into the batch's ``seeds``),
        for its current observation; each episode keeps its own policy state (e.g. noise)."""
        ...


def rollout_batch(backends: list[Backend], policy: BatchChunkPolicy, seeds: list[int | None], *,
                  options: dict | None = None, n_action_steps: int = 15) -> list[EpisodeResult]:
    """The episodes of ``seeds`` in lock-step, one at a time per backend, with one
    ``predict_chunks`` call per step for every episode that must re-plan; a backend whose episode
    ends starts the next seed at the batch's next re-plan, so that re-plans stay together. Each
    episode runs exactly as :func:`rollout` would run it, except that an exception in a backend's
    ``act`` ends only that episode, as failed with ``terminated_by = "error:<type>: <message>"``.
    Results in the order of ``seeds``."""
    _check_n_action_steps(n_action_steps)
    if not backends:
        raise ValueError("rollout_batch needs at least one backend")
    instructions = {b.task_description for b in backends}
    if len(instructions) != 1:
        raise ValueError(f"rollout_batch runs one task at a time; the backends' instructions differ: {instructions}")
    instruction = instructions.pop()
    results: list[EpisodeResult | None] = [None] * len(seeds)
    pending = iter(enumerate(seeds))
    running: dict[int, tuple[int, _Episode]] = {}  # backend slot -> (episode index, episode)
    free = list(range(len(backends)))

    def start(slot: int) -> None:
        for index, seed in pending:
            episode = _Episode(backends[slot], seed, options, n_action_steps, record=False)
            if not episode.done:
                running[slot] = (index, episode)
                return
            results[index] = episode.result()

    while True:
        if not running or any(episode.needs_chunk for _, episode in running.values()):
            for slot in free:
                start(slot)
            free = [slot for slot in free if slot not in running]
        if not running:
            break
        replan = [slot for slot, (_, episode) in running.items() if episode.needs_chunk]
        if replan:
            chunks = policy.predict_chunks([running[s][0] for s in replan], [running[s][1].obs for s in replan],
                                           instruction)
            for slot, chunk in zip(replan, chunks, strict=True):
                running[slot][1].plan(chunk)
        for slot in list(running):
            index, episode = running[slot]
            try:
                episode.step()
            except Exception as e:  # noqa: BLE001  (one crashed simulation must not end the others)
                episode.crash(e)
            if episode.done:
                results[index] = episode.result()
                del running[slot]
                free.append(slot)
    return results  # type: ignore[return-value]  (every index is filled once pending and running are empty)


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
