"""Real-bench sessions from a robot configuration file (hardware.config, hardware.run) against the
loopback emulators: config validation, `python -m hardware.run evaluate` and `collect` with a
scripted human (keys and teleoperator)."""

import contextlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

import envs  # noqa: F401  (before mujoco)
from envs.dataset import finished_episodes
from envs.geometry import ARMS
from envs.xtrainer import CAMERAS
from hardware import feetech as ft
from hardware import run
from hardware.config import EXAMPLE, load_robot_config, make_backend, make_leader, parse_robot_config
from hardware.dobot_protocol import DASHBOARD_PORT, FEEDBACK_PORT, MOTION_PORT
from hardware.emulator import DEFAULT_HOSTS, GRIPPER_LINK_DIR, ArmEmulator, XTrainerEmulator
from hardware.emulated_session import emulated_config as write_emulated_config
from hardware.emulated_session import save_still_policy
from hardware.emulator_process import EmulatorProcess
from hardware.keys import ScriptedKeys
from hardware.teleop import ScriptedTeleoperator




@pytest.fixture(scope="module")
def vision_policy(tmp_path_factory):
    """Reads the three cameras at 24x32 (the real bench observes no object poses)."""
    return save_still_policy(tmp_path_factory.mktemp("vision") / "policy", cameras=tuple(CAMERAS), image_size=(24, 32),
                              image_channels=(8, 8, 8), grid=2)


@contextlib.contextmanager
def emulated_config(tmp_path: Path, **overrides):
    """The shipped example config, pointed at emulators on free ports and grippers on their ptys."""
    with EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0, grippers=True) as bench:
        emus, servos = bench.arms, bench.grippers
        for s in servos.values():
            s.move_by_hand(2400)  # fingers left partly closed
        path = write_emulated_config(tmp_path / "robot.json", bench, **{"task": "reach", "time_limit_s": 0.4,
                                                                          **overrides})
        yield path, emus, servos


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
    state_only = save_still_policy(tmp_path / "state", use_images=False, cameras=(), env_state_dim=12)
    robot = load_robot_config(EXAMPLE)
    with pytest.raises(ValueError, match=r"privileged object poses \(env_state_dim=12\)"):
        run.evaluate_real(robot, state_only, 1, tmp_path / "e.jsonl")
    top_only = save_still_policy(tmp_path / "top", cameras=("top",), image_size=(24, 32), image_channels=(8, 8, 8))
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


# ---------------------------------------------------------------------------------------------- faults
class KeysWithFault(ScriptedKeys):
    """Scripted keys; just before poll number ``at`` (1-based) the bench faults: ``fault()`` runs
    (an emulator fault, then long enough a wait that the client has seen it)."""

    def __init__(self, script, at: int, fault):
        super().__init__(script)
        self.at, self.fault, self.fired = at, fault, False

    def poll(self):
        if self.polls + 1 == self.at:
            self.fired = True
            self.fault()
        return super().poll()


def _stopped_last(emu: ArmEmulator) -> bool:
    """The controller's last motion-relevant command was a stop (V3: ResetRobot), after every ServoJ."""
    cmds = emu.commands_seen
    stops = [i for i, c in enumerate(cmds) if c.startswith("ResetRobot")]
    servos = [i for i, c in enumerate(cmds) if c.startswith("ServoJ")]
    return bool(stops) and bool(servos) and stops[-1] > servos[-1]


def _column(root: Path, name: str) -> list:
    import pyarrow.parquet as pq

    files = sorted(root.glob("data/chunk-*/file-*.parquet"))
    values = [v for f in files for v in pq.read_table(f, columns=[name]).column(name).to_pylist()]
    return [v[0] if isinstance(v, list) else v for v in values]


