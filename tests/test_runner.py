"""The main job's entry point (what `make benchmark` runs), on its smoke profile."""

import json

from benchmarks.report import write_report
from benchmarks.run import main


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


def test_runner_rejects_bad_names_and_an_unconfigured_robot(capsys):
    assert main(["--task", "pack"]) == 2
    assert "valid tasks: reach, usb" in capsys.readouterr().err
    assert main(["--task", "usb", "--methods", "rpro,ppo"]) == 2
    assert "valid methods: rpro, dagger, dagger_buffered, pi06star, tpo" in capsys.readouterr().err
    assert main(["--task", "usb", "--policy", "octo"]) == 2
    assert "valid policies" in capsys.readouterr().err
    assert main(["--task", "usb", "--backend", "real"]) == 2
    assert "needs a configured X-Trainer" in capsys.readouterr().err


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
