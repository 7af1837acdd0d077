"""End-effector control of the two arms: safety boxes, IK with mink, joint-step limits (SPEC §8, §9).

The controller works on a robot-only copy of the bench model, so the IK problem never sees
task objects. It is deterministic: the same start joints and targets give the same solution,
which is what exact rollback relies on.
"""

from __future__ import annotations

from dataclasses import dataclass

import mink
import mujoco
import numpy as np

from envs.geometry import ARMS, geodesic_angle
from envs.xtrainer import BenchConfig, build_xml, home_qpos

# Tool-tip safety boxes of the X-Trainer software, in each arm's base frame (metres).
SAFETY_BOX = {
    "left": (np.array([-0.450, -0.750, 0.044]), np.array([0.290, -0.160, np.inf])),
    "right": (np.array([-0.290, -0.750, 0.042]), np.array([0.450, -0.160, np.inf])),
}
MAX_JOINT_STEP_RAD = 0.9  # the X-Trainer rejects larger joint jumps between two servo commands


@dataclass
class IKReport:
    """What the controller did with one arm's target (goes into the step's ``info``)."""

    pos_err_m: float
    rot_err_rad: float
    reachable: bool
    clamped_to_safety_box: bool
    joint_step_clamped: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def clamp_to_safety_box(cfg: BenchConfig, arm: str, pos_world: np.ndarray) -> tuple[np.ndarray, bool]:
    """Clamp a world-frame tool target into the arm's safety box; returns (position, clamped)."""
    base_pos, base_R = cfg.base_pose(arm)
    local = base_R.T @ (pos_world - base_pos)
    lo, hi = SAFETY_BOX[arm]
    clamped_local = np.clip(local, lo, hi)
    clamped = bool(np.any(np.abs(clamped_local - local) > 1e-12))
    return base_pos + base_R @ clamped_local, clamped


class IKController:
    """Differential IK on both arms at once; joint limits (incl. the J3 sign rule) as QP limits."""

    def __init__(self, cfg: BenchConfig, max_iters: int = 12, pos_tol_m: float = 5e-4,
                 rot_tol_rad: float = np.deg2rad(0.5), reach_tol_m: float = 2e-3,
                 reach_tol_rad: float = np.deg2rad(2.0), max_joint_speed_rad_s: float | None = None):
        self.cfg = cfg
        # Per-step joint change allowed: the X-Trainer's 0.9 rad rejection threshold, or tighter
        # when a joint speed limit is set (off by default; see the issue-4 note).
        self.max_step = MAX_JOINT_STEP_RAD if max_joint_speed_rad_s is None else min(
            MAX_JOINT_STEP_RAD, max_joint_speed_rad_s / cfg.control_hz)
        self.model = mujoco.MjModel.from_xml_string(build_xml(cfg))
        self.configuration = mink.Configuration(self.model)
        self.frame_tasks = {
            arm: mink.FrameTask(f"{arm}/tool", "site", position_cost=1.0, orientation_cost=0.3, lm_damping=1e-4)
            for arm in ARMS
        }
        self.posture = mink.PostureTask(self.model, cost=1e-4)
        self.limits = [mink.ConfigurationLimit(self.model, gain=0.95)]
        self.max_iters, self.pos_tol, self.rot_tol = max_iters, pos_tol_m, rot_tol_rad
        self.reach_tol, self.reach_tol_rad = reach_tol_m, reach_tol_rad
        self.qadr = {arm: np.array([self.model.joint(f"{arm}/j{i + 1}").qposadr[0] for i in range(6)]) for arm in ARMS}
        q0 = self.model.qpos0.copy()
        for arm in ARMS:
            q0[self.qadr[arm]] = home_qpos(arm)
        self.posture.set_target(q0)
        self.site_ids = {arm: self.model.site(f"{arm}/tool").id for arm in ARMS}

    def solve(self, q_start: dict[str, np.ndarray], targets: dict[str, tuple[np.ndarray, np.ndarray]]
              ) -> tuple[dict[str, np.ndarray], dict[str, IKReport]]:
        """Joint targets reaching ``targets[arm] = (pos_world, R_world)`` from ``q_start[arm]``.

        Unreachable targets do not raise: the best solution within limits is returned and the
        report says how far it is.
        """
        q = self.model.qpos0.copy()
        for arm in ARMS:
            q[self.qadr[arm]] = q_start[arm]
        self.configuration.update(q)
        clamped, goals = {}, {}
        for arm in ARMS:
            pos, R = targets[arm]
            pos, clamped[arm] = clamp_to_safety_box(self.cfg, arm, pos)
            goals[arm] = (pos, R)
            self.frame_tasks[arm].set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(R), pos))
        tasks = [*self.frame_tasks.values(), self.posture]
        dt = 1.0 / self.cfg.control_hz
        for _ in range(self.max_iters):
            vel = mink.solve_ik(self.configuration, tasks, dt, solver="daqp", damping=1e-6, limits=self.limits)
            self.configuration.integrate_inplace(vel, dt)
            errors = [self._errors(arm, *goals[arm]) for arm in ARMS]
            if all(p <= self.pos_tol and r <= self.rot_tol for p, r in errors):
                break
        q_sol, reports = {}, {}
        for arm in ARMS:
            q_arm = self.configuration.q[self.qadr[arm]].copy()
            step = q_arm - q_start[arm]
            step_clamped = bool(np.any(np.abs(step) > self.max_step))
            q_sol[arm] = q_start[arm] + np.clip(step, -self.max_step, self.max_step)
            pos_err, rot_err = self._errors(arm, *targets[arm])  # against the request, not the clamped goal
            reports[arm] = IKReport(pos_err, rot_err,
                                    reachable=pos_err <= self.reach_tol and rot_err <= self.reach_tol_rad and not clamped[arm],
                                    clamped_to_safety_box=clamped[arm], joint_step_clamped=step_clamped)
        return q_sol, reports

    def _errors(self, arm: str, pos_target: np.ndarray, R_target: np.ndarray) -> tuple[float, float]:
        data = self.configuration.data
        sid = self.site_ids[arm]
        pos_err = float(np.linalg.norm(data.site_xpos[sid] - pos_target))
        rot_err = float(geodesic_angle(data.site_xmat[sid].reshape(3, 3), R_target))
        return pos_err, rot_err
