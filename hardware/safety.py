"""Safety layer in front of every motion command to a real arm (docs/platform.md §Safety limits).

Checks, with the limits of the X-Trainer's own software (constants shared with the simulator in
:mod:`envs.control`, :mod:`envs.xtrainer` and :mod:`envs.kinematics`, never copied):

- **Joint limits** of the Nova model (J1 ±360°, J2 ±180°, J3 ±160°, J4–J6 ±360°) and the
  **J3 sign rule** (left J3 < 0, right J3 > 0): a target outside them is refused
  (:class:`SafetyViolation`), nothing is sent.
- **Maximum joint step** per command (``MAX_JOINT_STEP_RAD`` = 0.9 rad): a larger move is
  **ramped** into several ServoJ commands, one per control period.
- **Tool-tip safety box** (``SAFETY_BOX``, each arm's base frame): a command whose tool point
  leaves the box, or moves farther outside it, is refused.
- **Downward tool speed** (> 1 m/s trips the X-Trainer): commanded moves are ramped so that the
  tool never descends faster than the limit; a *measured* descent faster than the limit (from the
  feedback joints) trips the watchdog.
- **Watchdog**: while motion is engaged, feedback older than 100 ms, commands that stop arriving
  for ``command_timeout_s``, or a measured downward speed above the limit stop the arm
  (``ResetRobot()``/``Stop()``) and latch :class:`SafetyStop` until :meth:`SafeArm.reset`.

All angles here are radians; the Dobot client speaks degrees.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from envs.control import MAX_JOINT_STEP_RAD, SAFETY_BOX
from envs.kinematics import ARM_SPECS, TOOL_OFFSET_M, ArmSpec, forward_kinematics
from envs.xtrainer import J3_SIGN
from hardware.dobot_client import DobotClient
from hardware.dobot_protocol import DobotError
from hardware.errors import HardwareError

MAX_DOWNWARD_SPEED_M_S = 1.0  # docs/platform.md §Safety limits: a downward tool speed above 1 m/s trips the X-Trainer
FEEDBACK_TIMEOUT_S = 0.1  # issue 8 (docs/platform.md §Safety limits): stop when feedback is older than 100 ms
COMMAND_TIMEOUT_S = 0.5  # stop when the policy has sent nothing for this long while engaged
MAX_RAMP_STEPS = 100_000


class SafetyError(HardwareError):
    """Base of the safety layer's exceptions."""


class SafetyViolation(SafetyError):
    """A command refused before anything was sent (limits, J3 sign, safety box, bad values)."""


class SafetyStop(SafetyError):
    """The arm was stopped (watchdog, error mode, stale feedback); latched until ``reset()``."""


@dataclass(frozen=True)
class ArmLimits:
    """One arm's limits, built from the simulator's constants by :meth:`for_arm`."""

    arm: str
    spec: ArmSpec
    joint_lo: np.ndarray  # rad
    joint_hi: np.ndarray
    j3_sign: float
    max_step_rad: float
    box_lo: np.ndarray  # m, arm base frame
    box_hi: np.ndarray
    max_down_speed_m_s: float = MAX_DOWNWARD_SPEED_M_S
    tool_m: float = TOOL_OFFSET_M

    @classmethod
    def for_arm(cls, arm: str, model: str = "nova2", max_step_rad: float = MAX_JOINT_STEP_RAD) -> ArmLimits:
        if arm not in J3_SIGN:
            raise ValueError(f"unknown arm {arm!r}; valid: {sorted(J3_SIGN)}")
        spec = ARM_SPECS[model]
        lim = np.deg2rad(np.array(spec.limits_deg, dtype=float))
        lo, hi = SAFETY_BOX[arm]
        return cls(arm, spec, lim[:, 0], lim[:, 1], J3_SIGN[arm], min(max_step_rad, MAX_JOINT_STEP_RAD),
                   lo.copy(), hi.copy())

    def tool_position(self, q: np.ndarray) -> np.ndarray:
        """Tool point in the arm's base frame (m)."""
        return forward_kinematics(q, self.spec, self.tool_m)[:3, 3]

    def box_distance(self, p: np.ndarray) -> float:
        """How far (m) a tool point lies outside the safety box (0 inside)."""
        return float(np.linalg.norm(p - np.clip(p, self.box_lo, self.box_hi)))