def test_fault_mid_correction_stops_then_flushes_pairs_and_frames(tmp_path, vision_policy, lerobot_datasets,
                                                                  capsys):
    from flowpro.tuples import load_pairs
    from hardware.interrupted import INTERRUPTED_KIND, interrupted_dir

    root = tmp_path / "pairs_r1"
    side = interrupted_dir(root)
    # Rollout 40: pair 1 as in the test above (rollback 3, 4 correction steps, hand back); 4 policy
    # steps; intervene again (rollback 3); confirm; 2 correction steps; then the left controller
    # alarms (ErrorID != 0, RobotMode 9) while the operator corrects.
    script = ["c"] + [None] * 5 + ["i", "c"] + [None] * 4 + ["h"] + [None] * 3 + ["i", "c", None, None]
    deltas = np.zeros((6, 14))
    deltas[:, 7] = 0.02 * np.arange(6)
    deltas[:, [6, 13]] = 1.0
    seen_at_flush = {}
    argv = ["collect", "--config", "CONFIG", "--policy", str(vision_policy), "--pairs", "2", "--round", "1",
            "--root", str(root), "--k-back", "3", "--seed", "40"]
    with emulated_config(tmp_path, time_limit_s=1.0) as (path, emus, _):
        argv[2] = str(path)

        def alarm():
            emus["left"].inject_error(code=22)
            time.sleep(0.06)  # > 2 feedback periods: the next step sees the alarm

        def log(msg: str) -> None:  # what the bench and the disk look like when the flush starts
            if "saving what was recorded" in msg:
                seen_at_flush.update(msg=msg, stopped={a: _stopped_last(e) for a, e in emus.items()},
                                     pairs=finished_episodes(root), side=side.exists())

        keys = KeysWithFault(script, at=len(script) + 1, fault=alarm)
        rc = run.main(argv, keys=keys, teleop=ScriptedTeleoperator(deltas, relative=True), log=log)
        assert keys.fired and keys.exhausted
        err = capsys.readouterr().err
        # Safe stop first (both arms, the right one healthy), then the flush, then a clear error.
        assert seen_at_flush["stopped"] == {"left": True, "right": True}, seen_at_flush
        assert seen_at_flush["pairs"] == 0 and not seen_at_flush["side"]
        assert "left arm stopped, right arm stopped" in seen_at_flush["msg"]
        assert all(_stopped_last(e) for e in emus.values())
        assert rc == 3 and "error on the bench: SafetyStop: left arm stopped: controller in error mode" in err
        assert f"episode 0 of {side / 'frames'}" in err and "1 finished pair(s) of it written" in err

        # The finished pair of the interrupted rollout is in the round's dataset, intact.
        (pair,) = load_pairs(root)
        assert pair.pair_id == 0 and len(pair.states_l) == 3 and len(pair.states_w) == 4
        # The pair in progress: its tau^l (3) and the 2 correction steps done, with the fault.
        frames = side / "frames"
        assert json.loads((frames / "meta/flowpro.json").read_text())["kind"] == INTERRUPTED_KIND
        assert _column(frames, "role") == ["l"] * 3 + ["w"] * 2
        assert _column(frames, "intervention") == [False] * 3 + [True] * 2
        assert set(_column(frames, "pair_id")) == {-1} and set(_column(frames, "episode_seed")) == {40}
        assert set(_column(frames, "rollback_index")) == {8}  # 3 + 4 + 4 steps on the timeline, back 3
        (fault,) = set(_column(frames, "fault"))
        assert fault.startswith("SafetyStop: left arm stopped: controller in error mode (RobotMode 9"), fault
        (line,) = (side / "log.jsonl").read_text().splitlines()
        logged = json.loads(line)
        assert {k: logged[k] for k in ("seed", "round", "pairs_written", "pairs_in_root", "frames", "frames_l",
                                       "frames_w", "rollback_index", "episode")} == \
               {"seed": 40, "round": 1, "pairs_written": 1, "pairs_in_root": 1, "frames": 5, "frames_l": 3,
                "frames_w": 2, "rollback_index": 8, "episode": 0}
        assert logged["fault"] == fault
        with pytest.raises(ValueError, match="holds 'interrupted_pairs', not preference pairs"):
            load_pairs(frames)

        # Resumable: the rerun starts after the finished pair (seed 41; the controller's alarm is
        # cleared at start-up) and leaves the interrupted record alone.
        keys = ScriptedKeys(["c"] + [None] * 5 + ["i", "c"] + [None] * 4 + ["h"])
        assert run.main(argv, keys=keys, teleop=ScriptedTeleoperator(deltas, relative=True), log=lambda m: None) == 0
    first, second = load_pairs(root)
    np.testing.assert_array_equal(first.states_w, pair.states_w)
    assert second.pair_id == 1 and _column(root, "episode_seed")[-1] == 41
    assert len((side / "log.jsonl").read_text().splitlines()) == 1 and finished_episodes(frames) == 1


