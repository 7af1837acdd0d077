"""End-effector control of the two arms: safety boxes, IK with mink, joint-step limits (docs/platform.md
§Arms, §Safety limits, §IK).

The controller works on a robot-only copy of the bench model, so the IK problem never sees
task objects. It is deterministic: the same start joints and targets give the same solution,
which is what exact rollback relies on.
"""

from __future__ import annotations

from ctypes import c_int
from dataclasses import dataclass

import math

import daqp
import mink
import mujoco
import numpy as np

from envs.geometry import ARMS
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


# What a step without an IK solve reports (a reset; joint-space actions): no target, so nothing
# missed. It has the keys and types of a solve's report, so a step's info keeps one schema from
# reset on: gymnasium's vector envs batch info key by key and fail on a None where a dict was, and
# its env checker compares infos with ==, which a NaN would fail.
UNSOLVED = IKReport(pos_err_m=0.0, rot_err_rad=0.0, reachable=True, clamped_to_safety_box=False,
                    joint_step_clamped=False)


def ik_info(reports: dict[str, IKReport] | None) -> dict[str, dict]:
    """``info["ik"]``: each arm's report as a dict, :data:`UNSOLVED` where no IK ran."""
    return {arm: (UNSOLVED if reports is None else reports[arm]).as_dict() for arm in ARMS}


