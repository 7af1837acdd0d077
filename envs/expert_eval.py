"""Evaluate a task's scripted expert: ``python -m envs.expert_eval --task usb --episodes 100 --split id --seed 0``.

Prints one JSON line: success rate (with a Wilson 95 % interval), mean completion time and
failure counts by kind (a failure kind counts once per episode in which it was seen).
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial

import envs  # noqa: F401
from envs.rollout import parallel_map
from envs.summary import summarize
from envs.tasks import TaskSpec, check_split, get_task, spec_text, task_help

_ENVS: dict = {}


def _episode(task: str, split: str, seed: int) -> dict:
    """One expert episode in a worker (the env is built once per process)."""
    from envs.env import XTrainerEnv
    from envs.rollout import ExpertPolicy, rollout

    env = _ENVS.get((task, split))
    if env is None:
        env = _ENVS[(task, split)] = XTrainerEnv(task=task, obs_mode="state", split=split)
    return rollout(env, ExpertPolicy(env, seed), seed=seed, n_action_steps=1).summary()


def run_episodes(task: str | TaskSpec, split: str, seeds: list[int], workers: int | None = None) -> list[dict]:
    """Expert episodes over ``seeds``, in parallel over the machine's cores; ``task``: a name or a
    variant (``"usb:lead_m=0.0"``), which reaches the workers as its text."""
    task = spec_text(task)
    return parallel_map(partial(_episode, task, split), seeds, workers)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help=task_help())
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
