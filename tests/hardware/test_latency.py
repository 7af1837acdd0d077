"""The hardware latency benchmark runs end to end on a few trials (its numbers go to results/perf/)."""

import json

from benchmarks.perf import hardware_latency as hl


def test_benchmark_measures_latency_and_loop_period(tmp_path):
    out = hl.main(["--trials", "4", "--steps", "6", "--out", str(tmp_path / "h.json")])
    lat = out["command_to_feedback"]["servoj_to_changed_qtarget_ms"]
    assert out["command_to_feedback"]["missed"] == 0 and lat["n"] == 4
    assert 0 < lat["p50"] < 100  # one 8 ms feedback tick plus loopback, with room for a loaded machine
    loop = out["command_loop_30hz"]
    assert loop["loop_period_ms"]["n"] == 5 and 25 < loop["loop_period_ms"]["p50"] < 60
    assert loop["controller_servoj_period_ms"]["n"] >= 5
    saved = json.loads((tmp_path / "h.json").read_text())
    assert saved["command"].startswith("python -m benchmarks.perf.hardware_latency --trials 4")
