"""XTrainerRobot / XTrainerLeader under LeRobot's Robot / Teleoperator contracts, against the emulators."""

import time
from dataclasses import dataclass

import draccus
import numpy as np
import pytest
from lerobot.robots.config import RobotConfig
from lerobot.robots.robot import Robot
from lerobot.robots.utils import make_robot_from_config
from lerobot.teleoperators.teleoperator import Teleoperator
from lerobot.teleoperators.utils import make_teleoperator_from_config
from lerobot.utils.errors import DeviceNotConnectedError

from envs.geometry import ARMS
from envs.xtrainer import home_qpos
from hardware.dobot_client import DobotConfig
from hardware.emulator import ArmEmulator, XTrainerEmulator
from hardware.emulator_process import EmulatorProcess
from hardware.lerobot_robot import (
    EE_FEATURES,
    JOINT_FEATURES,
    XTrainerCameraConfig,
    XTrainerLeader,
    XTrainerLeaderConfig,
    XTrainerRobot,
    XTrainerRobotConfig,
)


def _bench(grippers: bool = False) -> XTrainerEmulator:
    return EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0,
                           grippers=grippers).start()


def _dobot(e: ArmEmulator) -> DobotConfig:
    return DobotConfig(e.host, "V3", e.ports["dashboard"], e.ports["motion"], e.ports["feedback"], timeout_s=1.0)


@pytest.fixture
def follower(tmp_path):
    bench = _bench(grippers=True)
    emus, servos = bench.arms, bench.grippers
    for s in servos.values():
        s.move_by_hand(2400)  # fingers left partly closed
    config = XTrainerRobotConfig(left=_dobot(emus["left"]), right=_dobot(emus["right"]), calibration_dir=tmp_path,
                                 gripper_ports={arm: s.path for arm, s in servos.items()}, image_height=24,
                                 image_width=32, cameras={c: XTrainerCameraConfig("synthetic", 64, 48, 100)
                                                          for c in ("top", "left_wrist", "right_wrist")})
    yield config, emus
    bench.close()


def test_robot_connect_observe_act_disconnect(follower):
    config, emus = follower
    robot = make_robot_from_config(config)  # found through the hardware package
    assert isinstance(robot, XTrainerRobot) and isinstance(robot, Robot) and robot.name == "xtrainer"
    assert list(robot.action_features) == EE_FEATURES and len(EE_FEATURES) == 20
    feats = robot.observation_features
    assert list(feats)[:34] == EE_FEATURES + JOINT_FEATURES and feats["top"] == (24, 32, 3)
    with pytest.raises(DeviceNotConnectedError):
        robot.get_observation()

    robot.connect()
    try:
        assert robot.is_connected and robot.is_calibrated
        obs = robot.get_observation()
        assert set(obs) == set(feats) and obs["right_wrist"].shape == (24, 32, 3)
        np.testing.assert_allclose([obs[f"left_j{i}.pos"] for i in range(1, 7)],
                                   np.deg2rad(emus["left"].joints_deg()), atol=1e-5)
        action = {k: obs[k] for k in EE_FEATURES}
        action["ee.left_z"] += 0.03
        t0, durations = time.monotonic(), []
        for k in range(10):  # LeRobot's loop keeps the rate; send_action does not wait for a period
            t = time.monotonic()
            sent = robot.send_action(action)
            durations.append(time.monotonic() - t)
            time.sleep(max(0.0, t0 + (k + 1) / 30 - time.monotonic()))
        assert np.median(durations) < 0.02, durations
        assert list(sent) == EE_FEATURES and sent["ee.left_z"] == pytest.approx(action["ee.left_z"], abs=1e-4)
        time.sleep(0.1)
        obs = robot.get_observation()
        assert obs["ee.left_z"] == pytest.approx(action["ee.left_z"], abs=2e-3)
        assert obs["ee.right_z"] == pytest.approx(action["ee.right_z"], abs=2e-3)
        with pytest.raises(ValueError, match=r"lacks 1 of the X-Trainer's 20 end-effector targets: \['ee.right_gripper'\]"):
            robot.send_action({k: v for k, v in action.items() if k != "ee.right_gripper"})
    finally:
        robot.disconnect()
    assert not robot.is_connected
    with pytest.raises(DeviceNotConnectedError):
        robot.send_action(action)


