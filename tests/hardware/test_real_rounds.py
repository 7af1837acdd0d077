"""FlowPRO rounds on the real X-Trainer (``run_rounds`` with ``backend="real"``), against the loopback
emulators with a scripted human: keys to intervene, the leader-arm path for the correction, the
operator's success mark in the evaluation."""

import json

import numpy as np
import pytest
from test_run import emulated_config  # the emulated bench of the session tests

from envs.record import record
from envs.xtrainer import CAMERAS
from flowpro.benches import make_bench
from flowpro.sim_bench import SimulatedBench
from flowpro.finetune import RPROConfig, run_rounds
from flowpro.train import main as train_main
from hardware.bench import RealBench
from hardware.config import EXAMPLE
from hardware.emulated_session import save_still_policy
from hardware.keys import ScriptedKeys
from hardware.teleop import ScriptedTeleoperator


@pytest.fixture(scope="module")
def vision_base(tmp_path_factory):
    """A tiny three-camera policy (24x32) holding the home pose, and a one-episode D_SFT of the
    same shape (a Reach demonstration recorded in simulation stands in for real demonstrations)."""
    root = tmp_path_factory.mktemp("real_rounds")
    base = save_still_policy(root / "base", cameras=tuple(CAMERAS), image_size=(24, 32), image_channels=(8, 8, 8),
                              grid=2)
    record("reach", 1, "id", str(root / "demos"), obs_mode="rgb", image_size=(24, 32), progress=False)
    return base, root / "demos"


def _cfg(out, base, demos, robot_config, **kw):
    return RPROConfig(task="reach", base=str(base), out=str(out), rounds=1, pairs="1", steps=3, batch_size=8,
                      warmup=1, log_every=1, eval_rollouts=1, eval_splits="id", demos=str(demos), backend="real",
                      robot_config=str(robot_config), **kw)


@pytest.mark.timeout(300)  # a key script that goes wrong leaves the session waiting for 'c'
def test_a_real_round_collects_a_human_correction_fine_tunes_and_evaluates_on_the_robot(tmp_path, vision_base):
    from flowpro.tuples import load_pairs

    base, demos = vision_base
    out = tmp_path / "rpro_real"
    # Collection: start; 5 policy steps; intervene after the 6th (the default rollback of 30 steps
    # reaches back to the start); confirm the restored scene; 4 correction steps from the leader
    # path; hand back; the policy runs out the time limit. Evaluation of the fine-tuned policy:
    # start; the operator marks the task done at the 3rd step.
    keys = ScriptedKeys(["c"] + [None] * 5 + ["i", "c"] + [None] * 4 + ["h"] + [None] * 30
                        + ["c", None, None, "s"])
    deltas = np.zeros((6, 14))
    deltas[:, 7] = 0.02 * np.arange(6)  # the right leader arm turns J1
    deltas[:, [6, 13]] = 1.0
    teleop = ScriptedTeleoperator(deltas, relative=True)
    with emulated_config(tmp_path) as (path, emus, _):
        cfg = _cfg(out, base, demos, path)
        with make_bench(cfg, keys=keys, teleop=teleop) as bench:
            result = run_rounds(cfg, progress=False, bench=bench)
        servo_commands = sum(c.startswith("ServoJ") for c in emus["right"].commands_seen)
    assert keys.exhausted and teleop.reads >= 4 and servo_commands > 0

    r1 = json.loads((out / "round_1/round.json").read_text())
    assert r1["collection"]["pairs"] == 1 and r1["collection"]["interventions"] == 1
    (pair,) = load_pairs(out / "round_1/pairs")
    assert len(pair.states_l) == 6 and len(pair.states_w) == 4
    np.testing.assert_allclose(pair.states_w[0, :3], pair.states_l[0, :3], atol=2e-3)  # tau^w starts at the rollback
    assert np.linalg.norm(pair.states_w[-1, 10:13] - pair.states_w[0, 10:13]) > 0.01  # and follows the leader
    assert json.loads((out / "round_1/pairs/meta/flowpro.json").read_text())["split"] == "real"
    assert r1["tuples"]["case1"] > 0 and r1["tuples"]["total"] > r1["tuples"]["case1"]

    assert (out / "round_1/train/policy/model.safetensors").exists()
    assert len((out / "round_1/train/metrics.csv").read_text().splitlines()) == 4  # header + 3 steps
    assert r1["policy"] == str(out / "round_1/train/policy")
    (line,) = (out / "round_1/eval_id.jsonl").read_text().splitlines()  # written by the real session
    assert json.loads(line)["terminated_by"] == "success" and json.loads(line)["steps"] == 4
    ev = r1["evaluation"]["id"]
    assert ev["episodes"] == 1 and ev["success_rate"] == 1.0 and ev["rollouts"] == [json.loads(line)]
    assert result["success_rate_per_round"] == {1: {"id": 1.0}}
    record_ = json.loads((out / "config.json").read_text())["config"]
    assert record_["backend"] == "real" and record_["robot_config"] == str(path)

    # A rerun finds the round finished and never connects (the emulators are gone now).
    before = (out / "round_1/round.json").read_text()
    assert run_rounds(cfg, progress=False)["success_rate_per_round"] == {1: {"id": 1.0}}
    assert (out / "round_1/round.json").read_text() == before


