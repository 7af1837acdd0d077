"""The real X-Trainer as a :class:`envs.rollout.Backend` (``--backend real``; docs/platform.md, issue 8).

:class:`RealXTrainer` drives the two Dobot arms (through :mod:`hardware.safety`, never around it)
and the two Feetech grippers, and speaks the simulator's observation and action layout:

- **Actions**: 20-dim end-effector rows (``action_mode="ee"``, world frame of the simulated bench)
  are mapped to joints by the **same** :class:`envs.control.IKController` as in simulation, from the
  last commanded joints, exactly as :meth:`envs.env.XTrainerEnv.act` does; 14-dim joint rows
  (``action_mode="joint"``) go straight to the safety layer. Both arms' ServoJ streams are sent
  together, one command per control period (ramped when the safety layer asks for it).
- **Observations**: ``agent_pos`` (measured 20-dim tool pose from the feedback joints through the
  DH chain the MuJoCo model is built from), ``joint_pos`` in the X-Trainer's 14-D format, and
  ``pixels`` when a camera source is given.
- **Episodes**: ``reset`` drives both arms home and opens the grippers; success and failures are
  not observable on the real bench, so ``info["is_success"]`` is whatever an operator reported via
  :meth:`RealXTrainer.mark_success` / :meth:`RealXTrainer.mark_failure`.
- **Slow policies**: between steps a :class:`~hardware.holder.CommandHolder` re-sends the last safe
  target at the control rate, so the safety layer's 0.5 s command watchdog does not trip while a
  policy computes its next chunk; a policy silent for more than ``max_hold_s`` still trips it.
- **Faults**: any error while acting stops *both* arms before it propagates.
- **Rollback** (a :class:`envs.rollout.RollbackBackend`, issue 8 item 6): the measured
  14-D joints are recorded after ``reset`` and every step; :meth:`RealXTrainer.snapshot` is just an
  index into that joint path (cheap: the collection loop takes one per step) and
  :meth:`RealXTrainer.restore` drives both arms back along the recorded path to it, through the
  safety layer, and returns the observation there. The *scene* (objects) is restored by the
  human operator (:mod:`hardware.human_operator`); the robot cannot do that.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from envs.control import MAX_JOINT_STEP_RAD, IKController, ik_info
from envs.geometry import (
    ACTION_DIM,
    ARMS,
    GRIP,
    JOINT_DIM,
    POS,
    ROT6,
    arm_slice,
    matrix_to_r6,
    r6_to_matrix,
    validate_action,
)
from envs.kinematics import forward_kinematics
from envs.xtrainer import BenchConfig, home_qpos
from hardware.cameras import to_policy_image
from hardware.dobot_client import DobotClient, DobotConfig
from hardware.feetech import Gripper
from hardware.holder import DEFAULT_MAX_HOLD_S, CommandHolder
from hardware.safety import SafeArm, SafetyError


@dataclass(frozen=True)
class PathSnapshot:
    """Where the real bench stood before a step: an index into the episode's recorded joint path."""

    episode: int
    index: int  # into the recorded joint path (0: the state after reset)
    step: int  # control steps executed at that point
    joint_pos: np.ndarray  # the recorded 14-D joints there
    success_s: float | None  # operator marks at that point
    n_failures: int