def test_ctrl_c_mid_correction_stops_both_arms_before_saving_the_frames(tmp_path, vision_policy, lerobot_datasets,
                                                                       capsys):
    """Nothing in the safety layer sees Ctrl-C (the holder keeps the arms still): the session
    itself must stop both arms, and before it writes anything."""
    from hardware.interrupted import interrupted_dir

    root = tmp_path / "pairs_r1"
    side = interrupted_dir(root)
    script = ["c"] + [None] * 5 + ["i", "c", None]  # intervene (rollback 3), confirm, 1 correction step

    def ctrl_c():
        raise KeyboardInterrupt

    deltas = np.zeros((2, 14))
    deltas[:, [6, 13]] = 1.0
    seen_at_flush = {}
    with emulated_config(tmp_path, time_limit_s=1.0) as (path, emus, _):
        def log(msg: str) -> None:
            if "saving what was recorded" in msg:
                seen_at_flush.update(stopped={a: _stopped_last(e) for a, e in emus.items()}, side=side.exists())

        keys = KeysWithFault(script, at=len(script) + 1, fault=ctrl_c)
        rc = run.main(["collect", "--config", str(path), "--policy", str(vision_policy), "--pairs", "1", "--round",
                       "1", "--root", str(root), "--k-back", "3", "--seed", "7"],
                      keys=keys, teleop=ScriptedTeleoperator(deltas, relative=True), log=log)
        assert keys.fired and rc == 130
        assert seen_at_flush == {"stopped": {"left": True, "right": True}, "side": False}
    err = capsys.readouterr().err
    assert "it had no" not in err and f"episode 0 of {side / 'frames'}" in err
    assert finished_episodes(root) == 0 and not root.exists()  # no finished pair: the round's dataset stays absent
    assert _column(side / "frames", "role") == ["l"] * 3 + ["w"]
    assert set(_column(side / "frames", "fault")) == {"KeyboardInterrupt: interrupted by the operator (Ctrl-C)"}


def test_fault_mid_rollout_logs_the_interrupted_evaluation_rollout(tmp_path, vision_policy, capsys):
    from hardware.interrupted import interrupted_results_path

    out = tmp_path / "eval.jsonl"
    argv = ["evaluate", "--config", "CONFIG", "--policy", str(vision_policy), "--rollouts", "2", "--out", str(out)]
    # Rollout 1: success marked after step 3 (polls 1-5). Rollout 2 (poll 6 starts it): after its
    # 4th step the right arm's feedback connection drops and stays down for a while.
    script = ["c", None, None, "s", None, "c", None, None, None]
    with emulated_config(tmp_path, time_limit_s=1.0) as (path, emus, _):
        argv[2] = str(path)

        def drop():
            emus["right"].drop_feedback(down_s=0.6)
            time.sleep(0.2)  # the feedback is now older than the 100 ms limit

        keys = KeysWithFault(script, at=10, fault=drop)
        assert run.main(argv, keys=keys, log=lambda m: None) == 3
        assert keys.fired and all(_stopped_last(e) for e in emus.values())
        err = capsys.readouterr().err
        # A safety stop ends the rollout: usually the right arm's stale feedback, but on a loaded
        # machine another check may see the stall first (the left arm's holder reporting the right
        # arm, or the 500 ms command watchdog); the record must be saved whichever it is.
        assert "error on the bench: SafetyStop: " in err
        assert f"logged in {interrupted_results_path(out)}" in err and "repeats it" in err
        (finished,) = map(json.loads, out.read_text().splitlines())
        assert finished["seed"] == 0 and finished["success"]
        (line,) = map(json.loads, interrupted_results_path(out).read_text().splitlines())
        assert {k: line[k] for k in ("rollout", "seed", "success", "steps", "terminated_by")} == \
               {"rollout": 1, "seed": 1, "success": False, "steps": 4, "terminated_by": "fault"}
        assert line["time_s"] == pytest.approx(4 / 30, abs=1e-3)
        assert line["fault"].startswith("SafetyStop: ") and "arm stopped" in line["fault"]
        assert not out.with_suffix(".summary.json").exists()
        # The rerun repeats the interrupted rollout (same seed) once the feedback is back.
        time.sleep(0.6)
        assert run.main(argv, keys=ScriptedKeys(["c", None, "s"]), log=lambda m: None) == 0
    assert [json.loads(x)["seed"] for x in out.read_text().splitlines()] == [0, 1]
    assert json.loads(out.with_suffix(".summary.json").read_text())["episodes"] == 2
