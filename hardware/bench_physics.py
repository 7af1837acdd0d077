"""The simulator's MuJoCo model of the X-Trainer, stepped in real time behind the emulators
(docs/platform.md §Protocol, §MuJoCo).

:class:`BenchPhysics` holds one model of the whole bench, both arms and both grippers, built by
:func:`envs.xtrainer.build_xml` exactly as the simulator builds it (no task scene unless one is
given). The emulated controllers and grippers write its actuators' ctrl and read its state:

- **Arms**: each arm's joint position servos (``<arm>/j1..j6``) take their ctrl from a function
  of time registered by that arm's controller emulator (:meth:`BenchPhysics.drive_arm`, the
  controller's servo interpolator). It is evaluated at the *end* of every physics step, as
  :meth:`envs.env.XTrainerEnv.act` writes the interpolated ServoJ target for each substep.
  Measured joints, velocities and the flange pose come from ``qpos``, ``qvel`` and the model's
  ``<arm>/flange`` body (the DH flange frame, by construction of the model).
- **Fingers**: both finger servos of a gripper get one opening target and one force limit
  (:meth:`BenchPhysics.set_fingers`); the opening and force read back are the mean of the two.

**Time**: the model steps at its timestep (1/510 s for the 30 Hz bench) against the monotonic
clock. There is no physics thread: whoever needs the state (an arm's 8 ms feedback tick, a
command, a gripper read) calls :meth:`BenchPhysics.sync` under :attr:`BenchPhysics.lock`, which
steps the model up to the present. Because every step's ctrl is the servo target *at that step's
time*, catching up several steps at once gives the same trajectory as stepping one by one; the
arms' feedback ticks keep the bursts to about four steps. One lock serialises the whole bench
(both arms' controllers share it), so each arm's server reads a consistent state of the model.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

import envs  # noqa: F401  (first: selects headless rendering before mujoco loads)

import mujoco
from envs.geometry import ARMS
from envs.xtrainer import FINGER_TRAVEL_M, BenchConfig, SceneFragment, build_xml, home_qpos

# A process that stalled (a debugger, a suspended job) or a bench nobody read for a while would
# otherwise replay all the missed time in one burst under the lock; beyond this lag the
# simulation skips ahead instead (counted in ``skipped_s``).
MAX_CATCH_UP_S = 0.5

# The real grippers are Feetech position servos run at a 30 % torque limit (docs/platform.md §Grippers): stiff until
# the force limit, then pressing with that force. The simulator's default finger servo is soft
# (envs.xtrainer.BenchConfig); the emulator stands in for the hardware, so it clamps.
FEETECH_FINGER_KP = 3000.0
FEETECH_FINGER_FORCE_N = 12.0


def emulator_bench(arm: str = "nova2") -> BenchConfig:
    """The bench the emulator steps: the simulator's, with the Feetech-like force-clamped fingers."""
    return BenchConfig(arm=arm, finger_kp=FEETECH_FINGER_KP, finger_force_n=FEETECH_FINGER_FORCE_N)


ServoTarget = Callable[[float], np.ndarray]  # monotonic time (s) -> six joint targets (rad)