def check_joint_target(limits: ArmLimits, q: np.ndarray) -> np.ndarray:
    """Validate a 6-joint target (rad); returns it as an array or raises :class:`SafetyViolation`."""
    q = np.asarray(q, dtype=np.float64)
    arm = limits.arm
    if q.shape != (6,):
        raise SafetyViolation(f"{arm} arm: expected 6 joint values, got shape {q.shape}")
    if not np.all(np.isfinite(q)):
        raise SafetyViolation(f"{arm} arm: joint target contains NaN or inf: {q.tolist()}")
    for i in range(6):
        if not limits.joint_lo[i] <= q[i] <= limits.joint_hi[i]:
            raise SafetyViolation(f"{arm} arm: J{i + 1} = {math.degrees(q[i]):.2f} deg outside its limits "
                                  f"[{math.degrees(limits.joint_lo[i]):.0f}, {math.degrees(limits.joint_hi[i]):.0f}] deg")
    if limits.j3_sign * q[2] <= 0:
        rule = "J3 < 0" if limits.j3_sign < 0 else "J3 > 0"
        raise SafetyViolation(f"{arm} arm: J3 = {math.degrees(q[2]):.2f} deg breaks the X-Trainer sign rule ({rule})")
    return q


def ramp(q_from: np.ndarray, q_to: np.ndarray, max_step: float) -> list[np.ndarray]:
    """Evenly spaced joint targets from ``q_from`` (excluded) to ``q_to`` (included), each step <= ``max_step``."""
    delta = np.asarray(q_to, dtype=np.float64) - np.asarray(q_from, dtype=np.float64)
    n = max(1, math.ceil(float(np.max(np.abs(delta))) / max_step - 1e-12))
    return [q_from + delta * (k / n) for k in range(1, n + 1)]


def plan_motion(limits: ArmLimits, q_from: np.ndarray, q_to: np.ndarray, dt: float,
                max_step: float | None = None) -> list[np.ndarray]:
    """The ServoJ targets (one per ``dt``) that take the arm from ``q_from`` to ``q_to`` safely.

    The joint step per command is at most ``max_step`` (default the limits' 0.9 rad), the tool
    descends no faster than the downward speed limit, and every intermediate tool point stays in
    (or approaches) the safety box; otherwise :class:`SafetyViolation`.
    """
    q_to = check_joint_target(limits, q_to)
    q_from = np.asarray(q_from, dtype=np.float64)
    step = limits.max_step_rad if max_step is None else min(max_step, limits.max_step_rad)
    path = ramp(q_from, q_to, step)
    z_from = limits.tool_position(q_from)[2]
    for _ in range(20):  # subdivide until the descent per period respects the speed limit
        z = np.array([z_from] + [limits.tool_position(q)[2] for q in path])
        worst = float(np.max(-np.diff(z))) / dt
        if worst <= limits.max_down_speed_m_s or len(path) >= MAX_RAMP_STEPS:
            break
        n = min(MAX_RAMP_STEPS, math.ceil(len(path) * worst / limits.max_down_speed_m_s * 1.05))
        path = [q_from + (q_to - q_from) * (k / n) for k in range(1, n + 1)]
    dist = limits.box_distance(limits.tool_position(q_from))
    for k, q in enumerate(path):
        p = limits.tool_position(q)
        d = limits.box_distance(p)
        if d > 1e-9 and d > dist + 1e-9:
            where = "target" if k == len(path) - 1 else f"step {k + 1} of {len(path)} toward the target"
            raise SafetyViolation(f"{limits.arm} arm: tool point {np.round(p * 1000, 1).tolist()} mm (base frame) "
                                  f"at the {where} leaves the safety box "
                                  f"[{np.round(limits.box_lo * 1000).tolist()}, {np.round(limits.box_hi * 1000).tolist()}] mm")
        dist = d
    return path


