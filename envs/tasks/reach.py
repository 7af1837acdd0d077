"""Reach: the platform's smoke task. Each arm brings its tool point to a marker.

No objects, no contacts: it exercises control, observations, rollback and the rollout loop
quickly, and gives tests and the perf script a task with a trivial expert.
"""

from __future__ import annotations

from typing import Any

import mujoco
import numpy as np

from envs.geometry import ARMS, GRIP, POS, ROT6, arm_slice, matrix_to_r6
from envs.tasks.base import Task, check_split, register_expert, register_task
from envs.xtrainer import SceneFragment

_BOXES = {  # world-frame target boxes for the left arm; the right arm mirrors x
    "id": (np.array([-0.30, -0.30, 0.82]), np.array([-0.10, -0.05, 0.95])),
    "ood": (np.array([-0.40, -0.40, 0.80]), np.array([-0.02, 0.02, 1.00])),
}
TOLERANCE_M = 0.01


@register_task
class ReachTask(Task):
    name = "reach"
    title = "Reach"
    instruction = "move both grippers to the red markers"
    time_limit_s = 10.0
    success_hold_s = 0.2

    def scene(self) -> SceneFragment:
        bodies = "\n".join(
            f'<body name="{a}_target" mocap="true" pos="0 0 1">'
            f'<geom type="sphere" size="0.012" rgba="0.9 0.1 0.1 0.8" contype="0" conaffinity="0"/></body>'
            for a in ARMS)
        return SceneFragment(worldbody=bodies)

    def bind(self, model: mujoco.MjModel, control_dt: float) -> None:
        self._mocap = {a: model.body_mocapid[model.body(f"{a}_target").id] for a in ARMS}
        self._tool = {a: model.site(f"{a}/tool").id for a in ARMS}

    def sample_initial_state(self, rng: np.random.Generator, split: str) -> dict[str, float]:
        lo, hi = _BOXES[check_split(split)]
        init = {}
        for a in ARMS:
            p = rng.uniform(lo, hi)
            if a == "right":
                p[0] = -p[0]
            init.update({f"{a}_x": p[0], f"{a}_y": p[1], f"{a}_z": p[2]})
        return {k: float(v) for k, v in init.items()}

    def apply_initial_state(self, model, data, init) -> None:
        for a in ARMS:
            data.mocap_pos[self._mocap[a]] = [init[f"{a}_x"], init[f"{a}_y"], init[f"{a}_z"]]

    def target(self, data: mujoco.MjData, arm: str) -> np.ndarray:
        return data.mocap_pos[self._mocap[arm]].copy()

    def _errors(self, data) -> dict[str, float]:
        return {a: float(np.linalg.norm(data.site_xpos[self._tool[a]] - self.target(data, a))) for a in ARMS}

    stages = ("reaching", "holding")

    def stage(self, data, memo, view=None) -> str:
        return "holding" if self.is_success(data) else "reaching"

    def is_success(self, data, view=None) -> bool:
        return all(e < TOLERANCE_M for e in self._errors(data).values())

    def failures(self, data, memo, view=None) -> list[str]:
        return []

    def privileged_state(self, data, view=None) -> np.ndarray:
        return np.concatenate([self.target(data, a) for a in ARMS])


@register_expert("reach")
class ReachExpert:
    """Straight-line approach at a per-episode speed, tool pointing down, gripper open."""

    def __init__(self, task: ReachTask):
        self.task = task
        self.state: dict[str, Any] = {}

    def reset(self, env, rng: np.random.Generator) -> None:
        self.state = {"speed": float(rng.uniform(0.15, 0.3))}

    def act(self, env) -> np.ndarray:
        row = env.ee_pose()
        step = self.state["speed"] * env.control_dt
        for a in ARMS:
            s = arm_slice(a)
            pos = row[s][POS]
            delta = self.task.target(env.data, a) - pos
            dist = np.linalg.norm(delta)
            row[s][POS] = pos + delta * min(1.0, step / max(dist, 1e-9))
            row[s][ROT6] = matrix_to_r6(env.home_tool_rotation(a))
            row[s][GRIP] = 1.0
        return row

    def get_state(self) -> dict[str, Any]:
        return dict(self.state)

    def set_state(self, state: dict[str, Any]) -> None:
        self.state = dict(state)
