"""Pairs collected per minute and tuple-building throughput on USB in simulation (issue 5).

    python -m benchmarks.perf.collect_speed --policy runs/usb/sft_xxx [--pairs 10] [--out results/perf/collect_speed.json]

Collects ``--pairs`` pairs with the oracle from the given policy into a temporary directory
(all cores, the default operator), then times building every pair's preference tuples (Smooth
Interpolation, Cases 1-2) from the stored trajectories.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import envs  # noqa: F401
from benchmarks.perf import write_result
from flowpro.collect import collect
from flowpro.tuples import build_pair_tuples, load_pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--out", default="results/perf/collect_speed.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        summary = collect(args.task, args.policy, args.pairs, 1, Path(tmp) / "pairs", seed=900_000, progress=False)
        pairs = load_pairs(Path(tmp) / "pairs")
        t0 = time.perf_counter()
        n = sum(len(build_pair_tuples(p.states_l, p.actions_l, p.states_w, p.actions_w, 30)) for p in pairs)
        dt = time.perf_counter() - t0
        case1 = sum(max(0, len(p.states_l) - 30) for p in pairs)
    result = {
        "command": f"python -m benchmarks.perf.collect_speed --policy {args.policy} --pairs {args.pairs}",
        "collection": {k: summary[k] for k in ("pairs", "rollouts", "interventions", "seconds", "pairs_per_min",
                                               "failure_kinds") if k in summary},
        "tuples": {"total": n, "case1_bridges": case1, "seconds": round(dt, 3), "tuples_per_s": round(n / dt, 1),
                   "mean_tau_l_frames": round(sum(len(p.states_l) for p in pairs) / len(pairs), 1),
                   "mean_tau_w_frames": round(sum(len(p.states_w) for p in pairs) / len(pairs), 1)},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