def test_robot_connect_failure_leaves_nothing_open(follower):
    config, _ = follower
    config.cameras = {"top": XTrainerCameraConfig("/dev/video_missing")}
    robot = XTrainerRobot(config)
    with pytest.raises(Exception, match="top camera: cannot open OpenCV camera '/dev/video_missing'"):
        robot.connect()
    assert not robot.is_connected and robot.rig is None and robot._ports == []


def test_leader_teleoperates_the_follower(follower, tmp_path):
    config, _ = follower
    config.cameras = {}
    leader_bench = _bench()  # the leader arms' controllers (only their feedback is read)
    leaders = leader_bench.arms
    try:
        q = {"left": home_qpos("left") + [0.1, 0.05, -0.1, 0, 0, 0], "right": home_qpos("right") + [-0.05, 0, 0.05, 0, 0, 0]}
        for arm, e in leaders.items():
            e.place(np.rad2deg(q[arm]))  # where a person moved the leader arms
        teleop = make_teleoperator_from_config(
            XTrainerLeaderConfig(left=DobotConfig(leaders["left"].host, feedback_port=leaders["left"].ports["feedback"]),
                                 right=DobotConfig(leaders["right"].host, feedback_port=leaders["right"].ports["feedback"]),
                                 calibration_dir=tmp_path))
        assert isinstance(teleop, XTrainerLeader) and isinstance(teleop, Teleoperator)
        teleop.connect()
        robot = XTrainerRobot(config)
        robot.connect()
        try:
            time.sleep(0.05)
            np.testing.assert_allclose(teleop.joint_row()[:6], q["left"], atol=1e-4)  # the servos' sag: ~5e-5 rad
            assert list(teleop.get_action()) == EE_FEATURES and teleop.feedback_features == {}
            for _ in range(30):  # lerobot-teleoperate: robot.send_action(teleop.get_action())
                robot.send_action(teleop.get_action())
                time.sleep(1 / 30)
            time.sleep(0.1)
            obs = robot.get_observation()
            for arm in ARMS:
                np.testing.assert_allclose([obs[f"{arm}_j{i}.pos"] for i in range(1, 7)], q[arm], atol=3e-3)
        finally:
            robot.disconnect()
            teleop.disconnect()
        assert all(e.commands_seen == [] for e in leaders.values())
    finally:
        leader_bench.close()


def test_configs_parse_from_the_command_line(tmp_path):
    @dataclass
    class Args:
        robot: RobotConfig

    args = draccus.parse(Args, args=["--robot.type=xtrainer", "--robot.left.host=192.168.5.1",
                                     "--robot.gripper_ports={left: /dev/ttyUSB0}", "--robot.image_height=128",
                                     "--robot.cameras={top: {device: '4'}}", f"--robot.calibration_dir={tmp_path}"])
    cfg = args.robot
    assert isinstance(cfg, XTrainerRobotConfig) and cfg.left.host == "192.168.5.1" and cfg.right.host == "127.0.0.2"
    assert cfg.gripper_ports == {"left": "/dev/ttyUSB0"} and cfg.cameras["top"].device == "4"
    assert XTrainerRobot(cfg).observation_features["top"] == (128, 96, 3)


def test_a_fault_while_observing_stops_both_arms(follower):
    """LeRobot's loops only disconnect on an error; the robot stops both arms itself first (issue 8)."""
    config, emus = follower
    config.cameras = {}
    robot = XTrainerRobot(config)
    robot.connect()
    try:
        robot.get_observation()
        emus["right"].drop_feedback(down_s=1.0)
        time.sleep(0.15)  # older than the 100 ms feedback limit
        with pytest.raises(Exception, match="feedback"):
            robot.get_observation()
        assert all(s.tripped and "observation failed" in s.tripped for s in robot.backend.safe.values())
        assert all("ResetRobot()" in e.commands_seen for e in emus.values())
    finally:
        robot.disconnect()
