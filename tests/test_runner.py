"""The main job's entry point (what `make benchmark` runs), on its smoke profile."""

import json
from pathlib import Path

import pytest

from benchmarks.report import write_report
from benchmarks.run import main
from flowpro.policies import FlowPolicy


def test_runner_smoke_profile_runs_every_method_and_writes_a_recomputable_report(tmp_path, capsys):
    out, data, runs = tmp_path / "results", tmp_path / "data", tmp_path / "runs"
    argv = ["--task", "usb", "--profile", "smoke", "--out", str(out), "--data", str(data), "--runs", str(runs),
            "--ablations"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["expert"]["id"]["episodes"] == 4 and res["demos"]["episodes"] == 2
    assert len(list((tmp_path / "runs").glob("pairs_round1_*"))) == 1  # round 1 collected once for all
    assert set(res["methods"]) == {"rpro", "dagger", "dagger_buffered", "pi06star", "tpo"}
    assert set(res["ablations"]) == {"sft", "dpo", "dpo_sft", "pro", "rpro"}
    for by_seed in (*res["methods"].values(), *res["ablations"].values()):
        run = by_seed["0"]
        assert [len(run["final"][s]["rollouts"]) for s in ("id", "ood")] == [1, 1]
        assert run["rounds"][0]["collection"]["pairs"] == 1
    report = (out / "report.md").read_text()
    assert "Cochran–Mantel–Haenszel" in report and "Sign test" in report and "FlowPRO (RPRO)" in report
    assert (out / "sr_per_round.png").exists() and (out / "implicit_rewards.png").exists()
    # the report is a pure function of results.json
    (out / "report.md").unlink()
    write_report(out / "results.json")
    assert (out / "report.md").read_text() == report
    # a rerun reuses every cached stage
    capsys.readouterr()
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().err
    # a different configuration into the same results directory is refused unless --force
    assert main(argv[:-1] + ["--no-ablations"]) == 2
    assert "another configuration" in capsys.readouterr().err


@pytest.mark.slow  # ~5-10 min on 2 cores: vision rollouts of USB with a SmolVLA (CI covers the parts in test_train)
def test_runner_trains_and_fine_tunes_a_lerobot_smolvla_base(tmp_path):
    tiny = json.dumps({"tiny_vlm": {"image_size": 32}, "resize_imgs_with_padding": [32, 32], "num_vlm_layers": 2})
    out, data, runs = tmp_path / "results", tmp_path / "data", tmp_path / "runs"
    assert main(["--task", "usb", "--profile", "smoke", "--policy", "smolvla", "--policy-model", tiny,
                 "--methods", "rpro", "--no-ablations", "--out", str(out), "--data", str(data),
                 "--runs", str(runs)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["policy"] == "smolvla" and res["settings"]["policy_model"]["num_vlm_layers"] == 2
    train = res["base"]["train_config"]
    assert train["policy"] == "smolvla" and not train["state_only"]
    run = res["methods"]["rpro"]["0"]
    assert run["rounds"][0]["collection"]["pairs"] == 1
    final = FlowPolicy.load(Path(run["run_dir"]) / "round_1/train/policy")
    assert type(final).__name__ == "SmolVLAAdapter" and final.config.relative_actions


def test_runner_rejects_bad_names(capsys):
    assert main(["--task", "pack"]) == 2
    assert "valid tasks: reach, usb" in capsys.readouterr().err
    assert main(["--task", "usb", "--methods", "rpro,ppo"]) == 2
    assert "valid methods: rpro, dagger, dagger_buffered, pi06star, tpo" in capsys.readouterr().err
    assert main(["--task", "usb", "--policy", "octo"]) == 2
    assert "valid policies" in capsys.readouterr().err
    assert main(["--task", "usb", "--policy", "smolvla", "--policy-model", "[1]"]) == 2
    assert "--policy-model must be a JSON object" in capsys.readouterr().err


def test_runner_says_what_a_real_run_needs(tmp_path, capsys):
    from hardware.config import EXAMPLE

    assert main(["--task", "usb", "--backend", "real"]) == 2
    err = capsys.readouterr().err
    assert "--backend real needs --robot-config FILE" in err and "xtrainer.example.json" in err
    assert "--base RUN: the SFT base policy" in err and "or --demos DIR: real demonstrations" in err
    assert "no scripted expert on a real bench" in err
    # A config that does not load and a base that is not a policy: both named.
    assert main(["--task", "usb", "--backend", "real", "--robot-config", str(tmp_path / "none.json"),
                 "--base", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "--base: no policy checkpoint" in err
    # A bare policy directory does not say which demonstrations trained it.
    policy = tmp_path / "policy"
    policy.mkdir()
    (policy / "config.json").write_text("{}")
    (policy / "model.safetensors").write_bytes(b"")
    assert main(["--task", "usb", "--backend", "real", "--robot-config", str(EXAMPLE), "--base", str(policy)]) == 2
    assert "--demos DIR: " in capsys.readouterr().err
    assert main(["--task", "usb", "--backend", "real", "--robot-config", str(EXAMPLE), "--demos", str(tmp_path)]) == 2
    assert "are not a LeRobotDataset (no meta/info.json)" in capsys.readouterr().err
    # The real-bench options are refused in simulation rather than ignored.
    assert main(["--task", "usb", "--base", str(policy)]) == 2
    assert "--base: only with --backend real" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_real_backend_entry_points_say_what_to_configure(capsys):
    from benchmarks.evaluate import main as evaluate_main
    from flowpro.collect import main as collect_main

    assert evaluate_main(["--task", "usb", "--policy", "x", "--backend", "real"]) == 2
    assert "--robot-config" in capsys.readouterr().err
    assert collect_main(["--task", "usb", "--policy", "x", "--pairs", "1", "--round", "1", "--root", "x",
                         "--backend", "real"]) == 2
    assert "xtrainer.example.json" in capsys.readouterr().err
    assert evaluate_main(["--task", "usb", "--policy", "x", "--backend", "real", "--robot-config", "/no/such.json",
                          "--out", "unused.jsonl"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_sft_base_is_retrained_for_demos_of_another_simulated_model(tmp_path):
    """The base's cache key names the model that recorded the demos, not only their count: a
    changed bench (e.g. its gripper) must not reuse a base trained on the old one."""
    import shutil

    from benchmarks.run import PROFILES, _stage_sft
    from envs.dataset import MARKER
    from envs.record import record

    demos = tmp_path / "demos_a"
    record("reach", 2, "id", demos, obs_mode="state", progress=False)
    other = tmp_path / "demos_b"
    shutil.copytree(demos, other)
    marker = json.loads((other / MARKER).read_text())
    marker["model_fingerprint"] = "another-model"
    (other / MARKER).write_text(json.dumps(marker))
    smoke = PROFILES["smoke"]
    a = _stage_sft("reach", demos, tmp_path / "runs", smoke, 0)
    assert _stage_sft("reach", demos, tmp_path / "runs", smoke, 0) == a  # same data: reused
    assert _stage_sft("reach", other, tmp_path / "runs", smoke, 0) != a
