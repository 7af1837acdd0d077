"""Real-bench sessions from a robot configuration file (hardware.config, hardware.run) against the
loopback emulators: config validation, `python -m hardware.run evaluate` and `collect` with a
scripted human (keys and teleoperator)."""

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest

import envs  # noqa: F401  (before mujoco)
from envs.geometry import ARMS
from envs.xtrainer import CAMERAS, BenchConfig, home_qpos
from hardware import feetech as ft
from hardware import run
from hardware.backend import tool_pose_row
from hardware.config import EXAMPLE, load_robot_config, make_backend, make_leader, parse_robot_config
from hardware.dobot_protocol import DASHBOARD_PORT, FEEDBACK_PORT, MOTION_PORT
from hardware.emulator import DEFAULT_HOSTS, GRIPPER_LINK_DIR, XTrainerEmulator
from hardware.keys import ScriptedKeys
from hardware.teleop import ScriptedTeleoperator


def _save_still_policy(out: Path, **config) -> Path:
    """A tiny policy that holds the X-Trainer's home pose (action mean = home pose, tiny std)."""
    import torch

    from flowpro.policies import BuiltinConfig, BuiltinVLA

    home = tool_pose_row(BenchConfig(), {a: home_qpos(a) for a in ARMS}, dict.fromkeys(ARMS, 1.0))
    cfg = BuiltinConfig(**{"d_model": 32, "n_layers": 1, "n_heads": 2, "chunk_size": 4, "n_action_steps": 2,
                           "num_inference_steps": 2, **config})
    policy = BuiltinVLA(cfg)
    policy.action_norm.set_stats(torch.tensor(home), torch.zeros(20))
    policy.save(out)
    return out


@pytest.fixture(scope="module")
def vision_policy(tmp_path_factory):
    """Reads the three cameras at 24x32 (the real bench observes no object poses)."""
    return _save_still_policy(tmp_path_factory.mktemp("vision") / "policy", cameras=tuple(CAMERAS), image_size=(24, 32),
                              image_channels=(8, 8, 8), grid=2)


@contextlib.contextmanager
def emulated_config(tmp_path: Path, **overrides):
    """The shipped example config, pointed at emulators on free ports and grippers on their ptys."""
    bench = XTrainerEmulator(dashboard_port=0, motion_port=0, feedback_port=0, grippers=True).start()
    emus, servos = bench.arms, bench.grippers
    for s in servos.values():
        s.move_by_hand(2400)  # fingers left partly closed
    try:
        raw = json.loads(EXAMPLE.read_text())
        for arm, e in emus.items():
            raw["arms"][arm].update(dashboard_port=e.ports["dashboard"], motion_port=e.ports["motion"],
                                    feedback_port=e.ports["feedback"], timeout_s=1.0)
            raw["leader"]["arms"][arm]["feedback_port"] = e.ports["feedback"]
            raw["grippers"][arm]["port"] = servos[arm].path
        raw.update({"task": "reach", "time_limit_s": 0.4, **overrides})
        path = tmp_path / "robot.json"
        path.write_text(json.dumps(raw))
        yield path, emus, servos
    finally:
        bench.close()


# ---------------------------------------------------------------------------------------------- config
def test_example_config_points_at_the_emulator_defaults():
    c = load_robot_config(EXAMPLE)
    for arm in ARMS:
        a = c.arms[arm]
        assert (a.host, a.firmware, a.dashboard_port, a.motion_port, a.feedback_port) == \
               (DEFAULT_HOSTS[arm], "V3", DASHBOARD_PORT, MOTION_PORT, FEEDBACK_PORT)
        assert c.grippers[arm].port == str(GRIPPER_LINK_DIR / f"gripper_{arm}")  # where the emulator links them
        assert c.grippers[arm].calibration.servo_id == ft.GRIPPER_IDS[arm]
        assert c.leader.arms[arm].host == DEFAULT_HOSTS[arm]
    assert set(c.cameras) == set(CAMERAS) and c.control_hz == 30 and c.action_mode == "ee"
    assert c.path == EXAMPLE and c.safety.max_joint_step_rad == 0.9


