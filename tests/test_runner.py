"""The main job's entry point (what `make benchmark` runs), on its smoke profile."""

import json

from benchmarks.run import main


def test_runner_smoke_profile_writes_results(tmp_path, capsys):
    out, data = tmp_path / "results", tmp_path / "data"
    assert main(["--task", "usb", "--profile", "smoke", "--out", str(out), "--data", str(data)]) == 0
    result = json.loads((out / "expert.json").read_text())
    assert result["expert"]["id"]["episodes"] == 6 and result["expert"]["ood"]["episodes"] == 6
    assert result["expert"]["id"]["success_rate"] >= 5 / 6
    assert result["demos"]["episodes"] == 2
    assert (data / "demos/meta/info.json").exists()
    assert "not implemented yet" in capsys.readouterr().err


def test_runner_rejects_unknown_task(capsys):
    assert main(["--task", "pack"]) == 2
    assert "valid tasks: reach, usb" in capsys.readouterr().err
