"""Gymnasium environment of the simulated X-Trainer with exact rollback (docs/method.md §Action representation;
docs/platform.md §Exact rollback).

Observations follow the gym-aloha / LeRobot convention: ``pixels`` (one image per camera)
and ``agent_pos`` (the measured 20-dim end-effector pose, same layout as the action), plus
``joint_pos`` in the X-Trainer's 14-D format; ``obs_mode="state"`` drops the images and adds
``environment_state`` (privileged object poses; ``privileged_obs=True`` adds it to image
observations too, for recorders). The instruction is ``env.task_description``. ``task`` is a
name, a variant (``"usb:clearance_m=0.001"`` or a :class:`~envs.tasks.base.TaskSpec`) or a configured
task instance (:func:`envs.tasks.get_task`).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np

from envs.control import IKController, ik_info
from envs.geometry import (
    ACTION_DIM,
    ARM_DIM,
    ARMS,
    GRIP,
    JOINT_DIM,
    checked_action,
)
from envs.kinematics import forward_kinematics
from envs.tasks import get_task
from envs.tasks.base import Task, TaskSpec, check_split
from envs.xtrainer import CAMERAS, FINGER_TRAVEL_M, BenchConfig, build_xml, fingerprint, home_qpos

OBS_MODES = ("rgb", "state")
ACTION_MODES = ("ee", "joint")
_STATE_SPEC = mujoco.mjtState.mjSTATE_INTEGRATION
_R6_OF_XMAT = np.array([0, 3, 6, 1, 4, 7])  # a row-major 3x3 matrix's first two columns


@dataclass(frozen=True)
class Snapshot:
    """Everything needed to put the environment back exactly: physics and Python-side state."""

    model_fingerprint: str
    physics: np.ndarray
    python: bytes = field(repr=False)  # pickled: immutable, and cheaper than a deepcopy


class XTrainerEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, task: str | TaskSpec | Task = "reach", obs_mode: str = "rgb",
                 image_size: tuple[int, int] = (96, 96), action_mode: str = "ee", split: str = "id",
                 control_hz: float = 30.0, arm: str = "nova2", time_limit_s: float | None = None,
                 render_mode: str | None = "rgb_array",
                 privileged_obs: bool | None = None, max_joint_speed_rad_s: float | None = None):
        if obs_mode not in OBS_MODES:
            raise ValueError(f"unknown obs_mode {obs_mode!r}; valid: {', '.join(OBS_MODES)}")
        if action_mode not in ACTION_MODES:
            raise ValueError(f"unknown action_mode {action_mode!r}; valid: {', '.join(ACTION_MODES)}")
        self.task = get_task(task)
        self.split = check_split(split)
        self.obs_mode, self.action_mode, self.render_mode = obs_mode, action_mode, render_mode
        # Privileged object poses in the observation: always in state mode, on request with images
        # (recorders store them beside the images; vision policies do not read them).
        self.privileged_obs = obs_mode == "state" if privileged_obs is None else privileged_obs
        self.image_size = tuple(image_size)  # (height, width)
        h, w = self.image_size
        self.cfg = BenchConfig(arm=arm, control_hz=control_hz, max_render_size=(max(w, 640), max(h, 480)))
        self.xml = build_xml(self.cfg, self.task.scene())
        self.model = mujoco.MjModel.from_xml_string(self.xml)
        self.data = mujoco.MjData(self.model)
        self.fingerprint = fingerprint(self.xml)
        self.task.bind(self.model, 1.0 / control_hz)
        self.task_description = self.task.instruction
        self.time_limit_s = time_limit_s if time_limit_s is not None else self.task.time_limit_s
        self.control_dt = 1.0 / control_hz
        # Control steps the success predicate must hold (at least one).
        self._hold_steps = max(int(np.ceil(self.task.success_hold_s / self.control_dt - 1e-9)), 1)
        self.ik = IKController(self.cfg, max_joint_speed_rad_s=max_joint_speed_rad_s)

        m = self.model
        self._qadr = {a: np.array([m.joint(f"{a}/j{i + 1}").qposadr[0] for i in range(6)]) for a in ARMS}
        self._act_arm = {a: np.array([m.actuator(f"{a}/j{i + 1}").id for i in range(6)]) for a in ARMS}
        self._finger_qadr = {a: np.array([m.joint(f"{a}/finger_{f}").qposadr[0] for f in "ab"]) for a in ARMS}
        self._act_finger = {a: np.array([m.actuator(f"{a}/finger_{f}").id for f in "ab"]) for a in ARMS}
        self._act_arms = np.concatenate([self._act_arm[a] for a in ARMS])  # both arms' joint actuators
        self._tool = {a: m.site(f"{a}/tool").id for a in ARMS}
        self._jrange = {a: m.jnt_range[[m.joint(f"{a}/j{i + 1}").id for i in range(6)]].copy() for a in ARMS}
        # Camera field of view: ~69 deg horizontal on the configured aspect (MuJoCo's fovy is vertical).
        fovy = np.rad2deg(2 * np.arctan(np.tan(np.deg2rad(self.cfg.camera_hfov_deg) / 2) * h / w))
        self._camera_names = {"top": "top", "left_wrist": "left/wrist", "right_wrist": "right/wrist"}
        for cam in self._camera_names.values():
            m.cam_fovy[m.camera(cam).id] = fovy
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

        pose_low = np.tile(np.r_[-1.5, -1.5, 0.0, -np.ones(6), 0.0], 2).astype(np.float32)
        pose_high = np.tile(np.r_[1.5, 1.5, 2.5, np.ones(6), 1.0], 2).astype(np.float32)
        if action_mode == "ee":
            self.action_space = gym.spaces.Box(pose_low, pose_high, dtype=np.float32)
        else:
            jl = np.concatenate([np.r_[self._jrange[a][:, 0], 0.0] for a in ARMS])
            jh = np.concatenate([np.r_[self._jrange[a][:, 1], 1.0] for a in ARMS])
            self.action_space = gym.spaces.Box(jl.astype(np.float32), jh.astype(np.float32), dtype=np.float32)
        spaces: dict[str, gym.Space] = {
            "agent_pos": gym.spaces.Box(-np.inf, np.inf, (ACTION_DIM,), dtype=np.float64),
            "joint_pos": gym.spaces.Box(-np.inf, np.inf, (JOINT_DIM,), dtype=np.float64),
        }
        if obs_mode == "rgb":
            spaces["pixels"] = gym.spaces.Dict(
                {c: gym.spaces.Box(0, 255, (h, w, 3), dtype=np.uint8) for c in CAMERAS})
        if self.privileged_obs:
            n = self.task.privileged_state(self.data).shape[0]
            spaces["environment_state"] = gym.spaces.Box(-np.inf, np.inf, (n,), dtype=np.float64)
        self.observation_space = gym.spaces.Dict(spaces)
        self._py: dict[str, Any] = {}
        self._init_python_state(init={})

    # ------------------------------------------------------------------ state
    def _init_python_state(self, init: dict[str, float]) -> None:
        self._py = {
            "q_target": {a: home_qpos(a) for a in ARMS},
            "grip_target": {a: 1.0 for a in ARMS},
            "step": 0,
            "success_steps": 0,
            "first_success_s": None,
            "failures_now": [],
            "failures_seen": [],
            "memo": self.task.new_memo(),
            "init": dict(init),
            "rng": None,
        }

    @property
    def step_count(self) -> int:
        return self._py["step"]

    @property
    def time_s(self) -> float:
        return self._py["step"] * self.control_dt

    @property
    def initial_state(self) -> dict[str, float]:
        return dict(self._py["init"])

    @property
    def memo(self) -> dict[str, Any]:
        return self._py["memo"]

    def snapshot(self) -> Snapshot:
        """Capture the full integration state and all Python-side state (~2 KiB physics)."""
        physics = np.empty(mujoco.mj_stateSize(self.model, _STATE_SPEC))
        mujoco.mj_getState(self.model, self.data, physics, _STATE_SPEC)
        self._py["rng"] = self.np_random.bit_generator.state  # a fresh dict on every access
        return Snapshot(self.fingerprint, physics, pickle.dumps(self._py, protocol=pickle.HIGHEST_PROTOCOL))

    def restore(self, snap: Snapshot, observe: bool = True) -> dict[str, Any] | None:
        """Put the environment back to ``snap``; returns the observation there (None if not ``observe``)."""
        if not isinstance(snap, Snapshot):
            raise TypeError(f"expected a Snapshot, got {type(snap).__name__}")
        if snap.model_fingerprint != self.fingerprint:
            raise ValueError(f"snapshot belongs to model {snap.model_fingerprint}, this environment runs "
                             f"model {self.fingerprint} ({self.task.name}); refusing to restore")
        mujoco.mj_setState(self.model, self.data, snap.physics, _STATE_SPEC)
        mujoco.mj_forward(self.model, self.data)
        self._py = pickle.loads(snap.python)
        if self._py["rng"] is not None:
            self.np_random.bit_generator.state = self._py["rng"]
        return self.observe() if observe else None

    # ------------------------------------------------------------------ gym API
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        options = options or {}
        split = check_split(options.get("split", self.split))
        mujoco.mj_resetData(self.model, self.data)
        for a in ARMS:
            self.data.qpos[self._qadr[a]] = home_qpos(a)
            self.data.qpos[self._finger_qadr[a]] = FINGER_TRAVEL_M
        init = options.get("initial_state") or self.task.sample_initial_state(self.np_random, split)
        self.task.apply_initial_state(self.model, self.data, init)
        self._init_python_state(init)
        self._write_ctrl(self._py["q_target"], self._py["q_target"], 1.0)
        mujoco.mj_forward(self.model, self.data)
        view = self.task.view(self.data)
        return self._observe(view), self._info(ik=None, view=view)

    def step(self, action):
        obs, info = self.act(action)
        terminated = info["is_success"] or info["terminal_failure"] is not None
        truncated = (not terminated) and self.time_s >= self.time_limit_s - 1e-9
        return obs, float(info["is_success"]), terminated, truncated, info

    def act(self, action) -> tuple[dict[str, Any], dict[str, Any]]:
        """Execute one control step; validates before touching the simulation."""
        action, rotations = self._validate(action)
        q_prev = {a: self._py["q_target"][a].copy() for a in ARMS}
        reports = None
        if self.action_mode == "ee":
            targets = {}
            for i, a in enumerate(ARMS):
                targets[a] = (action[i * ARM_DIM: i * ARM_DIM + 3], rotations[a])
                self._py["grip_target"][a] = float(np.clip(action[i * ARM_DIM + GRIP], 0.0, 1.0))
            q_new, reports = self.ik.solve(q_prev, targets)
        else:
            q_new = {}
            for i, a in enumerate(ARMS):
                seg = action[7 * i: 7 * i + 7]
                q_new[a] = np.clip(seg[:6], self._jrange[a][:, 0], self._jrange[a][:, 1])
                self._py["grip_target"][a] = float(np.clip(seg[6], 0.0, 1.0))
        self._py["q_target"] = q_new
        ctrl, step, model, data = self.data.ctrl, mujoco.mj_step, self.model, self.data
        for row in self._servo_ctrls(q_prev, q_new):
            ctrl[:] = row
            step(model, data)
        # mj_step leaves positions, contacts and sensors computed *before* its last integration;
        # recompute them so an observation (and the task predicates) describe the current state,
        # exactly as after restore(). The solver's warm start is put back, so the trajectory is
        # exactly the one mj_step alone would produce.
        warmstart = self.data.qacc_warmstart.copy()
        mujoco.mj_forward(self.model, self.data)
        self.data.qacc_warmstart[:] = warmstart
        self._py["step"] += 1
        # The task's predicates read one view of this state (its contact scans), taken here once.
        view = self.task.view(self.data)
        self._update_task_status(view)
        return self._observe(view), self._info(ik=reports, view=view)

    def _validate(self, action) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
        """The checked action and, in ``"ee"`` mode, its target rotations."""
        return checked_action(action, self.action_mode)

    def _servo_ctrls(self, q_from: dict, q_to: dict) -> np.ndarray:
        """The control vector of every physics substep of one control step, ``(substeps, nu)``:
        ServoJ-like, the joint target moves linearly over the control period (substep ``k`` at
        ``alpha = (k + 1) / n``), the finger targets are the step's gripper commands. The same
        values, bit for bit, as :meth:`_write_ctrl` at each ``alpha``, computed at once."""
        n = self.cfg.substeps
        alpha = np.array([(k + 1) / n for k in range(n)])[:, None]
        rows = np.repeat(self.data.ctrl[None], n, axis=0)
        for a in ARMS:
            rows[:, self._act_finger[a]] = self._py["grip_target"][a] * FINGER_TRAVEL_M
        lo = np.concatenate([q_from[a] for a in ARMS])
        hi = np.concatenate([q_to[a] for a in ARMS])
        rows[:, self._act_arms] = (1 - alpha) * lo + alpha * hi
        return rows

    def _write_ctrl(self, q_from: dict, q_to: dict, alpha: float) -> None:
        for a in ARMS:
            self.data.ctrl[self._act_arm[a]] = (1 - alpha) * q_from[a] + alpha * q_to[a]
            self.data.ctrl[self._act_finger[a]] = self._py["grip_target"][a] * FINGER_TRAVEL_M

    def _update_task_status(self, view: Any) -> None:
        py = self._py
        if self.task.is_success(self.data, view):
            py["success_steps"] += 1
        else:
            py["success_steps"] = 0
        if py["success_steps"] >= self._hold_steps and py["first_success_s"] is None:
            # Completion time = when the success predicate first began to hold.
            py["first_success_s"] = (py["step"] - py["success_steps"] + 1) * self.control_dt
        py["failures_now"] = self.task.failures(self.data, py["memo"], view)
        py["failures_seen"] += [k for k in py["failures_now"] if k not in py["failures_seen"]]

    def _info(self, ik, view: Any) -> dict[str, Any]:
        py = self._py
        return {
            "task": self.task_description,
            "stage": self.task.stage(self.data, py["memo"], view),
            "is_success": py["first_success_s"] is not None,
            "failures": list(py["failures_now"]),
            "terminal_failure": next((k for k in py["failures_now"] if k in self.task.terminal_failures), None),
            "failures_seen": list(py["failures_seen"]),
            "time_s": self.time_s,
            "ik": ik_info(ik),
            # once the task has succeeded: a key that is there or not, never None, so its type is
            # one (gymnasium's vector envs mask the envs without it; envs.rollout reads it on success)
            **({} if py["first_success_s"] is None else {"completion_time_s": py["first_success_s"]}),
        }

    # ------------------------------------------------------------------ observations
    def ee_pose(self) -> np.ndarray:
        """Measured 20-dim pose: tool sites in the world frame and gripper opening (1 = open)."""
        return self._ee_pose(self._grips())

    def _grips(self) -> list[float]:
        """Each arm's measured gripper opening (1 = open)."""
        return [float(np.mean(self.data.qpos[self._finger_qadr[a]])) / FINGER_TRAVEL_M for a in ARMS]

    def _ee_pose(self, grips: list[float]) -> np.ndarray:
        row = np.empty(ACTION_DIM)
        d = self.data
        for i, a in enumerate(ARMS):
            sid, o = self._tool[a], i * ARM_DIM
            row[o: o + 3] = d.site_xpos[sid]
            row[o + 3: o + 9] = d.site_xmat[sid][_R6_OF_XMAT]  # matrix_to_r6: R[:, 0], R[:, 1]
            row[o + GRIP] = grips[i]
        return row

    def home_tool_rotation(self, arm: str) -> np.ndarray:
        """World-frame tool rotation at the home pose (tool pointing down)."""
        _, base_R = self.cfg.base_pose(arm)
        return base_R @ forward_kinematics(home_qpos(arm), self.cfg.arm_spec)[:3, :3]

    def joint_pos(self) -> np.ndarray:
        return self._joint_pos(self._grips())

    def _joint_pos(self, grips: list[float]) -> np.ndarray:
        out = np.empty(JOINT_DIM)
        for i, a in enumerate(ARMS):
            out[7 * i: 7 * i + 6] = self.data.qpos[self._qadr[a]]
            out[7 * i + 6] = grips[i]
        return out

    def observe(self) -> dict[str, Any]:
        return self._observe(None)

    def _observe(self, view: Any) -> dict[str, Any]:
        """The observation; ``view``: the task's view of this state, if at hand (None: it reads ``data``)."""
        grips = self._grips()
        obs: dict[str, Any] = {"agent_pos": self._ee_pose(grips), "joint_pos": self._joint_pos(grips)}
        if self.obs_mode == "rgb":
            obs["pixels"] = {c: self.render_camera(c) for c in CAMERAS}
        if self.privileged_obs:
            obs["environment_state"] = self.task.privileged_state(self.data, view)
        return obs

    def render_camera(self, camera: str, size: tuple[int, int] | None = None) -> np.ndarray:
        size = tuple(size or self.image_size)
        renderer = self._renderers.get(size)
        if renderer is None:
            try:
                renderer = self._renderers[size] = mujoco.Renderer(self.model, *size)
            except mujoco.FatalError as e:
                raise RuntimeError(
                    "no OpenGL context for off-screen rendering: import `envs` before `mujoco`, or set "
                    "MUJOCO_GL=egl (or osmesa) in the environment; obs_mode='state' needs no rendering") from e
            # docs/platform.md §Rendering: shadows off for speed
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
            renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        renderer.update_scene(self.data, camera=self._camera_names[camera])
        return renderer.render()

    def render(self):
        return self.render_camera("top", (240, 320))

    def close(self):
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()