def test_real_settings_are_checked_before_anything_runs(tmp_path, capsys):
    def cfg(**kw):
        return RPROConfig(task="reach", base="x", out=str(tmp_path / "o"), **kw)

    with pytest.raises(ValueError, match="backend 'real' needs robot_config: .*xtrainer.example.json"):
        cfg(backend="real").validate()
    with pytest.raises(ValueError, match="does not exist"):
        cfg(backend="real", robot_config=str(tmp_path / "none.json")).validate()
    with pytest.raises(ValueError, match="backend must be 'sim' or 'real', got 'robot'"):
        cfg(backend="robot").validate()
    with pytest.raises(ValueError, match="robot_config is for backend 'real'"):
        cfg(robot_config=str(EXAMPLE)).validate()
    with pytest.raises(ValueError, match="unknown split 'iid'"):  # a real split labels the scenes set up
        cfg(backend="real", robot_config=str(EXAMPLE), eval_splits="id,iid").validate()
    cfg(backend="real", robot_config=str(EXAMPLE)).validate()
    with pytest.raises(ValueError, match="a 'sim' bench was given for a run with backend 'real'"):
        run_rounds(cfg(backend="real", robot_config=str(EXAMPLE)), bench=SimulatedBench())
    assert isinstance(make_bench(cfg(backend="real", robot_config=str(EXAMPLE))), RealBench)  # connects on first use
    # The command line: the same options as the configuration's fields.
    assert train_main(["rpro", "--task", "reach", "--base", "x", "--out", str(tmp_path / "o"), "--backend", "real"]) == 2
    assert "needs robot_config" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_simulated_run_keeps_the_configuration_record_it_had_before_real_runs():
    rec = RPROConfig(task="usb", base="b", out="o").record()
    assert "backend" not in rec and "robot_config" not in rec and rec["task"] == "usb"
    real = RPROConfig(task="usb", base="b", out="o", backend="real", robot_config="r.json").record()
    assert real["backend"] == "real" and real["robot_config"] == "r.json"


@pytest.mark.timeout(300)
def test_the_runner_drives_base_evaluation_and_a_method_round_on_the_robot(tmp_path, vision_base, capsys):
    from benchmarks.run import main as run_main

    base, demos = vision_base
    out, runs = tmp_path / "results", tmp_path / "runs"
    rollout = ["c"] + [None] * 20  # start; no mark: the rollout runs to the time limit (12 steps)
    keys = ScriptedKeys(rollout + rollout  # the base on ID and OOD scenes
                        + ["c"] + [None] * 5 + ["i", "c"] + [None] * 4 + ["h"] + [None] * 30  # round 1's pair
                        + rollout  # round 1's policy on ID scenes
                        + ["c", None, None, "s"])  # and on OOD scenes, marked done at the 3rd step
    teleop = ScriptedTeleoperator(np.zeros((1, 14)), relative=True)
    argv = ["--task", "reach", "--backend", "real", "--base", str(base), "--demos", str(demos), "--methods", "rpro",
            "--profile", "smoke", "--out", str(out), "--runs", str(runs)]
    with emulated_config(tmp_path) as (path, _, _):
        assert run_main([*argv, "--robot-config", str(path)], keys=keys, teleop=teleop) == 0
    assert keys.exhausted
    err = capsys.readouterr().err
    assert "expert rollouts: skipped (no scripted expert on a real bench)" in err
    res = json.loads((out / "results.json").read_text())
    assert res["expert"] == {"skipped": "no scripted expert on a real bench"}
    assert res["settings"]["backend"] == "real" and res["demos"] == {"root": str(demos), "episodes": 1}
    assert {s: e["episodes"] for s, e in res["base"]["evaluation"].items()} == {"id": 1, "ood": 1}
    assert (base.parent / "bench_eval_real_id_1_s1000.jsonl").exists()  # the real session's rollout record
    run = res["methods"]["rpro"]["0"]
    assert run["config"]["backend"] == "real" and run["rounds"][0]["collection"]["pairs"] == 1
    assert run["final"]["id"]["success_rate"] == 0.0 and run["final"]["ood"]["success_rate"] == 1.0
    assert "| scripted expert | skipped: no scripted expert on a real bench |" in (out / "report.md").read_text()
