"""Benchmark runner: ``python -m benchmarks.run --task usb``.

The full FlowPRO comparison (SFT base, K rounds per method, statistics, report) arrives with
the later issues; until then this runs what exists and says so: closed-loop rollouts of the
task's scripted expert through the backend-agnostic rollout loop, with a Wilson interval.
"""

from __future__ import annotations

import argparse
import json
import sys

import envs  # noqa: F401
from envs.env import XTrainerEnv
from envs.rollout import ExpertPolicy, rollout
from envs.tasks import TASKS

NOT_YET = ("SFT policy training, FlowPRO rounds, baselines and the statistical report are not "
           "implemented yet (issues 4-7); this run evaluates the scripted expert only.")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--rollouts", type=int, default=20)
    ap.add_argument("--split", default="id")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.task.lower() not in TASKS:
        print(f"error: task {args.task!r} is not available yet; available tasks: {', '.join(sorted(TASKS))}",
              file=sys.stderr)
        return 2
    print(NOT_YET, file=sys.stderr)
    env = XTrainerEnv(task=args.task, obs_mode="state", split=args.split)
    results = [rollout(env, ExpertPolicy(env, seed=args.seed + i), seed=args.seed + i, n_action_steps=1)
               for i in range(args.rollouts)]
    env.close()
    successes = sum(r.success for r in results)
    print(json.dumps({"task": args.task, "split": args.split, "policy": "scripted_expert",
                      "rollouts": len(results), "successes": successes,
                      "success_rate": successes / len(results)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
