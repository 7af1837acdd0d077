"""The LeRobot plugin (lerobot_robot_xtrainer, docs/platform.md §Robot and teleoperator plugins):
LeRobot's own discovery finds it from this project's distribution metadata, and LeRobot's own command
lines record and teleoperate the X-Trainer through it against the loopback emulators (no network, no Hub)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.geometry import ARMS
from envs.xtrainer import BenchConfig, home_qpos
from hardware.backend import tool_pose_row
from hardware.emulator import ArmEmulator
from hardware.emulator_process import EmulatorProcess

REPO = Path(__file__).resolve().parents[2]
PLUGIN = "lerobot_robot_xtrainer"
# The leader arms stand a little off home: what the follower is asked to reach.
LEADER_OFFSET = {"left": np.array([0.1, 0.05, -0.1, 0, 0, 0]), "right": np.array([-0.05, 0, 0.05, 0, 0, 0])}


@pytest.fixture(scope="module")
def installed_metadata(tmp_path_factory) -> Path:
    """A directory holding this project's ``*.dist-info`` as ``pip install -e .`` would write it (the
    build backend's own metadata hook), so LeRobot's discovery sees the distribution without
    installing into the shared environment."""
    out = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    proc = subprocess.run([sys.executable, "-c", "import sys, setuptools.build_meta as b; "
                           "print(b.prepare_metadata_for_build_wheel(sys.argv[1]))", str(build)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    name = proc.stdout.strip().splitlines()[-1]
    (build / name).rename(out / name)  # only the dist-info (the egg-info beside it would be a second copy)
    return out


@pytest.fixture
def arms():
    """Follower and leader controllers (emulated on free ports); the leaders stand off home."""
    follower, leader = ({arm: EmulatorProcess(ArmEmulator, arm, dashboard_port=0, motion_port=0, feedback_port=0).start()
                         for arm in ARMS} for _ in range(2))
    for arm, e in leader.items():
        e.place(np.rad2deg(home_qpos(arm) + LEADER_OFFSET[arm]))
    yield follower, leader
    for e in [*follower.values(), *leader.values()]:
        e.close()


def _device_args(follower: dict, leader: dict, tmp: Path) -> list[str]:
    args = ["--robot.type=xtrainer", "--teleop.type=xtrainer_leader", f"--robot.calibration_dir={tmp / 'cal'}",
            f"--teleop.calibration_dir={tmp / 'cal'}"]
    for arm in ARMS:
        f, ld = follower[arm], leader[arm]
        args += [f"--robot.{arm}.host={f.host}", f"--robot.{arm}.firmware=V3",
                 f"--robot.{arm}.dashboard_port={f.ports['dashboard']}", f"--robot.{arm}.motion_port={f.ports['motion']}",
                 f"--robot.{arm}.feedback_port={f.ports['feedback']}",
                 f"--teleop.{arm}.host={ld.host}", f"--teleop.{arm}.feedback_port={ld.ports['feedback']}"]
    return args


def _leader_pose() -> np.ndarray:
    return tool_pose_row(BenchConfig(), {a: home_qpos(a) + LEADER_OFFSET[a] for a in ARMS}, dict.fromkeys(ARMS, 1.0))


def test_distribution_name_is_a_lerobot_plugin_name(installed_metadata):
    (info,) = installed_metadata.glob("*.dist-info")
    name = next(line.split(": ", 1)[1] for line in (info / "METADATA").read_text().splitlines()
                if line.startswith("Name: "))
    assert name == PLUGIN  # LeRobot imports the distribution *name*: it must be the package, underscores kept


def test_lerobot_discovery_imports_the_plugin_and_its_types_parse(installed_metadata, tmp_path, monkeypatch):
    """LeRobot's discovery (as its command lines call it) imports the plugin by the distribution's
    name; LeRobot's parser and factories then build our devices from ``--robot.type`` / ``--teleop.type``."""
    from dataclasses import dataclass

    import draccus
    from lerobot.robots.config import RobotConfig
    from lerobot.robots.utils import make_robot_from_config
    from lerobot.teleoperators.config import TeleoperatorConfig
    from lerobot.teleoperators.utils import make_teleoperator_from_config
    from lerobot.utils.import_utils import register_third_party_plugins

    monkeypatch.syspath_prepend(str(installed_metadata))
    monkeypatch.delitem(sys.modules, PLUGIN, raising=False)
    register_third_party_plugins()
    assert PLUGIN in sys.modules

    @dataclass
    class Args:  # the shape of lerobot-record's / lerobot-teleoperate's configs
        robot: RobotConfig
        teleop: TeleoperatorConfig

    args = draccus.parse(Args, args=["--robot.type=xtrainer", "--teleop.type=xtrainer_leader",
                                     "--robot.left.host=192.168.5.1", "--teleop.right.host=192.168.5.4",
                                     "--teleop.right.feedback_port=30014",
                                     f"--robot.calibration_dir={tmp_path}", f"--teleop.calibration_dir={tmp_path}"])
    robot, teleop = make_robot_from_config(args.robot), make_teleoperator_from_config(args.teleop)
    plugin = sys.modules[PLUGIN]
    assert isinstance(robot, plugin.XTrainerRobot) and isinstance(teleop, plugin.XTrainerLeader)
    assert robot.config.left.host == "192.168.5.1" and teleop.config.right.feedback_port == 30014
    assert not robot.is_connected and len(robot.cameras) == 0  # lerobot-record sizes its writers before connecting


