"""Closed-loop scripted expert for the USB task.

Every call re-decides from privileged state (what is held, where the plug is relative to the
socket), so it can take over from any reachable state, e.g. one the policy was rolled back
to. Its only memory is the per-episode variation drawn at ``reset`` (speeds, grasp offsets,
holding pose), which keeps demonstrations naturally different from each other.

Taking over mid-task (the oracle's correction after a rollback), ``reset`` keeps what the scene
already commits to: a strip that is held and lifted keeps its holding pose, within the range a
fresh draw would allow. A fresh holding pose would make the expert carry the strip up to 3 cm
away and pull the plug back from the socket to wait for it; corrections recorded so contradicted
the demonstrations in the states they share (docs/oracle.md). Likewise an open gripper already
descending onto its object keeps descending: the strip's grasp point nearest the tool, and a
lateral error of up to ``TAKEOVER_XY`` corrected on the way down instead of by a retreat to the
approach height.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from envs.geometry import ARMS, GRIP, POS, ROT6, arm_slice, matrix_to_r6, rot_z
from envs.tasks.base import register_expert
from envs.tasks.usb import CUP_HEIGHT, SOCKET_DEPTH, STRIP_HALF, UsbTask
from envs.xtrainer import FINGER_TRAVEL_M

HOLD_STRIP = np.array([-0.02, -0.13, 0.88])  # nominal strip centre in the holding pose
HOLD_RANGE = 0.015  # m: the holding pose varies by up to this much per axis between episodes
MAX_ROT_SPEED = 2.0  # rad/s
FINE_SPEED = 0.02  # m/s, plug alignment near the socket
ALIGN_TOL = 0.00012  # lateral plug error allowed before descending into the socket
ABORT_TOL = 0.00025  # lateral error that stops a descent before the plug is inside
TAKEOVER_XY = 0.015  # m: a descent found by a take-over continues from up to this lateral error
STRIP_GRASP_X = (-0.055, -0.035)  # m: where along the strip the left fingers close


def make_T(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, p
    return T


def down_rotation(yaw: float) -> np.ndarray:
    """Tool pointing down (z = -world z), finger axis (tool x) at ``yaw`` in the table plane."""
    x = np.array([np.cos(yaw), np.sin(yaw), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.stack([x, np.cross(z, x), z], axis=1)


def yaw_of(R: np.ndarray) -> float:
    return float(np.arctan2(R[1, 0], R[0, 0]))


def nearest_yaw(desired: float, current: float, period: float) -> float:
    """``desired + k * period`` closest to ``current`` (symmetric grasps need no wrist spin)."""
    return desired + period * np.round((current - desired) / period)


def step_toward(T: np.ndarray, goal: np.ndarray, speed: float, dt: float) -> np.ndarray:
    """Move pose ``T`` toward ``goal`` by at most ``speed * dt`` and ``MAX_ROT_SPEED * dt``."""
    delta = goal[:3, 3] - T[:3, 3]
    dist = np.linalg.norm(delta)
    p = goal[:3, 3] if dist <= speed * dt else T[:3, 3] + delta * (speed * dt / dist)
    rv = Rotation.from_matrix(T[:3, :3].T @ goal[:3, :3]).as_rotvec()
    ang = np.linalg.norm(rv)
    if ang > MAX_ROT_SPEED * dt:
        rv *= MAX_ROT_SPEED * dt / ang
    return make_T(T[:3, :3] @ Rotation.from_rotvec(rv).as_matrix(), p)


@register_expert("usb")
class UsbExpert:
    def __init__(self, task: UsbTask):
        self.task = task
        self.state: dict[str, Any] = {}

    def reset(self, env, rng: np.random.Generator) -> None:
        self.state = {
            "speed": float(rng.uniform(0.12, 0.2)),
            "insert_speed": float(rng.uniform(0.006, 0.012)),
            "strip_grasp_x": float(rng.uniform(*STRIP_GRASP_X)),
            "lamp_grasp_z": float(rng.uniform(0.078, 0.09)),
            "approach_h": float(rng.uniform(0.05, 0.08)),
            "hold_offset": rng.uniform(-HOLD_RANGE, HOLD_RANGE, 3).tolist(),
        }
        t, d = self.task, env.data
        strip = t.object_pose(d, "strip")[:3, 3]
        if t.held(d, "left", "strip") and strip[2] >= t.strip_rest_z + 0.03:
            # Already carried: keep the nearest holding pose a fresh draw could give.
            self.state["hold_offset"] = np.clip(strip - HOLD_STRIP, -HOLD_RANGE, HOLD_RANGE).tolist()
        # An open gripper already descending onto its object: keep descending (an episode starts
        # with both tools far above the table, so demonstrations never take this branch).
        strip_T = t.object_pose(d, "strip")
        along = float((strip_T[:3, :3].T @ (t.tool_pose(d, "left")[:3, 3] - strip_T[:3, 3]))[0])
        if self._descending(env, "left", self._strip_grasp(strip_T, float(np.clip(along, *STRIP_GRASP_X)))):
            self.state["strip_grasp_x"] = float(np.clip(along, *STRIP_GRASP_X))
            self.state["descend_left"] = True
        if self._descending(env, "right", self._lamp_grasp(t.object_pose(d, "lamp"))):
            self.state["descend_right"] = True

    def _descending(self, env, arm: str, grasp_p: np.ndarray) -> bool:
        """Gripper open, tool within ``TAKEOVER_XY`` of the grasp point's column and below the
        approach height above it."""
        tool = self.task.tool_pose(env.data, arm)[:3, 3]
        return (not self._gripper(env, arm)[0] and np.linalg.norm(tool[:2] - grasp_p[:2]) < TAKEOVER_XY
                and grasp_p[2] < tool[2] < grasp_p[2] + self.state["approach_h"] + 0.005)

    def _strip_grasp(self, strip: np.ndarray, grasp_x: float) -> np.ndarray:
        return strip[:3, :3] @ np.array([grasp_x, 0.0, STRIP_HALF[2] - 0.010]) + strip[:3, 3]

    def _lamp_grasp(self, lamp: np.ndarray) -> np.ndarray:
        return lamp[:3, :3] @ np.array([0.0, 0.0, self.state["lamp_grasp_z"]]) + lamp[:3, 3]

    def get_state(self) -> dict[str, Any]:
        return dict(self.state)

    def set_state(self, state: dict[str, Any]) -> None:
        self.state = dict(state)

    # ------------------------------------------------------------------ helpers
    def _gripper(self, env, arm: str) -> tuple[bool, bool]:
        """(commanded closed, fingers settled)."""
        t, d = self.task, env.data
        closed = bool(np.mean(d.ctrl[t.finger_act[arm]]) < 0.5 * FINGER_TRAVEL_M)
        return closed, bool(np.all(np.abs(d.qvel[t.finger_dof[arm]]) < 0.005))

    def _grasp(self, env, arm: str, obj: str, grasp_T: np.ndarray) -> tuple[np.ndarray, float]:
        """Approach from above, descend, close; re-open after a miss."""
        t, d, dt = self.task, env.data, env.control_dt
        tool = t.tool_pose(d, arm)
        closed, settled = self._gripper(env, arm)
        if closed:
            self.state.pop(f"descend_{arm}", None)  # a take-over's descent ends at the first close
            if settled and not t.held(d, arm, obj):
                return tool, 1.0  # missed: open again, the approach re-plans
            return tool, 0.0
        pre = grasp_T.copy()
        pre[2, 3] += self.state["approach_h"]
        xy_err = np.linalg.norm(tool[:2, 3] - grasp_T[:2, 3])
        yaw_err = abs(yaw_of(tool[:3, :3]) - yaw_of(grasp_T[:3, :3]))
        above = tool[2, 3] > grasp_T[2, 3] + 0.02
        resumed = self.state.get(f"descend_{arm}", False) and xy_err < TAKEOVER_XY and yaw_err < np.deg2rad(10)
        if (xy_err > 0.004 or yaw_err > np.deg2rad(3)) and not resumed:
            if not above and xy_err > 0.01:  # leave the object's column vertically first
                up = tool.copy()
                up[2, 3] = pre[2, 3]
                return step_toward(tool, up, self.state["speed"], dt), 1.0
            return step_toward(tool, pre, self.state["speed"], dt), 1.0
        if t.gripper_opening(d, arm) < 0.03:
            return tool, 1.0  # wait until open
        if np.linalg.norm(tool[:3, 3] - grasp_T[:3, 3]) < 0.0025:
            return grasp_T, 0.0
        return step_toward(tool, grasp_T, 0.6 * self.state["speed"], dt), 1.0

    def _hold_pose(self) -> np.ndarray:
        return make_T(np.eye(3), HOLD_STRIP + np.asarray(self.state["hold_offset"]))

    def _left(self, env) -> tuple[np.ndarray, float]:
        t, d, dt = self.task, env.data, env.control_dt
        strip = t.object_pose(d, "strip")
        tool = t.tool_pose(d, "left")
        closed, settled = self._gripper(env, "left")
        if t.held(d, "left", "strip") and closed and settled:
            rel = np.linalg.inv(tool) @ strip
            if strip[2, 3] < t.strip_rest_z + 0.03:
                goal = tool.copy()
                goal[2, 3] += 0.06
            else:
                goal = self._hold_pose() @ np.linalg.inv(rel)
            return step_toward(tool, goal, self.state["speed"], dt), 0.0
        p = self._strip_grasp(strip, self.state["strip_grasp_x"])
        yaw = nearest_yaw(yaw_of(strip[:3, :3]) + np.pi / 2, yaw_of(tool[:3, :3]), np.pi)
        return self._grasp(env, "left", "strip", make_T(down_rotation(yaw), p))

    def _right(self, env) -> tuple[np.ndarray, float]:
        t, d, dt = self.task, env.data, env.control_dt
        lamp = t.object_pose(d, "lamp")
        tool = t.tool_pose(d, "right")
        closed, settled = self._gripper(env, "right")
        if not (t.held(d, "right", "lamp") and closed and settled):
            p = self._lamp_grasp(lamp)
            yaw = nearest_yaw(yaw_of(lamp[:3, :3]), yaw_of(tool[:3, :3]), np.pi / 2)
            return self._grasp(env, "right", "lamp", make_T(down_rotation(yaw), p))
        plug = t.plug_pose(d)
        rel = np.linalg.inv(tool) @ plug  # measured plug-in-hand pose
        speed = self.state["speed"]
        if lamp[2, 3] < t.table_z + CUP_HEIGHT + 0.02:  # straight up out of the holder
            goal = tool.copy()
            goal[2, 3] += 0.05
            return step_toward(tool, goal, 0.5 * speed, dt), 0.0
        socket = t.socket_pose(d)
        strip_ready = t.held(d, "left", "strip") and np.linalg.norm(
            t.object_pose(d, "strip")[:3, 3] - self._hold_pose()[:3, 3]) < 0.01
        if not strip_ready:  # wait above where the socket will be
            wait = self._hold_pose() @ make_T(np.eye(3), np.array([0.06, 0.0, STRIP_HALF[2] + 0.08]))
            goal = make_T(rot_z(nearest_yaw(0.0, yaw_of(plug[:3, :3]), np.pi)), wait[:3, 3]) @ np.linalg.inv(rel)
            return step_toward(tool, goal, speed, dt), 0.0
        # Align the plug with the socket (the plug is symmetric under a half turn), then insert.
        flip = nearest_yaw(0.0, yaw_of(socket[:3, :3].T @ plug[:3, :3]), np.pi)
        ps = t.plug_state(d)
        lateral = float(np.max(np.abs(ps.lateral)))
        aligned = lateral < ALIGN_TOL and ps.tilt < np.deg2rad(0.5)
        if np.linalg.norm(ps.lateral) > 0.003:  # not over the socket yet
            if ps.depth > -0.010:  # below the hover height: rise vertically first
                goal_plug = make_T(socket[:3, :3] @ rot_z(flip), plug[:3, 3] + socket[:3, 2] * (ps.depth + 0.015))
                return step_toward(tool, goal_plug @ np.linalg.inv(rel), speed, dt), 0.0
            target_depth, v = -0.015, speed
        elif ps.depth < -0.004:  # over the socket: come down to just above the mouth
            target_depth, v = -0.003, 0.5 * speed
        elif ps.depth < 0.0005 and not aligned:  # at the mouth: fine alignment, back off if far off
            target_depth, v = (-0.003 if lateral > ABORT_TOL else ps.depth), FINE_SPEED
        else:  # aligned or already inside: push in
            target_depth, v = min(ps.depth + 0.004, SOCKET_DEPTH + 0.0005), self.state["insert_speed"]
        goal_plug = socket @ make_T(rot_z(flip), np.array([0.0, 0.0, -target_depth]))
        return step_toward(tool, goal_plug @ np.linalg.inv(rel), v, dt), 0.0

    def act(self, env) -> np.ndarray:
        row = np.empty(20)
        for arm, (T, g) in zip(ARMS, (self._left(env), self._right(env))):
            s = arm_slice(arm)
            row[s][POS] = T[:3, 3]
            row[s][ROT6] = matrix_to_r6(T[:3, :3])
            row[s][GRIP] = g
        return row


