"""Benchmark runner: ``python -m benchmarks.run --task usb [--profile default|smoke]``.

The full FlowPRO comparison (SFT base, K rounds per method and baseline, statistics, report)
arrives with issues 4-7. Until then this runs what exists, and says so:

1. the task's scripted expert, evaluated closed loop on ID and OOD initial states
   (success rate with Wilson 95 % interval, completion time, failure kinds);
2. the SFT demonstration dataset (LeRobotDataset v3.0), recorded or resumed under ``--data``.

Results go to ``<out>/expert.json`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import envs  # noqa: F401
from envs.expert_eval import run_episodes, summarize
from envs.record import record
from envs.tasks import get_task

PROFILES = {
    # name: (expert rollouts per split, SFT demonstrations)
    "default": (100, 50),
    "smoke": (6, 2),
}
NOT_YET = ("note: policies, SFT training, FlowPRO rounds, baselines and the statistical report are "
           "not implemented yet (issues 4-7); this run evaluates the scripted expert and records the "
           "SFT demonstrations only.")


def _git_commit() -> str | None:
    """HEAD, suffixed with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--profile", default="default", choices=sorted(PROFILES))
    ap.add_argument("--out", default=None, help="results directory (default results/<task>)")
    ap.add_argument("--data", default=None, help="data directory (default data/<task>)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        get_task(args.task)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    task = args.task.lower()
    out = Path(args.out or f"results/{task}")
    data = Path(args.data or f"data/{task}")
    n_eval, n_demos = PROFILES[args.profile]
    print(NOT_YET, file=sys.stderr)

    t0 = time.perf_counter()
    evaluation = {}
    for split in ("id", "ood"):
        print(f"[1/2] expert rollouts: {task}/{split}, {n_eval} episodes", file=sys.stderr)
        seeds = list(range(args.seed, args.seed + n_eval))
        evaluation[split] = summarize(run_episodes(task, split, seeds))
        print(json.dumps({"split": split, **evaluation[split]}), file=sys.stderr)
    print(f"[2/2] SFT demonstrations -> {data / 'demos'} ({n_demos} episodes, resumable)", file=sys.stderr)
    demos = record(task, n_demos, "id", data / "demos", seed=args.seed)

    result = {
        "command": "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "task": task,
        "profile": args.profile,
        "implemented": ["scripted expert evaluation", "SFT demonstration recording"],
        "not_implemented_yet": ["policies / SFT", "FlowPRO rounds", "baselines", "statistics report"],
        "expert": evaluation,
        "demos": demos,
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "expert.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("task", "profile", "expert")}))
    print(f"wrote {out / 'expert.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