@pytest.mark.slow  # ~15 s, mostly importing lerobot_teleoperate (every robot LeRobot ships)
def test_lerobot_teleoperate_discovers_and_drives_the_xtrainer(installed_metadata, arms, tmp_path, monkeypatch):
    """``lerobot-teleoperate`` in this process: its plugin discovery (not our test) imports the plugin,
    its parser builds our configs from the command line, and the follower reaches the leader."""
    from lerobot.scripts import lerobot_teleoperate

    follower, leader = arms
    monkeypatch.syspath_prepend(str(installed_metadata))
    monkeypatch.delitem(sys.modules, PLUGIN, raising=False)
    monkeypatch.setattr(sys, "argv", ["lerobot-teleoperate", *_device_args(follower, leader, tmp_path),
                                      "--fps=30", "--teleop_time_s=1.0", "--display_data=false"])
    lerobot_teleoperate.main()
    assert PLUGIN in sys.modules  # imported by register_third_party_plugins, from the distribution's name
    for arm in ARMS:
        np.testing.assert_allclose(np.deg2rad(follower[arm].state.q_actual), home_qpos(arm) + LEADER_OFFSET[arm],
                                   atol=3e-3)
        assert follower[arm].servoj_times and not leader[arm].commands_seen  # the leader arms are only read


def test_lerobot_record_records_an_episode_with_the_xtrainer(installed_metadata, arms, tmp_path):
    """The ``lerobot-record`` console script in a fresh interpreter that sees this project as an
    installed distribution: one 1 s episode from the leader arms, with a synthetic top camera."""
    follower, leader = arms
    root = tmp_path / "dataset"
    cmd = [str(Path(sys.executable).with_name("lerobot-record")), *_device_args(follower, leader, tmp_path),
           "--robot.cameras={top: {device: synthetic, width: 64, height: 48, fps: 30}}",
           "--robot.image_height=24", "--robot.image_width=32",
           "--dataset.repo_id=local/xtrainer_test", f"--dataset.root={root}", "--dataset.single_task=follow the leader",
           "--dataset.num_episodes=1", "--dataset.episode_time_s=1", "--dataset.reset_time_s=0", "--dataset.fps=30",
           "--dataset.video=false", "--dataset.push_to_hub=false", "--play_sounds=false", "--display_data=false"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(installed_metadata), str(REPO)]),
           "HF_HUB_OFFLINE": "1", "HF_LEROBOT_HOME": str(tmp_path / "hf")}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]

    info = json.loads((root / "meta/info.json").read_text())
    assert (info["robot_type"], info["total_episodes"], info["fps"]) == ("xtrainer", 1, 30)
    assert 25 <= info["total_frames"] <= 31  # 1 s at 30 fps (LeRobot's loop may lose a period)
    assert info["features"]["observation.state"]["shape"] == [34]  # 20 pose values, then the 14 joints
    assert info["features"]["observation.images.top"]["shape"] == [24, 32, 3]
    import pyarrow.parquet as pq

    (data,) = root.glob("data/chunk-*/file-*.parquet")
    table = pq.read_table(data, columns=["action", "observation.state"]).to_pydict()
    actions, states = np.array(table["action"]), np.array(table["observation.state"])
    # the leader's pose (its emulated joint servos sag ~0.002° under gravity: ~1e-4 in the pose)
    np.testing.assert_allclose(actions, np.tile(_leader_pose(), (len(actions), 1)), atol=2e-4)
    np.testing.assert_allclose(states[-1, :20], _leader_pose(), atol=3e-3)  # which the follower reached
    assert not any(e.commands_seen for e in leader.values())
