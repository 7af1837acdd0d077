"""Evaluate a task's scripted expert: ``python -m envs.expert_eval --task usb --episodes 100 --split id --seed 0``.

Prints one JSON line: success rate (with a Wilson 95 % interval), mean completion time and
failure counts by kind (a failure kind counts once per episode in which it was seen).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from functools import partial

import envs  # noqa: F401
from envs.rollout import parallel_map
from envs.tasks import TASKS, check_split, get_task

_ENVS: dict = {}


def _episode(task: str, split: str, seed: int) -> dict:
    """One expert episode in a worker (the env is built once per process)."""
    from envs.env import XTrainerEnv
    from envs.rollout import ExpertPolicy, rollout

    env = _ENVS.get((task, split))
    if env is None:
        env = _ENVS[(task, split)] = XTrainerEnv(task=task, obs_mode="state", split=split)
    return rollout(env, ExpertPolicy(env, seed), seed=seed, n_action_steps=1).summary()


def run_episodes(task: str, split: str, seeds: list[int], workers: int | None = None) -> list[dict]:
    """Expert episodes over ``seeds``, in parallel over the machine's cores."""
    return parallel_map(partial(_episode, task, split), seeds, workers)


def summarize(results: list[dict]) -> dict:
    from statsmodels.stats.proportion import proportion_confint

    n = len(results)
    k = sum(r["success"] for r in results)
    lo, hi = proportion_confint(k, n, alpha=0.05, method="wilson")
    times = [r["completion_time_s"] for r in results if r["success"]]
    fails = Counter(kind for r in results for kind in r["failures_seen"])
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n,
        "wilson95": [round(lo, 4), round(hi, 4)],
        "mean_completion_time_s": round(sum(times) / len(times), 3) if times else None,
        "failures": dict(sorted(fails.items())),
        "terminated_by": dict(Counter(r["terminated_by"] for r in results)),
        "reached_stage": dict(Counter(s for r in results for s in r.get("stages_seen", []))),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help=f"one of: {', '.join(sorted(TASKS))}")
    ap.add_argument("--episodes", type=int, default=100)
    ap.add_argument("--split", default="id")
    ap.add_argument("--seed", type=int, default=0, help="episode i uses seed + i")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    try:
        get_task(args.task)
        check_split(args.split)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    results = run_episodes(args.task, args.split, list(range(args.seed, args.seed + args.episodes)), args.workers)
    out = {"task": args.task, "split": args.split, "seed": args.seed, **summarize(results),
           "failed_seeds": [r["seed"] for r in results if not r["success"]]}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
