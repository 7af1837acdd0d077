"""Demonstration recording throughput (episodes per minute, three cameras) and size per episode.

    python -m benchmarks.perf.demo_throughput [--task usb] [--episodes 10] [--out results/perf/demo_throughput.json]

Target (issue 3): >= 6 episodes/min on the 2-core machine with three 96x96 cameras. The
first episode pays the one-off imports of LeRobot/PyTorch; it is reported separately.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import envs  # noqa: F401
from benchmarks.perf import write_result
from envs.record import record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--out", default="results/perf/demo_throughput.json")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp()) / "demos"
    try:
        t0 = time.perf_counter()
        first = record(args.task, 1, "id", root, progress=False)
        t1 = time.perf_counter()
        rest = record(args.task, args.episodes, "id", root, progress=False)
        t2 = time.perf_counter()
        size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        info = json.loads((root / "meta/info.json").read_text())
    finally:
        shutil.rmtree(root.parent, ignore_errors=True)
    n_rest = args.episodes - 1
    result = {
        "command": f"python -m benchmarks.perf.demo_throughput --task {args.task} --episodes {args.episodes}",
        "task": args.task,
        "cameras": "3 x 96x96 RGB, stored as PNG images in parquet",
        "episodes": info["total_episodes"],
        "frames": info["total_frames"],
        "first_episode_s_incl_imports": round(t1 - t0, 2),
        "steady_episodes_per_min": round(60 * n_rest / (t2 - t1), 2),
        "overall_episodes_per_min": round(60 * args.episodes / (t2 - t0), 2),
        "mean_episode_frames": round(info["total_frames"] / info["total_episodes"], 1),
        "dataset_bytes_per_episode": int(size / info["total_episodes"]),
        "discarded_failures": first["discarded_failures"] + rest["discarded_failures"],
        "target_episodes_per_min": 6.0,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version()},
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
