"""The X-Trainer under LeRobot's Robot / Teleoperator contracts (docs/platform.md §LeRobot; the rest
of docs/platform.md for the hardware).

- :class:`XTrainerRobot` (``--robot.type=xtrainer``) wraps :class:`hardware.backend.RealXTrainer`:
  observations are the 20-dim end-effector pose (``ee.<arm>_<x|y|z|r0..r5|gripper>``, the
  simulator's ``agent_pos``), the X-Trainer's 14 joints (``<arm>_<j1..j6|gripper>.pos``, rad,
  gripper 1 = open) and the cameras (``top``, ``left_wrist``, ``right_wrist``: HxWx3 at the
  policy's resolution, top and right wrist rotated by 180°); actions are 20-dim end-effector
  targets (the ``ee.*`` names) mapped to joints by the simulator's IK behind the safety layer.
  LeRobot's record loop packs the float features into ``observation.state`` in the order of
  :attr:`XTrainerRobot.observation_features`: the 20 pose values first, then the 14 joints.
- :class:`XTrainerLeader` (``--teleop.type=xtrainer_leader``) reads the leader arms through
  :class:`hardware.teleop.LeaderArms` (feedback streams only: read-only) and reports the tool pose
  of their joints under the same ``ee.*`` names, so ``lerobot-teleoperate`` can pass its actions
  straight to :class:`XTrainerRobot`.

Both configs register with LeRobot's config registries when this module is imported, and
``make_robot_from_config`` / ``make_teleoperator_from_config`` find the device classes through the
``hardware`` package. LeRobot's command-line tools import third-party devices only from installed
``lerobot_robot_*`` / ``lerobot_teleoperator_*`` distributions: the plugin package
:mod:`lerobot_robot_xtrainer` (this project's distribution name) imports this module, so after
``pip install -e .`` ``lerobot-record`` / ``lerobot-teleoperate`` / ``lerobot-replay`` take
``--robot.type=xtrainer`` and ``--teleop.type=xtrainer_leader`` (README, "The real robot").

A fault while observing stops both arms before it propagates, as one while acting does (issue 8):
LeRobot's loops only disconnect, which would leave the controllers holding their last target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from lerobot.robots.config import RobotConfig
from lerobot.robots.robot import Robot
from lerobot.teleoperators.config import TeleoperatorConfig
from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.utils.errors import DeviceAlreadyConnectedError, DeviceNotConnectedError

from envs.dataset import JOINT_NAMES, STATE_NAMES
from envs.geometry import ARMS
from envs.xtrainer import BenchConfig
from hardware import feetech as ft
from hardware.backend import RealXTrainer, tool_pose_row
from hardware.cameras import CameraRig, make_source
from hardware.dobot_client import DobotConfig
from hardware.holder import DEFAULT_MAX_HOLD_S
from hardware.teleop import LeaderArms

EE_FEATURES = [f"ee.{name}" for name in STATE_NAMES]  # 20: the action and the pose observation
JOINT_FEATURES = [f"{name}.pos" for name in JOINT_NAMES]  # 14


@dataclass
class XTrainerCameraConfig:
    """One camera: a device spec for :func:`hardware.cameras.make_source` (``"0"``, ``"/dev/video2"``,
    ``"realsense:<serial>"``, ``"synthetic"``) and its native stream."""

    device: str = "0"
    width: int = 640
    height: int = 480
    fps: int = 30


def _default_arm(arm: str) -> DobotConfig:
    return DobotConfig({"left": "127.0.0.1", "right": "127.0.0.2"}[arm])  # the emulator's defaults


def _grippers(ports: dict[str, str], calibration_file: str | None) -> tuple[dict[str, ft.Gripper], list[ft.SerialPort]]:
    """Feetech grippers on the given serial ports with their calibration (file, else the defaults)."""
    unknown = sorted(set(ports) - set(ARMS))
    if unknown:
        raise ValueError(f"gripper ports for unknown arm(s) {unknown}; the arms are {list(ARMS)}")
    calibration = ft.load_calibration(calibration_file) if calibration_file else ft.DEFAULT_CALIBRATION
    serial = {arm: ft.SerialPort(path) for arm, path in ports.items()}
    return {arm: ft.Gripper(ft.FeetechBus(p), calibration[arm]) for arm, p in serial.items()}, list(serial.values())


@RobotConfig.register_subclass("xtrainer")
@dataclass
class XTrainerRobotConfig(RobotConfig):
    left: DobotConfig = field(default_factory=lambda: _default_arm("left"))
    right: DobotConfig = field(default_factory=lambda: _default_arm("right"))
    gripper_ports: dict[str, str] = field(default_factory=dict)  # arm -> serial device of its Feetech servo
    gripper_calibration: str | None = None  # JSON file of hardware.feetech.save_calibration
    cameras: dict[str, XTrainerCameraConfig] = field(default_factory=dict)  # top / left_wrist / right_wrist
    image_height: int = 96  # the policy's resolution
    image_width: int = 96
    arm_model: str = "nova2"
    control_hz: float = 30.0
    task_description: str = ""
    max_hold_s: float = DEFAULT_MAX_HOLD_S


class XTrainerRobot(Robot):
    """The real X-Trainer (both Dobot arms, Feetech grippers, three cameras) as a LeRobot ``Robot``."""

    config_class = XTrainerRobotConfig
    name = "xtrainer"

    def __init__(self, config: XTrainerRobotConfig):
        super().__init__(config)
        self.config = config
        self.backend: RealXTrainer | None = None
        self.rig: CameraRig | None = None  # the open cameras, while connected
        self._ports: list[ft.SerialPort] = []

    @property
    def cameras(self) -> dict[str, XTrainerCameraConfig]:
        """The configured cameras by name (LeRobot's record and rollout size their image writers
        with ``len(robot.cameras)`` before connecting)."""
        return dict(self.config.cameras)

    @cached_property
    def observation_features(self) -> dict[str, Any]:
        size = (self.config.image_height, self.config.image_width, 3)
        return {**dict.fromkeys(EE_FEATURES, float), **dict.fromkeys(JOINT_FEATURES, float),
                **{cam: size for cam in self.config.cameras}}

    @cached_property
    def action_features(self) -> dict[str, type]:
        return dict.fromkeys(EE_FEATURES, float)

    @property
    def is_connected(self) -> bool:
        return self.backend is not None and self.backend.connected

    @property
    def is_calibrated(self) -> bool:
        return True  # joints are absolute; gripper calibration lives in its file (hardware.feetech)

    def calibrate(self) -> None:
        """Nothing to do: calibrate a gripper by hand with :func:`hardware.feetech.calibrate`."""

    def configure(self) -> None:
        """Nothing beyond :meth:`connect`, which runs the controllers' start-up sequence
        (docs/platform.md §Protocol)."""

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        c = self.config
        try:
            grippers, self._ports = _grippers(c.gripper_ports, c.gripper_calibration)
            if c.cameras:
                self.rig = CameraRig({cam: make_source(cc.device, cc.width, cc.height, cc.fps)
                                      for cam, cc in c.cameras.items()}, (c.image_height, c.image_width)).open()
            self.backend = RealXTrainer({"left": c.left, "right": c.right}, grippers,
                                        task_description=c.task_description, control_hz=c.control_hz,
                                        arm_model=c.arm_model, cameras=self.rig, max_hold_s=c.max_hold_s)
            self.backend.connect()
        except BaseException:
            self.disconnect()
            raise
        self.configure()

    def _require(self) -> RealXTrainer:
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected. Run `.connect()` first.")
        assert self.backend is not None
        return self.backend

    def get_observation(self) -> dict[str, Any]:
        backend = self._require()
        try:
            obs = backend.observe()
        except BaseException as e:  # stale feedback, a camera or gripper fault: stop, then report
            backend.emergency_stop(f"observation failed: {type(e).__name__}: {e}")
            raise
        out: dict[str, Any] = dict(zip(EE_FEATURES, map(float, obs["agent_pos"]), strict=True))
        out.update(zip(JOINT_FEATURES, map(float, obs["joint_pos"]), strict=True))
        out.update(obs.get("pixels", {}))
        return out

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        """Send 20-dim end-effector targets (IK + safety layer, no waiting: the caller keeps the
        rate); returns the pose actually commanded (after IK and the safety layer)."""
        backend = self._require()
        missing = [k for k in EE_FEATURES if k not in action]
        if missing:
            raise ValueError(f"action lacks {len(missing)} of the X-Trainer's {len(EE_FEATURES)} end-effector "
                             f"targets: {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        backend.command(np.array([float(action[k]) for k in EE_FEATURES]))
        return dict(zip(EE_FEATURES, map(float, backend.commanded_pose()), strict=True))

    def disconnect(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
        if self.rig is not None:
            self.rig.close()
            self.rig = None
        for port in self._ports:
            port.close()
        self._ports = []


@TeleoperatorConfig.register_subclass("xtrainer_leader")
@dataclass
class XTrainerLeaderConfig(TeleoperatorConfig):
    # The leader arms' controllers: only host and feedback_port are used (read-only).
    left: DobotConfig = field(default_factory=lambda: _default_arm("left"))
    right: DobotConfig = field(default_factory=lambda: _default_arm("right"))
    gripper_ports: dict[str, str] = field(default_factory=dict)  # leader grippers (read only), if any
    gripper_calibration: str | None = None
    arm_model: str = "nova2"
    max_feedback_age_s: float = 0.1


class XTrainerLeader(Teleoperator):
    """The X-Trainer's leader arms as a LeRobot ``Teleoperator``: actions are the 20-dim tool pose of
    the leader joints (the follower's ``ee.*`` action names)."""

    config_class = XTrainerLeaderConfig
    name = "xtrainer_leader"

    def __init__(self, config: XTrainerLeaderConfig):
        super().__init__(config)
        self.config = config
        self.bench = BenchConfig(arm=config.arm_model)
        self.leader: LeaderArms | None = None
        self._ports: list[ft.SerialPort] = []

    @cached_property
    def action_features(self) -> dict[str, type]:
        return dict.fromkeys(EE_FEATURES, float)

    @cached_property
    def feedback_features(self) -> dict[str, type]:
        return {}

    @property
    def is_connected(self) -> bool:
        return self.leader is not None and self.leader.is_connected

    @property
    def is_calibrated(self) -> bool:
        return True

    def calibrate(self) -> None:
        """Nothing to do: the leader joints are absolute."""

    def configure(self) -> None:
        """Nothing to configure: the leader arms are only read."""

    def connect(self, calibrate: bool = True) -> None:
        if self.is_connected:
            raise DeviceAlreadyConnectedError(f"{self} is already connected")
        c = self.config
        try:
            grippers, self._ports = _grippers(c.gripper_ports, c.gripper_calibration)
            self.leader = LeaderArms({"left": c.left, "right": c.right},
                                     {arm: g.opening for arm, g in grippers.items()},
                                     max_age_s=c.max_feedback_age_s).connect()
        except BaseException:
            self.disconnect()
            raise

    def joint_row(self) -> np.ndarray:
        """The leader's 14-D joints (the :class:`hardware.teleop.JointTeleoperator` reading)."""
        if not self.is_connected:
            raise DeviceNotConnectedError(f"{self} is not connected. Run `.connect()` first.")
        assert self.leader is not None
        return self.leader.read_joints()

    def get_action(self) -> dict[str, Any]:
        row = self.joint_row()
        q = {arm: row[7 * i:7 * i + 6] for i, arm in enumerate(ARMS)}
        grip = {arm: float(row[7 * i + 6]) for i, arm in enumerate(ARMS)}
        return dict(zip(EE_FEATURES, map(float, tool_pose_row(self.bench, q, grip)), strict=True))

    def send_feedback(self, feedback: dict[str, Any]) -> None:
        """The leader arms take no feedback (they are read-only)."""

    def disconnect(self) -> None:
        if self.leader is not None:
            self.leader.close()
            self.leader = None
        for port in self._ports:
            port.close()
        self._ports = []