def test_config_errors_name_every_bad_field():
    raw = {"arms": {"left": {"host": "", "firmware": "v5", "feedback_port": 70000}},
           "grippers": {"left": {"servo_id": 300}, "right": {"port": "/dev/ttyUSB1"}},
           "cameraz": {"top": 0}, "safety": {"max_joint_step_rad": 2.0, "speed_percent": 0}, "control_hz": "fast"}
    with pytest.raises(ValueError) as e:
        parse_robot_config(raw, source="robot.json")
    msg = str(e.value)
    for field, hint in [("(top level): unknown key(s) ['cameraz']", ""), ("cameras: missing", "null for none"),
                        ("arms.right: missing", '"host"'), ("arms.left.host", "IP address of the left arm"),
                        ("arms.left.firmware", "'v5' is not one of ['auto', 'v3', 'v4']"),
                        ("arms.left.feedback_port", "70000 is outside [1, 65535]"),
                        ("grippers.left.port: missing", "/dev/ttyUSB0"), ("grippers.left.servo_id", "300"),
                        ("safety.max_joint_step_rad", "outside (0.0, 0.9]"), ("safety.speed_percent", "[1, 100]"),
                        ("control_hz", "must be a number")]:
        assert field in msg and hint in msg, (field, msg)
    assert msg.startswith("robot.json has 11 problem(s)")


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_robot_config(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"arms": {,}}')
    with pytest.raises(ValueError, match="not valid JSON: .* line 1, column 11"):
        load_robot_config(tmp_path / "bad.json")
    # A calibration file next to the config (relative path) for servos 21/22; the right gripper says 23.
    (tmp_path / "cal").mkdir()
    ft.save_calibration(tmp_path / "cal/grippers.json", {
        "left": ft.GripperCalibration(21, open_ticks=2000, closed_ticks=3000),
        "right": ft.GripperCalibration(22, open_ticks=2100, closed_ticks=3100)})
    raw = json.loads(EXAMPLE.read_text())
    for arm in ARMS:
        raw["grippers"][arm]["calibration"] = "cal/grippers.json"
    (tmp_path / "ok.json").write_text(json.dumps(raw))
    assert load_robot_config(tmp_path / "ok.json").grippers["right"].calibration.open_ticks == 2100
    raw["grippers"]["right"]["servo_id"] = 23
    raw["grippers"]["left"]["calibration"] = "missing.json"
    (tmp_path / "mismatch.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError) as e:
        load_robot_config(tmp_path / "mismatch.json")
    assert "grippers.right.servo_id: is 23 but the calibration" in str(e.value)
    assert "grippers.left.calibration: cannot read gripper calibration" in str(e.value)


def test_make_backend_and_leader_from_a_config_file(tmp_path):
    with emulated_config(tmp_path) as (path, emus, servos):
        robot = load_robot_config(path)
        backend = make_backend(robot, (24, 32), time_limit_s=1.0)
        try:
            obs, _ = backend.reset()
            assert {k: v.shape for k, v in obs["pixels"].items()} == dict.fromkeys(CAMERAS, (24, 32, 3))
            assert all(servos[a].torque_limit == 300 for a in ARMS) and backend.time_limit_s == 1.0
            assert "SpeedFactor(20)" in emus["left"].commands_seen
            leader = make_leader(robot)  # the example's leader: the followers' own feedback streams
            try:
                np.testing.assert_allclose(leader.read_joints()[[0, 7]], obs["joint_pos"][[0, 7]], atol=1e-3)
            finally:
                leader.close()
        finally:
            backend.close()
        assert backend.resources == [] and not backend.cameras.is_open  # ports and cameras released


# ---------------------------------------------------------------------------------------------- evaluate
def test_evaluate_writes_one_json_line_per_rollout(tmp_path, vision_policy):
    out = tmp_path / "eval.jsonl"
    with emulated_config(tmp_path) as (path, emus, _):
        # Start the rollout; after the 3rd step the operator marks the task done.
        keys = ScriptedKeys(["c", None, None, "s"])
        argv = ["evaluate", "--config", str(path), "--policy", str(vision_policy), "--rollouts", "1", "--out", str(out)]
        assert run.main(argv, keys=keys, log=lambda m: None) == 0
        assert keys.exhausted and any(c.startswith("ServoJ") for c in emus["right"].commands_seen)
    (line,) = out.read_text().splitlines()
    r = json.loads(line)
    assert r["success"] and r["terminated_by"] == "success" and r["steps"] == 4
    assert r["completion_time_s"] == pytest.approx(3 / 30) and r["seed"] == 0
    summary = json.loads(out.with_suffix(".summary.json").read_text())
    assert summary["episodes"] == 1 and summary["success_rate"] == 1.0 and summary["backend"] == "real"
    # Resumed: the file already holds the rollout asked for, so nothing connects (no emulator now).
    assert run.main(argv, keys=ScriptedKeys([]), log=lambda m: None) == 0
    assert len(out.read_text().splitlines()) == 1


def test_evaluate_refuses_what_the_real_bench_cannot_observe(tmp_path, capsys):
    state_only = _save_still_policy(tmp_path / "state", use_images=False, cameras=(), env_state_dim=12)
    robot = load_robot_config(EXAMPLE)
    with pytest.raises(ValueError, match=r"privileged object poses \(env_state_dim=12\)"):
        run.evaluate_real(robot, state_only, 1, tmp_path / "e.jsonl")
    top_only = _save_still_policy(tmp_path / "top", cameras=("top",), image_size=(24, 32), image_channels=(8, 8, 8))
    with pytest.raises(ValueError, match=r"camera\(s\) \['top'\]; configure them under \"cameras\""):
        run.evaluate_real(parse_robot_config({**json.loads(EXAMPLE.read_text()), "cameras": None}), top_only, 1,
                          tmp_path / "e.jsonl")
    assert run.main(["evaluate", "--config", str(tmp_path / "none.json"), "--policy", str(top_only),
                     "--rollouts", "1"]) == 2
    assert "robot config" in capsys.readouterr().err and not (tmp_path / "e.jsonl").exists()


# ---------------------------------------------------------------------------------------------- collect
@pytest.fixture(scope="module")
def lerobot_datasets():
    """LeRobot's dataset module takes ~10 s to import (torch custom ops); import it outside the test."""
    import lerobot.datasets.lerobot_dataset  # noqa: F401


def test_collect_with_a_scripted_human_writes_a_pair_load_pairs_reads(tmp_path, vision_policy, lerobot_datasets):
    from flowpro.tuples import load_pairs

    root = tmp_path / "pairs_r1"
    # Start; 5 policy steps pass; intervene after the 6th (rollback 3 steps); confirm the restored
    # scene; 4 correction steps; hand back (the policy runs to the time limit).
    keys = ScriptedKeys(["c"] + [None] * 5 + ["i", "c"] + [None] * 4 + ["h"])
    deltas = np.zeros((6, 14))
    deltas[:, 7] = 0.02 * np.arange(6)  # the right leader arm turns J1
    deltas[:, [6, 13]] = 1.0
    teleop = ScriptedTeleoperator(deltas, relative=True)
    argv = ["collect", "--config", "CONFIG", "--policy", str(vision_policy), "--pairs", "1", "--round", "1",
            "--root", str(root), "--k-back", "3", "--seed", "40"]
    with emulated_config(tmp_path) as (path, _, _):
        argv[2] = str(path)
        assert run.main(argv, keys=keys, teleop=teleop, log=lambda m: None) == 0
    assert keys.exhausted
    (pair,) = load_pairs(root)
    assert pair.pair_id == 0 and len(pair.states_l) == 3 and len(pair.states_w) == 4
    # tau^w starts where tau^l started (the rollback) and the right arm follows the leader's J1.
    np.testing.assert_allclose(pair.states_w[0, :3], pair.states_l[0, :3], atol=2e-3)
    assert np.linalg.norm(pair.states_w[-1, 10:13] - pair.states_w[0, 10:13]) > 0.01
    marker = json.loads((root / "meta/flowpro.json").read_text())
    assert marker["kind"] == "preference_pairs" and marker["split"] == "real" and marker["image_size"] == [24, 32]
    info = json.loads((root / "meta/info.json").read_text())
    assert info["features"]["observation.environment_state"]["shape"] == [1]
    assert "observation.images.top" in info["features"]
    import pyarrow.parquet as pq

    (data,) = root.glob("data/chunk-*/file-*.parquet")
    seeds = pq.read_table(data, columns=["episode_seed"]).column("episode_seed").to_pylist()
    assert {s[0] if isinstance(s, list) else s for s in seeds} == {40}  # --seed: the first rollout's
    assert (root / "pictures/pair_000000_rollback.png").exists()
    assert len(list((tmp_path / "pairs_r1_rollback_frames").glob("*.png"))) == 1
    # Resumed: the dataset already holds the pair asked for, so nothing connects.
    assert run.main(argv, keys=ScriptedKeys([]), teleop=teleop, log=lambda m: None) == 0