class BenchPhysics:
    """Both arms and grippers of the X-Trainer in the simulator's MuJoCo model, stepped in real time."""

    def __init__(self, cfg: BenchConfig | None = None, scene: SceneFragment | None = None,
                 clock: Callable[[], float] = time.monotonic):
        cfg = cfg or emulator_bench()
        self.cfg, self.clock = cfg, clock
        self.model = mujoco.MjModel.from_xml_string(build_xml(cfg, scene))
        self.data = mujoco.MjData(self.model)
        self.dt = float(self.model.opt.timestep)
        self.lock = threading.RLock()
        m = self.model
        self._qadr = {a: np.array([m.joint(f"{a}/j{i + 1}").qposadr[0] for i in range(6)]) for a in ARMS}
        self._dofadr = {a: np.array([m.joint(f"{a}/j{i + 1}").dofadr[0] for i in range(6)]) for a in ARMS}
        self._act_arm = {a: np.array([m.actuator(f"{a}/j{i + 1}").id for i in range(6)]) for a in ARMS}
        self._finger_qadr = {a: np.array([m.joint(f"{a}/finger_{f}").qposadr[0] for f in "ab"]) for a in ARMS}
        self._finger_dofadr = {a: np.array([m.joint(f"{a}/finger_{f}").dofadr[0] for f in "ab"]) for a in ARMS}
        self._act_finger = {a: np.array([m.actuator(f"{a}/finger_{f}").id for f in "ab"]) for a in ARMS}
        self._base = {a: m.body(f"{a}/base").id for a in ARMS}
        self._flange = {a: m.body(f"{a}/flange").id for a in ARMS}
        self._servo: dict[str, ServoTarget] = {}
        for arm in ARMS:  # at rest at home, grippers open (as XTrainerEnv.reset)
            self.data.qpos[self._qadr[arm]] = self.data.ctrl[self._act_arm[arm]] = home_qpos(arm)
            self.data.qpos[self._finger_qadr[arm]] = self.data.ctrl[self._act_finger[arm]] = FINGER_TRAVEL_M
        mujoco.mj_forward(self.model, self.data)
        self._t0 = clock()  # monotonic time of step 0
        self._steps = 0
        self.skipped_s = 0.0

    @property
    def time(self) -> float:
        """Monotonic time (s) the model's current state belongs to."""
        return self._t0 + self._steps * self.dt

    def sync(self, now: float | None = None) -> float:
        """Step the model up to ``now`` (monotonic s; default: the clock); returns :attr:`time`."""
        with self.lock:
            now = self.clock() if now is None else now
            due = int(np.floor((now - self._t0) / self.dt)) - self._steps
            limit = int(MAX_CATCH_UP_S / self.dt)
            if due > limit:
                self._t0 += (due - limit) * self.dt
                self.skipped_s += (due - limit) * self.dt
                due = limit
            for _ in range(max(due, 0)):
                t = self._t0 + (self._steps + 1) * self.dt
                for arm, target in self._servo.items():
                    self.data.ctrl[self._act_arm[arm]] = target(t)
                mujoco.mj_step(self.model, self.data)
                self._steps += 1
            if due > 0:
                # mj_step leaves body poses from before its last integration; the next mj_step
                # recomputes them from qpos anyway, so this does not change the trajectory.
                mujoco.mj_kinematics(self.model, self.data)
            return self.time

    # ------------------------------------------------------------------ arms
    def drive_arm(self, arm: str, target: ServoTarget | None) -> None:
        """Let ``target(t)`` set the arm's servo ctrl at every step (None: hold the last ctrl)."""
        self._check_arm(arm)
        with self.lock:
            if target is not None and arm in self._servo:
                raise ValueError(f"the {arm} arm of this bench is already driven by another controller emulator")
            if target is None:
                self._servo.pop(arm, None)
            else:
                self._servo[arm] = target

    def place_arm(self, arm: str, q: np.ndarray) -> None:
        """Put the arm at rest at joints ``q`` (rad) with its servos holding there (a teleport)."""
        self._check_arm(arm)
        with self.lock:
            self.sync()
            self.data.qpos[self._qadr[arm]] = self.data.ctrl[self._act_arm[arm]] = q
            self.data.qvel[self._dofadr[arm]] = 0.0
            mujoco.mj_kinematics(self.model, self.data)

    def joints(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """Measured joints (rad) and joint velocities (rad/s) of the current state."""
        with self.lock:
            return self.data.qpos[self._qadr[arm]].copy(), self.data.qvel[self._dofadr[arm]].copy()

    def flange_pose(self, arm: str) -> np.ndarray:
        """4x4 pose of the arm's flange in its base frame (the DH chain's end, before the tool)."""
        with self.lock:
            b, f = self._base[arm], self._flange[arm]
            R_base = self.data.xmat[b].reshape(3, 3)
            T = np.eye(4)
            T[:3, :3] = R_base.T @ self.data.xmat[f].reshape(3, 3)
            T[:3, 3] = R_base.T @ (self.data.xpos[f] - self.data.xpos[b])
            return T

    # ------------------------------------------------------------------ fingers
    def set_fingers(self, arm: str, opening_m: float, force_limit_n: float) -> None:
        """Finger servo target (per finger, clipped to the travel) and force limit (0: unpowered)."""
        self._check_arm(arm)
        with self.lock:
            self.sync()
            self.data.ctrl[self._act_finger[arm]] = min(FINGER_TRAVEL_M, max(0.0, opening_m))
            self.model.actuator_forcerange[self._act_finger[arm]] = (-force_limit_n, force_limit_n)

    def place_fingers(self, arm: str, opening_m: float) -> None:
        """Put the fingers at rest at an opening (someone moved them by hand); the servo target follows."""
        self._check_arm(arm)
        with self.lock:
            self.sync()
            x = min(FINGER_TRAVEL_M, max(0.0, opening_m))
            self.data.qpos[self._finger_qadr[arm]] = self.data.ctrl[self._act_finger[arm]] = x
            self.data.qvel[self._finger_dofadr[arm]] = 0.0
            mujoco.mj_kinematics(self.model, self.data)

    def fingers(self, arm: str) -> tuple[float, float]:
        """Opening per finger (m) and the finger servos' force (N, > 0 opening) of the current state."""
        with self.lock:
            return (float(np.mean(self.data.qpos[self._finger_qadr[arm]])),
                    float(np.mean(self.data.actuator_force[self._act_finger[arm]])))

    def _check_arm(self, arm: str) -> None:
        if arm not in ARMS:
            raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")


def held_object(arm: str, width_m: float, cfg: BenchConfig | None = None) -> SceneFragment:
    """A fixed box ``width_m`` wide between an arm's fingers at the home pose: closing on it, the
    fingers stop at ``width_m / 2`` each and the servos press with their force limit."""
    probe = BenchPhysics(cfg)
    site = probe.model.site(f"{arm}/tool").id
    R = probe.data.site_xmat[site].reshape(3, 3)
    # Centred on the pads, 27 mm above the tool point along the tool axis (clear of the palm).
    pos = probe.data.site_xpos[site] - 0.027 * R[:, 2]
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, R.ravel())
    size = f"{width_m / 2:.6g} 0.008 0.012"
    # contype/conaffinity 1: touches the finger pads (object contact group), not the arm links.
    return SceneFragment(worldbody=(
        f'<geom name="held_object" type="box" size="{size}" pos="{" ".join(f"{v:.9g}" for v in pos)}" '
        f'quat="{" ".join(f"{v:.9g}" for v in quat)}" contype="1" conaffinity="1" rgba="0.9 0.6 0.1 1"/>'))
