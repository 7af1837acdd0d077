"""The benchmark report's paired statistics, selection protocol and plots, from a tiny synthetic results.json."""

import json
import shutil
from pathlib import Path

import pytest

from benchmarks.report import write_report
from benchmarks.stats import mdd_mcnemar, mdd_unpaired

ROOT = Path(__file__).resolve().parents[1]


def _evaluation(successes: list[int]) -> dict:
    """An evaluation as the runner stores it: a summary and one rollout per env seed 1000, 1001, ..."""
    rollouts = [{"seed": 1000 + i, "success": bool(s), "completion_time_s": 10.0 if s else None}
                for i, s in enumerate(successes)]
    k, n = sum(successes), len(successes)
    return {"episodes": n, "successes": k, "success_rate": k / n, "wilson95": [0.0, 1.0],
            "mean_completion_time_s": 10.0 if k else None, "rollouts": rollouts}


def _run(final_id: list[int], final_ood: list[int], round_ids: list[list[int]]) -> dict:
    rounds = [{"round": k + 1, "collection": {"pairs": 2, "rollouts": 3, "failure_kinds": {"stall": 1}},
               "evaluation": {"id": _evaluation(ids)}, "seconds": 1.0} for k, ids in enumerate(round_ids)]
    return {"run_dir": "runs/x", "config": {}, "rounds": rounds, "curves": [],
            "final": {"id": _evaluation(final_id), "ood": _evaluation(final_ood)}}


# RPRO vs DAgger on ID: states 0-6 only RPRO, 7 only DAgger, 8 both, 9 neither: b = 7, c = 1.
RPRO_ID = [1, 1, 1, 1, 1, 1, 1, 0, 1, 0]
DAGGER_ID = [0, 0, 0, 0, 0, 0, 0, 1, 1, 0]
RPRO_OOD = [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
DAGGER_OOD = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
BASE_ID = [1, 1, 0, 0, 0, 0, 0, 0, 1, 0]
BASE_OOD = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1]


def _results() -> dict:
    profile = {"demos": 4, "sft_steps": 10, "pairs": "2,2", "steps": 3, "batch_size": 2, "rollouts": 10,
               "state_only": True}
    return {"command": "python -m benchmarks.run --task usb", "git_commit": "0" * 40,
            "settings": {"task": "usb", "profile": "test", "profile_settings": profile, "seeds": 1, "rounds": 2,
                         "backend": "sim"},
            "demos": {"episodes": 4}, "expert": {"id": _evaluation([1] * 10), "ood": _evaluation([1] * 10)},
            "base": {"evaluation": {"id": _evaluation(BASE_ID), "ood": _evaluation(BASE_OOD)}},
            "methods": {"rpro": {"0": _run(RPRO_ID, RPRO_OOD, [BASE_ID, RPRO_ID])},
                        "dagger": {"0": _run(DAGGER_ID, DAGGER_OOD, [DAGGER_ID, DAGGER_ID])}},
            "ablations": {"pro": {"0": _run(DAGGER_ID, DAGGER_OOD, [DAGGER_ID])},
                          "rpro": {"0": _run(RPRO_ID, RPRO_OOD, [RPRO_ID])}},
            "stage_seconds": {"methods": 1.0}, "versions": {}}


def _write(tmp_path: Path, results: dict) -> str:
    (tmp_path / "results.json").write_text(json.dumps(results))
    return write_report(tmp_path / "results.json").read_text()