class Watchdog:
    """A thread that calls ``on_trip(reason)`` once when ``check()`` returns a reason while engaged."""

    def __init__(self, check: Callable[[], str | None], on_trip: Callable[[str], None], period_s: float = 0.01):
        self._check, self._on_trip, self.period_s = check, on_trip, period_s
        self.engaged = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="safety-watchdog")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            if not self.engaged:
                continue
            reason = self._check()
            if reason is not None and self.engaged:
                self.engaged = False
                self._on_trip(reason)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)


class SafeArm:
    """One arm behind the safety layer: every motion command goes through :meth:`servo` or :meth:`move_to`."""

    def __init__(self, client: DobotClient, arm: str, *, model: str = "nova2", control_dt: float = 1 / 30,
                 feedback_timeout_s: float = FEEDBACK_TIMEOUT_S, command_timeout_s: float = COMMAND_TIMEOUT_S,
                 max_step_rad: float = MAX_JOINT_STEP_RAD, sleep: Callable[[float], None] = time.sleep):
        self.client, self.limits = client, ArmLimits.for_arm(arm, model, max_step_rad)
        self.control_dt, self.feedback_timeout_s, self.command_timeout_s = control_dt, feedback_timeout_s, command_timeout_s
        self._sleep = sleep
        self.q_cmd: np.ndarray | None = None  # last commanded joints (rad)
        self._last_command_s = time.monotonic()
        self._last_z: tuple[int, float] | None = None  # (controller timestamp ms, tool z m)
        self.tripped: str | None = None
        self.stop_error: Exception | None = None  # a failed stop request, if any
        self.stopped = threading.Event()  # set once the stop after a trip has been sent
        self._lock = threading.Lock()
        self.watchdog = Watchdog(self._watch, self._trip)

    @property
    def arm(self) -> str:
        return self.limits.arm

    # ------------------------------------------------------------------ state
    def joints(self) -> np.ndarray:
        """Measured joints (rad) from fresh feedback."""
        return self.client.feedback(self.feedback_timeout_s).q_actual_rad

    def _ready(self) -> np.ndarray:
        """Raise unless motion is allowed now; returns the measured joints (rad)."""
        if self.tripped:
            raise SafetyStop(f"{self.arm} arm stopped: {self.tripped}; call reset() after checking the robot")
        try:
            fb = self.client.feedback(self.feedback_timeout_s)
        except DobotError as e:
            self._trip(f"feedback unavailable ({e})")
            raise SafetyStop(f"{self.arm} arm stopped: {self.tripped}") from e
        if fb.in_error:
            self._trip(f"controller in error mode (RobotMode {fb.robot_mode}, ErrorStatus {fb.error_status})")
            raise SafetyStop(f"{self.arm} arm stopped: {self.tripped}")
        return fb.q_actual_rad

    def engage(self) -> None:
        """Start commanding from the measured joints, with the watchdog watching."""
        q = self._ready()
        self.q_cmd = q.copy()
        self._last_command_s = time.monotonic()
        self._last_z = None
        self.watchdog.engaged = True

    def idle(self) -> None:
        """Stop watching (the arm holds its last target); the next command re-engages."""
        self.watchdog.engaged = False
        self.q_cmd = None

    def reset(self) -> None:
        """Clear a latched stop (after a human has checked the robot)."""
        self.tripped = None
        self.stopped.clear()
        self.idle()

    # ------------------------------------------------------------------ motion
    def plan(self, q_target: np.ndarray, max_step: float | None = None) -> list[np.ndarray]:
        """Check that motion is allowed and plan the ServoJ targets to ``q_target`` (rad), one per
        control period (:func:`plan_motion`); :class:`SafetyViolation` or :class:`SafetyStop`."""
        if self.q_cmd is None or not self.watchdog.engaged:
            self.engage()
        else:
            self._ready()
        return plan_motion(self.limits, self.q_cmd, q_target, self.control_dt, max_step)

    def send(self, q: np.ndarray) -> None:
        """Send one planned target as ServoJ (use :meth:`plan` first: this only re-checks the state)."""
        self._ready()
        with self._lock:
            if self.tripped:
                raise SafetyStop(f"{self.arm} arm stopped: {self.tripped}")
            if np.max(np.abs(np.asarray(q) - self.q_cmd)) > self.limits.max_step_rad + 1e-9:
                raise SafetyViolation(f"{self.arm} arm: step of {np.max(np.abs(np.asarray(q) - self.q_cmd)):.3f} rad "
                                      f"exceeds {self.limits.max_step_rad} rad; plan the motion first")
            self.client.servo_j(np.rad2deg(q), t=self.control_dt)
            self.q_cmd = np.array(q, dtype=np.float64)
            self._last_command_s = time.monotonic()

    def servo(self, q_target: np.ndarray, max_step: float | None = None) -> int:
        """Send ``q_target`` (rad) as ServoJ, ramped over several control periods if needed.

        Returns the number of ServoJ commands sent; blocks ``dt`` between them. Raises
        :class:`SafetyViolation` (nothing sent) or :class:`SafetyStop`.
        """
        path = self.plan(q_target, max_step)
        t0 = time.monotonic()
        for k, q in enumerate(path):
            if k:
                self._sleep(max(0.0, t0 + k * self.control_dt - time.monotonic()))
            self.send(q)
        return len(path)

    def move_to(self, q_target: np.ndarray, speed_rad_s: float = 0.5, tol_rad: float = 2e-3,
                timeout_s: float = 30.0) -> None:
        """Drive to ``q_target`` at a joint speed (homing, rollback) and wait until it is reached."""
        self.servo(q_target, max_step=speed_rad_s * self.control_dt)
        deadline = time.monotonic() + timeout_s
        target = np.asarray(q_target, dtype=np.float64)
        while np.max(np.abs(self.joints() - target)) > tol_rad:
            if time.monotonic() > deadline:
                raise SafetyStop(f"{self.arm} arm did not reach its target within {timeout_s} s")
            self._ready()
            self._last_command_s = time.monotonic()  # waiting for the arm is not a silent policy
            self._sleep(0.01)

    def stop(self, reason: str = "stop requested") -> None:
        """Stop the arm now and latch the stop."""
        self._trip(reason)

    # ------------------------------------------------------------------ watchdog
    def _watch(self) -> str | None:
        age = self.client.feedback_reader.age_s() if self.client.feedback_reader else float("inf")
        if age > self.feedback_timeout_s:
            return f"feedback is {age * 1000:.0f} ms old (limit {self.feedback_timeout_s * 1000:.0f} ms)"
        idle = time.monotonic() - self._last_command_s
        if idle > self.command_timeout_s:
            return f"no command for {idle * 1000:.0f} ms (limit {self.command_timeout_s * 1000:.0f} ms)"
        fb = self.client.feedback_reader.latest
        if fb is not None:
            z = self.limits.tool_position(fb.q_actual_rad)[2]
            if self._last_z is not None and fb.timestamp_ms > self._last_z[0]:
                vz = (z - self._last_z[1]) / ((fb.timestamp_ms - self._last_z[0]) / 1000.0)
                if -vz > self.limits.max_down_speed_m_s:
                    return f"tool descending at {-vz:.2f} m/s (limit {self.limits.max_down_speed_m_s} m/s)"
            if self._last_z is None or fb.timestamp_ms > self._last_z[0]:
                self._last_z = (fb.timestamp_ms, z)
        return None

    def _trip(self, reason: str) -> None:
        with self._lock:
            first = self.tripped is None
            self.tripped = self.tripped or reason
            self.watchdog.engaged = False
        if first:
            try:
                self.client.stop()
            except DobotError as e:  # nothing more we can do from here; the reason is kept
                self.stop_error = e
            self.stopped.set()

    def close(self) -> None:
        self.watchdog.close()
