"""A human at the real X-Trainer as the collection session's operator (paper §3.3; issue 8 item 6).

:class:`HumanOperator` implements :class:`flowpro.operator.Operator`, so
:func:`flowpro.collect.intervention_rollout` runs unchanged with :class:`hardware.backend.RealXTrainer`:

1. **Watching** (:meth:`~HumanOperator.watch`, after every policy step): ``+`` / ``-`` lengthen or
   shorten the rollback ``k_back`` (steps; default :attr:`HumanOperatorConfig.k_back`), ``s`` marks
   the task done, ``i`` intervenes: the policy stops at step ``t`` and the rollback index is
   ``t + 1 - k_back``. The frame recorded there (the observation before that step, every camera
   side by side) is saved as a PNG, so the operator sees how the scene looked.
2. **Rollback**: the session calls ``backend.restore``, which drives the arms back along the
   recorded joint path (the safety layer in front of every command, docs/platform.md §Safety limits).
3. **Scene restore** (:meth:`~HumanOperator.begin_correction`): the saved frame is shown when a
   display exists; the arms are paused (they hold their position, the command watchdog is off),
   and the operator puts the objects back as in the frame, aligns the leader arms with the
   follower and presses ``c`` (or Enter). A confirmation while the leader arms are farther than
   ``align_tol_rad`` from the follower is refused with the worst joint named.
4. **Correction** (:meth:`~HumanOperator.correction_action`): each step reads the teleoperator's
   joints (:mod:`hardware.teleop`) and turns them into the backend's action (the tool pose of
   those joints in end-effector mode, the joints themselves in joint mode) until ``h`` hands
   control back to the policy.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from envs.geometry import ARMS
from envs.rollout import StepRecord
from envs.xtrainer import CAMERAS
from flowpro.operator import Intervention
from hardware.errors import OperatorTimeout
from hardware.keys import KeySource
from hardware.teleop import JointTeleoperator


@dataclass
class HumanOperatorConfig:
    k_back: int = 30  # default rollback in control steps (1 s at 30 Hz)
    k_step: int = 5  # change per +/- key
    max_back: int = 150
    intervene_key: str = "i"
    more_key: str = "+"
    less_key: str = "-"
    confirm_keys: str = "c\n"
    handback_key: str = "h"
    success_key: str = "s"
    frames_dir: str = "rollback_frames"
    align_tol_rad: float = 0.15  # leader vs follower joints when the correction starts
    poll_s: float = 0.02
    confirm_timeout_s: float | None = None  # None: wait for the operator as long as it takes
    max_correction_steps: int | None = None
    show: bool = True  # show the rollback frame in a window when a display exists

    def __post_init__(self) -> None:
        if not 1 <= self.k_back <= self.max_back or self.k_step < 1:
            raise ValueError(f"need 1 <= k_back <= max_back and k_step >= 1, got k_back={self.k_back}, "
                             f"max_back={self.max_back}, k_step={self.k_step}")


class HumanOperator:
    """The :class:`flowpro.operator.Operator` for a human with keys and a teleoperator."""

    def __init__(self, teleop: JointTeleoperator, keys: KeySource, config: HumanOperatorConfig | None = None, *,
                 log: Callable[[str], None] | None = None):
        self.teleop, self.keys, self.config = teleop, keys, config or HumanOperatorConfig()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.k_back = self.config.k_back
        self.frames: list[Path] = []  # saved rollback frames, in order
        self.interventions = 0
        self._correction_steps = 0

    # ------------------------------------------------------------------ Operator protocol
    def reset(self, backend: Any, seed: int) -> None:
        self.k_back = self.config.k_back
        self.log(f"[operator] rollout {seed}: '{self.config.intervene_key}' intervene, "
                 f"'{self.config.more_key}'/'{self.config.less_key}' rollback ({self.k_back} steps), "
                 f"'{self.config.success_key}' task done")

    def watch(self, backend: Any, history: Sequence[StepRecord]) -> Intervention | None:
        c = self.config
        while (key := self.keys.poll()) is not None:
            if key == c.more_key or key == c.less_key:
                self.k_back = int(np.clip(self.k_back + (c.k_step if key == c.more_key else -c.k_step), 1, c.max_back))
                self.log(f"[operator] rollback: {self.k_back} steps ({self.k_back * backend.control_dt:.2f} s)")
            elif key == c.success_key:
                backend.mark_success()
            elif key == c.intervene_key:
                return self._intervene(history)
        return None

    def begin_correction(self, backend: Any, intervention: Intervention) -> None:
        c = self.config
        frame = self.frames[-1] if self.frames else None
        if frame is not None and c.show:
            _show(frame)
        pause = getattr(backend, "pause", None)
        if pause is not None:
            pause()  # the scene restore may take minutes: hold still without streaming
        self.log(f"[operator] the arms are back at step {intervention.rollback_index}. Restore the scene "
                 f"as in {frame or 'the rollback moment (no camera frame was recorded)'}, align the leader "
                 f"arms with the robot, then press '{c.confirm_keys[0]}'")
        deadline = None if c.confirm_timeout_s is None else time.monotonic() + c.confirm_timeout_s
        follower = np.asarray(backend.observe()["joint_pos"], dtype=np.float64)
        self.teleop.start(follower)
        while True:
            key = self._wait_key(c.confirm_keys, deadline)
            if key is None:
                raise OperatorTimeout(f"the operator did not confirm the scene restore within {c.confirm_timeout_s} s")
            misalignment = self._misalignment(follower)
            if misalignment is None:
                break
            self.log(f"[operator] not starting: {misalignment}; align the leader arms and confirm again")
        self._correction_steps = 0
        self.log(f"[operator] correcting: '{c.handback_key}' hands control back to the policy")

    def correction_action(self, backend: Any, info: dict[str, Any] | None) -> np.ndarray | None:
        c = self.config
        while (key := self.keys.poll()) is not None:
            if key == c.handback_key:
                self.log("[operator] handing back to the policy")
                return None
            if key == c.success_key:
                backend.mark_success()
        if c.max_correction_steps is not None and self._correction_steps >= c.max_correction_steps:
            return None
        self._correction_steps += 1
        return joints_to_action(backend, self.teleop.read_joints())

    # ------------------------------------------------------------------ helpers
    def _intervene(self, history: Sequence[StepRecord]) -> Intervention:
        t = len(history) - 1
        r = max(0, t + 1 - self.k_back)
        self.interventions += 1
        iv = Intervention(step=t, rollback_index=r, reason="human", stage="operator")
        path = save_frame(history[r].obs, Path(self.config.frames_dir) / f"rollback_{self.interventions:04d}_step{r:05d}.png")
        if path is not None:
            self.frames.append(path)
        self.log(f"[operator] intervention at step {t}: rolling back {iv.k_back} steps to step {r}"
                 + (f"; frame saved to {path}" if path else ""))
        return iv

    def _wait_key(self, keys: str, deadline: float | None) -> str | None:
        while deadline is None or time.monotonic() < deadline:
            key = self.keys.poll()
            if key is not None and key in keys:
                return key
            if key is None:
                time.sleep(self.config.poll_s)
        return None

    def _misalignment(self, follower: np.ndarray) -> str | None:
        """None when the teleoperator's joints are within ``align_tol_rad`` of the follower's."""
        leader = np.asarray(self.teleop.read_joints(), dtype=np.float64)
        worst = (0.0, "", 0)
        for i, arm in enumerate(ARMS):
            err = np.abs(leader[7 * i:7 * i + 6] - follower[7 * i:7 * i + 6])
            j = int(np.argmax(err))
            worst = max(worst, (float(err[j]), arm, j + 1))
        if worst[0] <= self.config.align_tol_rad:
            return None
        return (f"the {worst[1]} leader arm's J{worst[2]} is {worst[0]:.2f} rad from the robot "
                f"(tolerance {self.config.align_tol_rad} rad)")


def joints_to_action(backend: Any, row: np.ndarray) -> np.ndarray:
    """The backend's action for a 14-D joint row: the 20-dim tool pose of those joints (computed
    with the backend's own forward kinematics) in end-effector mode, the row in joint mode."""
    row = np.asarray(row, dtype=np.float64)
    if row.shape != (14,):
        raise ValueError(f"teleoperator joints must have shape (14,), got {row.shape}")
    if getattr(backend, "action_mode", "ee") == "joint":
        return row.copy()
    q = {arm: row[7 * i:7 * i + 6] for i, arm in enumerate(ARMS)}
    grip = {arm: float(np.clip(row[7 * i + 6], 0.0, 1.0)) for i, arm in enumerate(ARMS)}
    return backend.ee_pose(q, grip)


def save_frame(obs: dict[str, Any], path: Path) -> Path | None:
    """Save the observation's camera images side by side (in the X-Trainer's camera order) as a PNG;
    None when the observation holds no images."""
    pixels = obs.get("pixels") or {}
    images = [pixels[c] for c in CAMERAS if c in pixels] + [v for k, v in pixels.items() if k not in CAMERAS]
    if not images:
        return None
    import cv2

    h = max(img.shape[0] for img in images)
    padded = [np.pad(img, ((0, h - img.shape[0]), (0, 0), (0, 0))) for img in images]
    sheet = np.concatenate(padded, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.ascontiguousarray(sheet[..., ::-1])):
        raise OSError(f"could not write the rollback frame to {path}")
    return path


def _show(path: Path) -> None:
    """Show an image in a window when a display and a GUI-enabled OpenCV exist (else do nothing)."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return
    import cv2

    try:
        cv2.imshow("rollback frame", cv2.imread(str(path)))
        cv2.waitKey(1)
    except cv2.error:  # headless OpenCV build: the saved file is all there is
        pass