def _row(report: str, start: str) -> list[str]:
    line = next(x for x in report.splitlines() if x.startswith(start))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_report_has_the_paired_mcnemar_rows_and_their_plots(tmp_path):
    report = _write(tmp_path, _results())
    assert "## FlowPRO (RPRO) against each comparator: paired exact McNemar" in report
    # b = 7, c = 1: one-sided exact p = 9/256, two-sided 18/256
    assert _row(report, "| DAgger | ID |")[2:5] == ["10", "7", "1"]
    assert _row(report, "| DAgger | ID |")[6:8] == [f"{9 / 256:.3g}", f"{18 / 256:.3g}"]
    assert _row(report, "| DAgger | OOD |")[2:5] == ["10", "1", "0"]
    pooled = _row(report, "| DAgger | ID + OOD |")
    assert pooled[2:5] == ["20", "8", "1"] and pooled[9] == "yes"  # p = (1 + 9)/512 < 0.05/2
    assert pooled[6] == f"{10 / 512:.3g}"
    # the SFT base is a comparator too: on ID both solve states 0, 1, 8, only RPRO states 2-6
    assert _row(report, "| SFT base | ID |")[2:5] == ["10", "5", "0"]
    assert _row(report, "| SFT base | OOD |")[2:5] == ["10", "1", "1"]
    assert "Bonferroni over 2 comparisons (the baselines and the SFT base) on the pooled one-sided p: α = 0.0250" \
        in report
    assert "### Minimum detectable difference" in report and "How to read a null result" in report
    mdd = _row(report, "| DAgger | 20 |")  # DAgger solves 2 of the 20 pooled states
    assert mdd[2:6] == ["10", f"{100 * mdd_unpaired(20, 0.1, 0.025):.0f}",
                        f"{100 * mdd_mcnemar(20, 0.1, 0.025):.0f}",
                        f"{100 * mdd_mcnemar(20, 0.1, 0.025, discordance='no_losses'):.0f}"]
    for png in ("sr_per_round.png", "paired_outcomes.png", "ablations.png"):
        assert (tmp_path / png).stat().st_size > 10_000
        assert f"![{png}]({png})" in report
    assert "The profile's values (learning rate, β, steps, pairs) were fixed in advance" in report


def test_report_prints_the_selection_protocol(tmp_path):
    selection = {"chosen": {"lr": 3e-5, "beta": 100.0}, "tuning_seeds": [0, 1, 2]}
    report = _write(tmp_path, {**_results(), "selection": selection})
    section = report.split("## Selection protocol")[1].split("\n## ")[0]
    assert "- chosen:\n  - lr: 3e-05\n  - beta: 100.0" in section and "- tuning_seeds: [0, 1, 2]" in section
    assert "fixed in advance" not in section


def test_report_refuses_rollouts_on_different_initial_states(tmp_path):
    results = _results()
    results["methods"]["dagger"]["0"]["final"]["id"]["rollouts"][3]["seed"] = 2003
    with pytest.raises(ValueError, match=r"only the method has \[1003\], only the comparator has \[2003\]"):
        _write(tmp_path, results)


def test_report_refuses_methods_trained_on_different_seeds(tmp_path):
    results = _results()
    results["methods"]["dagger"]["1"] = results["methods"]["dagger"].pop("0")
    with pytest.raises(ValueError, match="RPRO and dagger have different training seeds"):
        _write(tmp_path, results)


def test_report_on_the_committed_usb_results(tmp_path):
    committed = ROOT / "results/usb/pre_bridge_fix/results.json"  # a real run's results, kept for this
    shutil.copy(committed, tmp_path / "results.json")
    report = write_report(tmp_path / "results.json").read_text()
    results = json.loads(committed.read_text())
    final = {m: by_seed["0"]["final"] for m, by_seed in results["methods"].items()}
    final["base"] = results["base"]["evaluation"]
    names = {"dagger": "DAgger", "dagger_buffered": "DAgger-Buffered", "pi06star": "π0.6*", "tpo": "TPO",
             "base": "SFT base"}
    for m, name in names.items():
        for split, label in (("id", "ID"), ("ood", "OOD")):
            n, b, c = (int(x) for x in _row(report, f"| {name} | {label} |")[2:5])
            # b − c is the difference of the two success counts, whatever the pairing
            assert (n, b - c) == (final["rpro"][split]["episodes"],
                                  final["rpro"][split]["successes"] - final[m][split]["successes"])
    assert (tmp_path / "paired_outcomes.png").exists()