class RealXTrainer:
    """Both arms and grippers of the real X-Trainer behind the backend interface."""

    def __init__(self, arms: Mapping[str, DobotConfig], grippers: Mapping[str, Gripper] | None = None, *,
                 task_description: str = "", time_limit_s: float = 60.0, control_hz: float = 30.0,
                 arm_model: str = "nova2", action_mode: str = "ee",
                 cameras: Callable[[], dict[str, np.ndarray]] | None = None,
                 home_speed_rad_s: float = 0.5, command_timeout_s: float = 0.5,
                 max_hold_s: float = DEFAULT_MAX_HOLD_S, rollback_speed_rad_s: float | None = None,
                 max_step_rad: float = MAX_JOINT_STEP_RAD):
        if set(arms) != set(ARMS):
            raise ValueError(f"need a DobotConfig for each arm {ARMS}, got {sorted(arms)}")
        if action_mode not in ("ee", "joint"):
            raise ValueError(f"unknown action_mode {action_mode!r}; valid: ee, joint")
        self.task_description, self.time_limit_s = task_description, time_limit_s
        self.control_dt = 1.0 / control_hz
        self.action_mode, self.cameras, self.home_speed = action_mode, cameras, home_speed_rad_s
        self.cfg = BenchConfig(arm=arm_model, control_hz=control_hz)
        self.ik = IKController(self.cfg)
        self.clients = {arm: DobotClient(arms[arm]) for arm in ARMS}
        self.grippers = dict(grippers or {})
        self.safe: dict[str, SafeArm] = {}
        self._command_timeout_s, self.max_hold_s = command_timeout_s, max_hold_s
        self._max_step_rad = max_step_rad  # the safety layer's joint step per command (it caps it at 0.9 rad)
        self.holder: CommandHolder | None = None
        self._grip = {arm: 1.0 for arm in ARMS}
        self._step = 0
        self._episode = 0
        self._path: list[np.ndarray] = []  # measured 14-D joints after reset and after every step
        self.rollback_speed = rollback_speed_rad_s or home_speed_rad_s
        self._deadline: float | None = None
        self._success_s: float | None = None
        self._failures: list[str] = []
        self.overruns = 0  # control periods that took longer than ``control_dt``
        self.connected = False

    # ------------------------------------------------------------------ connection
    def connect(self) -> RealXTrainer:
        """Connect, run the controllers' start-up sequence and start the grippers."""
        try:
            for arm in ARMS:
                self.clients[arm].connect()
                self.clients[arm].start_up()
                self.safe[arm] = SafeArm(self.clients[arm], arm, model=self.cfg.arm, control_dt=self.control_dt,
                                         command_timeout_s=self._command_timeout_s, max_step_rad=self._max_step_rad)
            for g in self.grippers.values():
                g.start()
            self.holder = CommandHolder(self._resend_held, self.control_dt, max_hold_s=self.max_hold_s,
                                        on_error=lambda e: self.emergency_stop(f"while holding: {type(e).__name__}: {e}"))
        except Exception:
            self.close()
            raise
        self.connected = True
        return self

    def close(self) -> None:
        if self.holder is not None:
            self.holder.close()
            self.holder = None
        for safe in self.safe.values():
            safe.idle()
            safe.close()
        for client in self.clients.values():
            client.close()
        self.safe.clear()
        self.connected = False

    def __enter__(self) -> RealXTrainer:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ safety
    def emergency_stop(self, reason: str = "emergency stop") -> None:
        """Stop both arms now (callable from any thread, e.g. a key handler); latched until reset."""
        for safe in self.safe.values():
            safe.stop(reason)

    def clear_stop(self) -> None:
        """Release a latched stop after a human has checked the bench."""
        for arm, safe in self.safe.items():
            self.clients[arm].recover()
            safe.reset()

    def pause(self) -> None:
        """Stop streaming: the arms hold their last target on the controllers and the command
        watchdog stands down (a human restoring the scene may take minutes). The next motion
        command re-engages from the measured joints."""
        lock = self.holder.lock if self.holder is not None else contextlib.nullcontext()
        with lock:
            for safe in self.safe.values():
                safe.idle()

    def mark_success(self) -> None:
        """The operator saw the task completed (the real bench has no success predicate)."""
        if self._success_s is None:
            self._success_s = self._step * self.control_dt

    def mark_failure(self, kind: str) -> None:
        self._failures.append(kind)

    # ------------------------------------------------------------------ backend API
    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Drive both arms home (or to ``options["joint_pos"]``, 14-D) and open the grippers."""
        target = (options or {}).get("joint_pos")
        q = self._split_joint_row(np.asarray(target, dtype=np.float64)) if target is not None else \
            ({arm: home_qpos(arm) for arm in ARMS}, {arm: 1.0 for arm in ARMS})
        self.drive_to(*q)
        self._step, self._deadline, self._success_s, self._failures = 0, None, None, []
        self._episode += 1
        obs = self.observe()
        self._path = [obs["joint_pos"].copy()]
        return obs, self._info(None)

    def act(self, action: np.ndarray) -> tuple[dict[str, Any], dict[str, Any]]:
        """One control step: :meth:`command`, then wait for the end of the control period and observe."""
        reports = self.command(action)
        self._wait_period()
        self._step += 1
        obs = self.observe()
        self._path.append(obs["joint_pos"].copy())
        return obs, self._info(reports)

    def command(self, action: np.ndarray) -> dict | None:
        """Send one action without waiting for the control period (a caller with its own clock, such
        as LeRobot's record loop): IK (ee mode), safety layer, ServoJ on both arms, grippers.
        Returns the IK reports (None in joint mode)."""
        action = self._validate(action)
        q_prev = {arm: self._commanded(arm) for arm in ARMS}
        reports = None
        if self.action_mode == "ee":
            targets = {}
            for arm in ARMS:
                row = action[arm_slice(arm)]
                targets[arm] = (row[POS], r6_to_matrix(row[ROT6]))
                self._grip[arm] = float(np.clip(row[GRIP], 0.0, 1.0))
            q_new, reports = self.ik.solve(q_prev, targets)
        else:
            q_new, grips = self._split_joint_row(action)
            self._grip.update(grips)
        self._guarded(lambda: self._servo_together(q_new))
        self._guarded(self._command_grippers)
        return reports

    def commanded_pose(self) -> np.ndarray:
        """The 20-dim tool pose of the last commanded joints and gripper targets (what was sent,
        after IK and the safety layer)."""
        return self.ee_pose({arm: self._commanded(arm) for arm in ARMS}, self._grip)

    @property
    def time_s(self) -> float:
        """Episode time: control steps executed times the control period (rolled back by ``restore``)."""
        return self._step * self.control_dt

    def snapshot(self) -> PathSnapshot:
        """The current point of the recorded joint path (no I/O)."""
        if not self._path:
            raise RuntimeError("no episode is running: call reset() before snapshot()")
        return PathSnapshot(self._episode, len(self._path) - 1, self._step, self._path[-1].copy(),
                            self._success_s, len(self._failures))

    def restore(self, snapshot: PathSnapshot, speed_rad_s: float | None = None) -> dict[str, Any]:
        """Drive both arms back along the recorded joint path to ``snapshot`` (through the safety
        layer, at ``speed_rad_s``, default ``rollback_speed_rad_s``) and return the observation there.

        Episode time and the operator's marks go back with it; the path after the snapshot is
        forgotten. The objects on the bench are *not* restored: a human does that.
        """
        if not isinstance(snapshot, PathSnapshot):
            raise TypeError(f"expected a PathSnapshot, got {type(snapshot).__name__}")
        if snapshot.episode != self._episode:
            raise ValueError(f"snapshot belongs to episode {snapshot.episode}, the bench runs episode "
                             f"{self._episode}; a rollback can only retrace the current episode's path")
        if not 0 <= snapshot.index < len(self._path):
            raise ValueError(f"snapshot index {snapshot.index} is not on the recorded path "
                             f"({len(self._path)} points; was it already rolled back past?)")
        self.drive_back(self._path[snapshot.index:], speed_rad_s=speed_rad_s or self.rollback_speed)
        del self._path[snapshot.index + 1:]
        self._step, self._success_s = snapshot.step, snapshot.success_s
        del self._failures[snapshot.n_failures:]
        self._deadline = None
        return self.observe()

    def observe(self) -> dict[str, Any]:
        q = {arm: self.safe[arm].joints() for arm in ARMS}
        grip = {arm: self._grip_opening(arm) for arm in ARMS}
        # No privileged state on the real bench: an empty environment_state keeps the recording
        # format of simulated episodes (flowpro.collect.pair_frames) unchanged.
        obs: dict[str, Any] = {"agent_pos": self.ee_pose(q, grip), "joint_pos": self._joint_row(q, grip),
                               "environment_state": np.zeros(0)}
        if self.cameras is not None:
            obs["pixels"] = self.cameras()
        return obs

    def render_camera(self, camera: str, size: tuple[int, int] | None = None) -> np.ndarray:
        """One camera's current image (as in ``observe()["pixels"]``), resized to ``size`` = (h, w)."""
        if self.cameras is None:
            raise RuntimeError("this RealXTrainer has no cameras (pass cameras=... , e.g. a hardware.cameras.CameraRig)")
        images = self.cameras()
        if camera not in images:
            raise ValueError(f"no camera {camera!r}; the cameras are {sorted(images)}")
        return to_policy_image(images[camera], rotate=False, size=size)

    # ------------------------------------------------------------------ motion helpers
    def drive_to(self, q: Mapping[str, np.ndarray], grip: Mapping[str, float] | None = None,
                 speed_rad_s: float | None = None, timeout_s: float = 30.0) -> None:
        """Drive both arms to joints ``q`` at a joint speed and wait (homing, rollback)."""
        for arm, x in (grip or {}).items():
            self._grip[arm] = float(np.clip(x, 0.0, 1.0))
        self._guarded(self._command_grippers)
        step = (speed_rad_s or self.home_speed) * self.control_dt
        self._guarded(lambda: self._servo_together(q, max_step=step))
        deadline = time.monotonic() + timeout_s
        while any(np.max(np.abs(self.safe[arm].joints() - q[arm])) > 2e-3 for arm in ARMS):
            if time.monotonic() > deadline:
                self.emergency_stop("target not reached")
                raise SafetyError(f"arms did not reach their target within {timeout_s} s")
            self._send_all({arm: safe.q_cmd for arm, safe in self.safe.items()})  # hold: feeds the watchdog
            time.sleep(self.control_dt)
        self._wait_grippers(min(timeout_s, 2.0))

    def _wait_grippers(self, timeout_s: float) -> None:
        """Wait until the grippers reach their openings (at most ``timeout_s``: fingers holding an
        object stop short, which is not an error)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(
                abs(g.opening() - self._grip[arm]) > 0.02 for arm, g in self.grippers.items()):
            self._send_all({arm: safe.q_cmd for arm, safe in self.safe.items()})
            time.sleep(self.control_dt)

    def drive_back(self, joint_path: list[np.ndarray], speed_rad_s: float | None = None,
                   timeout_s: float = 30.0) -> None:
        """Rollback on the real bench: retrace recorded 14-D ``joint_pos`` rows from the newest to
        the oldest at a joint speed, ending (and waiting) at ``joint_path[0]``."""
        if not joint_path:
            raise ValueError("joint_path is empty")
        rows = [self._split_joint_row(np.asarray(r, dtype=np.float64)) for r in joint_path]
        step = (speed_rad_s or self.home_speed) * self.control_dt
        for q, _ in reversed(rows[1:]):
            self._guarded(lambda q=q: self._servo_together(q, max_step=step))
        self.drive_to(*rows[0], speed_rad_s=speed_rad_s, timeout_s=timeout_s)

    def _servo_together(self, q: Mapping[str, np.ndarray], max_step: float | None = None) -> None:
        """Plan both arms (nothing is sent if either is refused), then send one target per arm per period."""
        paths = {arm: self.safe[arm].plan(q[arm], max_step) for arm in ARMS}
        n = max(len(p) for p in paths.values())
        t0 = time.monotonic()
        for k in range(n):
            if k:
                time.sleep(max(0.0, t0 + k * self.control_dt - time.monotonic()))
            self._send_all({arm: paths[arm][min(k, len(paths[arm]) - 1)] for arm in ARMS})

    def _send_all(self, q: Mapping[str, np.ndarray]) -> None:
        """One ServoJ per arm, atomically with respect to the command holder."""
        with self.holder.lock if self.holder is not None else contextlib.nullcontext():
            for arm in ARMS:
                self.safe[arm].send(q[arm])
            if self.holder is not None:
                self.holder.commanded()

    def _resend_held(self) -> bool:
        """The holder's re-send: the last safe target of each engaged arm (a zero-length step, so the
        arms stand still); False when no arm is engaged or one is stopped."""
        safes = list(self.safe.values())
        if not safes or any(s.tripped or s.q_cmd is None or not s.watchdog.engaged for s in safes):
            return False
        for s in safes:
            s.send(s.q_cmd)
        return True

    def _guarded(self, fn: Callable[[], None]) -> None:
        """Run a motion step; on any error stop both arms before re-raising (never an arm left moving)."""
        try:
            fn()
        except BaseException as e:
            self.emergency_stop(f"{type(e).__name__}: {e}")
            raise

    def _command_grippers(self) -> None:
        for arm, g in self.grippers.items():
            g.command(self._grip[arm])

    def _wait_period(self) -> None:
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now
        self._deadline += self.control_dt
        if self._deadline < now:
            self.overruns += 1
            self._deadline = now
        else:
            time.sleep(self._deadline - now)

    def _commanded(self, arm: str) -> np.ndarray:
        safe = self.safe[arm]
        return safe.q_cmd.copy() if safe.q_cmd is not None else safe.joints()

    # ------------------------------------------------------------------ layouts
    def _validate(self, action) -> np.ndarray:
        return validate_action(action, self.action_mode)

    @staticmethod
    def _split_joint_row(row: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        if row.shape != (JOINT_DIM,):
            raise ValueError(f"joint row must have shape ({JOINT_DIM},), got {row.shape}")
        return ({arm: row[7 * i:7 * i + 6].copy() for i, arm in enumerate(ARMS)},
                {arm: float(np.clip(row[7 * i + 6], 0.0, 1.0)) for i, arm in enumerate(ARMS)})

    @staticmethod
    def _joint_row(q: Mapping[str, np.ndarray], grip: Mapping[str, float]) -> np.ndarray:
        return np.concatenate([np.r_[q[arm], grip[arm]] for arm in ARMS])

    def _grip_opening(self, arm: str) -> float:
        g = self.grippers.get(arm)
        return float(np.clip(g.opening(), 0.0, 1.0)) if g is not None else self._grip[arm]

    def ee_pose(self, q: Mapping[str, np.ndarray], grip: Mapping[str, float]) -> np.ndarray:
        """20-dim world-frame tool pose of joints ``q`` (the simulator's ``agent_pos`` layout)."""
        return tool_pose_row(self.cfg, q, grip)

    def _info(self, ik) -> dict[str, Any]:
        return {
            "task": self.task_description,
            "is_success": self._success_s is not None,
            "failures": list(self._failures),
            "terminal_failure": self._failures[-1] if self._failures else None,
            "failures_seen": list(dict.fromkeys(self._failures)),
            "time_s": self.time_s,
            "ik": ik_info(ik),
            **({} if self._success_s is None else {"completion_time_s": self._success_s}),  # as envs.env
        }


def tool_pose_row(cfg: BenchConfig, q: Mapping[str, np.ndarray], grip: Mapping[str, float]) -> np.ndarray:
    """20-dim world-frame tool pose of both arms' joints ``q`` (rad) through the DH chain the MuJoCo
    model is built from (docs/platform.md §Arms), in the simulator's ``agent_pos`` layout."""
    row = np.empty(ACTION_DIM)
    for arm in ARMS:
        base_pos, base_R = cfg.base_pose(arm)
        T = forward_kinematics(q[arm], cfg.arm_spec)
        s = row[arm_slice(arm)]
        s[POS] = base_pos + base_R @ T[:3, 3]
        s[ROT6] = matrix_to_r6(base_R @ T[:3, :3])
        s[GRIP] = grip[arm]
    return row


def keyboard_emergency_stop(backend: RealXTrainer, key: str = " ",
                            read_key: Callable[[], str] | None = None) -> threading.Thread:
    """A daemon thread that calls :meth:`RealXTrainer.emergency_stop` when ``key`` is read
    (default: the space bar followed by Enter on stdin; pass ``read_key`` for a raw keyboard)."""
    import sys

    def run() -> None:
        reader = read_key or (lambda: sys.stdin.readline()[:1])
        while True:
            k = reader()
            if k == "":
                return
            if k == key:
                backend.emergency_stop("keyboard emergency stop")

    t = threading.Thread(target=run, daemon=True, name="keyboard-estop")
    t.start()
    return t