def clamp_to_safety_box(cfg: BenchConfig, arm: str, pos_world: np.ndarray,
                        base_pose: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, bool]:
    """Clamp a world-frame tool target into the arm's safety box; returns (position, clamped).
    ``base_pose``: ``cfg.base_pose(arm)`` if the caller has it already."""
    base_pos, base_R = cfg.base_pose(arm) if base_pose is None else base_pose
    local = base_R.T @ (pos_world - base_pos)
    lo, hi = SAFETY_BOX[arm]
    clamped_local = np.minimum(np.maximum(local, lo), hi)  # np.clip's values, without its wrappers
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
        self._tasks = [*self.frame_tasks.values(), self.posture]
        self._base = {arm: cfg.base_pose(arm) for arm in ARMS}  # for the safety boxes
        # ConfigurationLimit.compute_qp_inequalities inlined for hinge limits only (no ball joints):
        # its constant G, and h from the same differences in the same order.
        limit = self.limits[0]
        self._limit_G = (np.vstack([limit.projection_matrix, -limit.projection_matrix])
                         if len(self.limits) == 1 and limit.projection_matrix is not None
                         and len(limit._ball_qposadr) == 0 else None)
        self._dq_max, self._dq_min = np.empty(self.model.nv), np.empty(self.model.nv)
        self._blower = np.full(0 if self._limit_G is None else self._limit_G.shape[0], -1e30)

    def _ik_step(self, dt: float, damping: float) -> None:
        """One ``mink.solve_ik(..., solver="daqp", damping, limits)`` step integrated in place, the
        same arithmetic in the same order (bitwise the same joints), without building a
        ``qpsolvers.Problem`` and its solution objects on every iteration."""
        # mink.solve_ik first calls configuration.check_limits(safety_break=False), which only
        # logs (at debug level) joints outside their limits; nothing it computes reaches the QP.
        configuration = self.configuration
        nv = self.model.nv
        jacobians, errors, mu_total = [], [], 0.0
        H_dense = c_dense = None
        for task in self._tasks:  # mink.solve_ik._compute_qp_objective
            residual = task.compute_qp_residual(configuration)
            if residual is None:
                H_task, c_task = task.compute_qp_objective(configuration)
                H_dense = H_task if H_dense is None else H_dense + H_task
                c_dense = c_task if c_dense is None else c_dense + c_task
            else:
                jacobians.append(residual[0])
                errors.append(residual[1])
                mu_total += residual[2]
        W = np.vstack(jacobians)
        H = W.T @ W
        c = -(np.concatenate(errors) @ W)
        H.flat[:: nv + 1] += damping + mu_total
        if H_dense is not None:
            H += H_dense
            c += c_dense
        if self._limit_G is not None:
            limit, q = self.limits[0], configuration.data.qpos
            mujoco.mj_differentiatePos(self.model, self._dq_max, 1.0, q, limit.upper)
            mujoco.mj_differentiatePos(self.model, self._dq_min, 1.0, limit.lower, q)
            G, blower = self._limit_G, self._blower
            h = np.hstack([limit.gain * self._dq_max[limit.indices], limit.gain * self._dq_min[limit.indices]])
        else:
            G_list, h_list = [], []
            for limit in self.limits:  # mink.solve_ik._compute_qp_inequalities
                inequality = limit.compute_qp_inequalities(configuration, dt)
                if not inequality.inactive:
                    G_list.append(inequality.G)
                    h_list.append(inequality.h)
            G = np.vstack(G_list) if G_list else np.zeros((0, nv))
            h = np.hstack(h_list) if h_list else np.zeros(0)
            blower = np.full(h.shape[0], -1e30)
        # qpsolvers' daqp_solve_problem for inequalities only
        x, _, exitflag, _ = daqp.solve(H, c, G, h, blower, np.zeros(h.shape[0], dtype=c_int), primal_start=None)
        if exitflag <= 0:
            raise mink.NoSolutionFound("daqp")
        configuration.integrate_inplace(x / dt, dt)

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
            pos, clamped[arm] = clamp_to_safety_box(self.cfg, arm, pos, self._base[arm])
            goals[arm] = (pos, R)
            self.frame_tasks[arm].set_target(mink.SE3.from_rotation_and_translation(mink.SO3.from_matrix(R), pos))
        dt = 1.0 / self.cfg.control_hz
        errors: dict[str, tuple[float, float]] = {}
        for _ in range(self.max_iters):
            self._ik_step(dt, damping=1e-6)
            errors = {}
            for arm in ARMS:  # the second arm's errors are not needed when the first has not converged
                errors[arm] = p, r = self._errors(arm, *goals[arm])
                if not (p <= self.pos_tol and r <= self.rot_tol):
                    break
            else:
                break
        q_sol, reports = {}, {}
        for arm in ARMS:
            q_arm = self.configuration.q[self.qadr[arm]].copy()
            step = q_arm - q_start[arm]
            step_clamped = bool(np.any(np.abs(step) > self.max_step))
            q_sol[arm] = q_start[arm] + np.clip(step, -self.max_step, self.max_step)
            # Against the request, not the clamped goal; the last iteration's errors are these when the
            # goal is the request bit for bit (same rotation object, configuration unchanged since).
            if arm in errors and not clamped[arm] and np.array_equal(goals[arm][0], targets[arm][0]):
                pos_err, rot_err = errors[arm]
            else:
                pos_err, rot_err = self._errors(arm, *targets[arm])
            reports[arm] = IKReport(pos_err, rot_err,
                                    reachable=pos_err <= self.reach_tol and rot_err <= self.reach_tol_rad and not clamped[arm],
                                    clamped_to_safety_box=clamped[arm], joint_step_clamped=step_clamped)
        return q_sol, reports

    def _errors(self, arm: str, pos_target: np.ndarray, R_target: np.ndarray) -> tuple[float, float]:
        data = self.configuration.data
        sid = self.site_ids[arm]
        # float(np.linalg.norm(d)) and float(geodesic_angle(R, R_target)), bitwise, without their
        # wrappers: norm of a vector is sqrt(d.dot(d)), and clip then arccos of one cosine.
        d = data.site_xpos[sid] - pos_target
        c = ((data.site_xmat[sid].reshape(3, 3).T @ R_target).trace() - 1.0) / 2.0
        return math.sqrt(d.dot(d)), float(np.arccos(min(max(c, -1.0), 1.0)))
