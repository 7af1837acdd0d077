"""Intervention-and-rollback operators (paper §3.3; docs/method.md §Pipeline, round step 1).

An operator watches the current policy act, decides *whether* to intervene and *how far* to roll
back (``k_back``), then supplies the correction from the rollback state until it hands control
back. The collection session (:mod:`flowpro.collect`) owns the loop and the rollback itself
(``backend.restore``: exact in simulation, a drive back along the recorded joint path on the real
robot), so a simulated oracle and a human at the real X-Trainer are interchangeable.

Step indexing: ``history[i]`` is the i-th executed step (observation before, action, info after).
An intervention at step ``t`` with rollback index ``r`` rewinds to the state *before* step ``r``;
``tau^l = history[r : t + 1]`` holds ``k_back = t + 1 - r`` steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from envs.rollout import StepRecord


@dataclass(frozen=True)
class Intervention:
    step: int  # t: the last executed policy step
    rollback_index: int  # r: the robot returns to the state before step r
    reason: str  # the predicted failure kind, or "stall"
    stage: str  # the task stage at step t

    def __post_init__(self) -> None:
        if not 0 <= self.rollback_index <= self.step:
            raise ValueError(f"an intervention at step {self.step} must roll back to a step in [0, {self.step}], "
                             f"got {self.rollback_index} ({self.reason})")

    @property
    def k_back(self) -> int:
        return self.step + 1 - self.rollback_index


class Operator(Protocol):
    """What the collection session needs from whoever supervises the policy.

    A human implementation (``hardware/``) maps keys or pedals to :meth:`watch` and reads the
    correction from leader arms in :meth:`correction_action`; the oracle below does both from
    privileged simulator state.
    """

    def reset(self, backend: Any, seed: int) -> None:
        """A new rollout starts (``backend`` has just been reset)."""

    def watch(self, backend: Any, history: Sequence[StepRecord]) -> Intervention | None:
        """Called after every policy step; an :class:`Intervention` stops the policy."""

    def begin_correction(self, backend: Any, intervention: Intervention) -> None:
        """The backend now stands at the rollback state; the correction starts."""

    def correction_action(self, backend: Any, info: dict[str, Any] | None) -> np.ndarray | None:
        """The next correction action (``info`` of the previous correction step, None at the
        start), or None to hand control back to the policy."""


class OracleOperator:
    """Simulated operator: predicts failures with the task's privileged predicates and corrects
    with the task's scripted expert.

    - *Whether*: a failure predicate firing for ``persist_s`` (a slip, a bezel contact, a tilted
      entry: the expert itself shows these briefly and recovers), a terminal failure (a drop),
      or no stage progress for ``stall_s`` (hovering; the episode would time out).
    - *When the error began*: the first step of the trailing run of steps with a failure firing;
      for a stall, the step at which the last stage was reached.
    - *How far back*: to that onset minus a random margin of ``margin_steps`` (so ``k_back``
      varies between interventions), never more than ``max_back`` steps.
    - *Correction*: the expert from the restored state until the task is complete
      (``handback="completion"``, default) or until the stage of the intervention is passed
      (``handback="stage"``), after which the policy continues.
    """

    def __init__(self, task: Any, *, margin_steps: tuple[int, int] = (15, 45), max_back: int = 90,
                 stall_s: float = 8.0, persist_s: float = 1.0, handback: str = "completion", seed: int = 0):
        if handback not in ("completion", "stage"):
            raise ValueError(f"handback must be 'completion' or 'stage', got {handback!r}")
        lo, hi = margin_steps
        if not 0 <= lo <= hi or max_back < 1:
            raise ValueError(f"need 0 <= margin_steps[0] <= margin_steps[1] and max_back >= 1, got {margin_steps}, {max_back}")
        if not task.stages:
            raise ValueError(f"task {task.name!r} declares no stage order; the oracle needs it")
        self.task, self.margin, self.max_back, self.stall_s, self.handback = task, (lo, hi), max_back, stall_s, handback
        self.seed, self.persist_s = seed, persist_s
        self._expert = task.make_expert()

    def reset(self, backend: Any, seed: int) -> None:
        self.rng = np.random.default_rng([self.seed, seed])
        self._best_stage, self._progress_step = -1, 0
        self._handback_after = len(self.task.stages)

    def _stage_index(self, info: dict[str, Any]) -> int:
        return self.task.stages.index(info["stage"])

    def watch(self, backend: Any, history: Sequence[StepRecord]) -> Intervention | None:
        t = len(history) - 1
        info = history[t].info
        s = self._stage_index(info)
        if s > self._best_stage:
            self._best_stage, self._progress_step = s, t
        onset = t + 1
        while onset > 0 and history[onset - 1].info["failures"]:
            onset -= 1
        persisted = (t + 1 - onset) * backend.control_dt >= self.persist_s
        if info["failures"] and (persisted or any(k in self.task.terminal_failures for k in info["failures"])):
            reason = info["failures"][0]
        elif (t - self._progress_step) * backend.control_dt >= self.stall_s:
            onset, reason = self._progress_step, "stall"
        else:
            return None
        margin = int(self.rng.integers(self.margin[0], self.margin[1] + 1))
        rollback = min(t, max(0, onset - margin, t + 1 - self.max_back))
        return Intervention(step=t, rollback_index=rollback, reason=reason, stage=info["stage"])

    def begin_correction(self, backend: Any, intervention: Intervention) -> None:
        self._expert.reset(backend, self.rng)
        stage = self.task.stages.index(intervention.stage)
        self._handback_after = len(self.task.stages) if self.handback == "completion" else stage
        # Progress is measured afresh from the rollback state.
        self._best_stage, self._progress_step = -1, 0

    def correction_action(self, backend: Any, info: dict[str, Any] | None) -> np.ndarray | None:
        if info is not None:
            if info["is_success"] or self._stage_index(info) > self._handback_after:
                return None
        return self._expert.act(backend)
