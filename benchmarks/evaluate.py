"""Closed-loop evaluation of a trained policy.

    python -m benchmarks.evaluate --task usb --policy runs/usb_sft --rollouts 50 --split id --seed 0

Rollouts go through the backend-agnostic loop with chunked execution (re-plan every
``n_action_steps``), in parallel over the machine's cores. Writes one JSON line per rollout
(seed, success, completion time, failure kinds) to ``--out`` (default ``<policy>/eval_<split>.jsonl``)
and prints a summary: SR with a Wilson 95 % interval and mean completion time. ``--env-batch N``
runs N environments per worker in lock-step with one batched policy call per re-plan (faster; its
chunks differ from the default's by float rounding, see :class:`BatchPolicyRunner`).

``--task`` also takes a variant of a task, its constructor's options written after a colon:

    python -m benchmarks.evaluate --task usb:clearance_m=0.001,lead_m=0.0 --policy runs/usb_sft --rollouts 10

Every worker builds that variant (the spec travels to it as text); the summary records the task
as given.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import envs  # noqa: F401  (headless rendering before mujoco loads)
from envs.cli import run_command
from envs.summary import summarize
from envs.tasks import task_help
# The policy runtime lives in flowpro.rollout; its names stay importable from here (scripts, results/).
from flowpro.rollout import (EVAL_SEED, BatchPolicyRunner, PolicyRunner, TemporalEnsemble, evaluate,  # noqa: F401
                             resolve_policy_dir, sample_chunks, worker_env_policy, worker_envs_policy)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help=task_help() + " (variants: --backend sim only)")
    ap.add_argument("--policy", required=True, help="run directory or policy directory")
    ap.add_argument("--rollouts", type=int, default=50)
    ap.add_argument("--split", default="id")
    ap.add_argument("--seed", type=int, default=EVAL_SEED, help="rollout i uses seed + i (demos use 0, 1, ...)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--n-action-steps", type=int, default=None, help="re-plan period (default: the policy's)")
    ap.add_argument("--temporal-ensemble", type=float, default=None, metavar="K",
                    help="ACT-style temporal ensembling with weights exp(-K*i); re-plans every step")
    ap.add_argument("--env-batch", type=int, default=1,
                    help="environments per worker in lock-step, one batched policy call per re-plan (not bitwise the "
                         "default's rollouts: see BatchPolicyRunner)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--backend", default="sim", choices=("sim", "real"))
    ap.add_argument("--robot-config", default=None, help="--backend real: the X-Trainer configuration file "
                    "(see hardware/xtrainer.example.json)")
    args = ap.parse_args(argv)
    if args.backend == "real":
        return _main_real(args)
    command = "python -m benchmarks.evaluate " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    return run_command(lambda: _evaluate_sim(args, command))


def _evaluate_sim(args: argparse.Namespace, command: str) -> dict:
    results = evaluate(args.task, args.policy, list(range(args.seed, args.seed + args.rollouts)), args.split,
                       args.workers, args.n_action_steps, args.temporal_ensemble, env_batch=args.env_batch)
    out = Path(args.out) if args.out else resolve_policy_dir(args.policy).parent / f"eval_{args.split}.jsonl"
    with out.open("w") as f:
        for r in results:
            f.write(json.dumps(r) + "\n")
    summary = {"command": command, "task": args.task, "policy": str(args.policy), "split": args.split, "seed": args.seed,
               "n_action_steps": args.n_action_steps, "temporal_ensemble": args.temporal_ensemble,
               "env_batch": args.env_batch,
               **summarize(results)}
    out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _main_real(args) -> int:
    """The same rollouts on the real X-Trainer, one after another (:func:`hardware.run.evaluate_real`)."""
    if not args.robot_config:
        print("error: --backend real needs --robot-config FILE: the arms' addresses and firmware, the grippers' "
              "serial ports and calibration, the cameras (see hardware/xtrainer.example.json)", file=sys.stderr)
        return 2
    from hardware.config import load_robot_config
    from hardware.errors import HardwareError
    from hardware.run import bench_error_message, evaluate_real

    def body() -> dict:
        out = Path(args.out) if args.out else resolve_policy_dir(args.policy).parent / "eval_real.jsonl"
        results = evaluate_real(load_robot_config(args.robot_config), args.policy, args.rollouts, out, task=args.task,
                                seed=args.seed, n_action_steps=args.n_action_steps)
        return {"task": args.task, "policy": str(args.policy), "backend": "real", **summarize(results)}

    # A fault: the arms are stopped and the interrupted rollout logged (hardware.interrupted).
    return run_command(body, faults=(HardwareError,), fault_message=bench_error_message)


if __name__ == "__main__":
    sys.exit(main())
