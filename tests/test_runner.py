"""The main job's entry point (what `make benchmark` runs), on its smoke profile."""

import json

from benchmarks.run import main


def test_runner_smoke_profile_writes_results(tmp_path, capsys):
    out, data, runs = tmp_path / "results", tmp_path / "data", tmp_path / "runs"
    argv = ["--task", "usb", "--profile", "smoke", "--out", str(out), "--data", str(data), "--runs", str(runs)]
    assert main(argv) == 0
    result = json.loads((out / "expert.json").read_text())
    assert result["expert"]["id"]["episodes"] == 6 and result["expert"]["ood"]["episodes"] == 6
    assert result["expert"]["id"]["success_rate"] >= 5 / 6
    assert result["demos"]["episodes"] == 2
    assert (data / "demos/meta/info.json").exists()
    base = json.loads((out / "sft_base.json").read_text())
    assert [len(base["evaluation"][s]["rollouts"]) for s in ("id", "ood")] == [2, 2]
    assert base["train_config"]["steps"] == 20
    assert "not implemented yet" in capsys.readouterr().err
    # Same configuration again: the SFT run is reused, not retrained.
    assert main(argv) == 0
    assert "reusing" in capsys.readouterr().err
    assert len(list(runs.iterdir())) == 1


def test_runner_rejects_unknown_task(capsys):
    assert main(["--task", "pack"]) == 2
    assert "valid tasks: reach, usb" in capsys.readouterr().err
