"""Benchmark runner: ``python -m benchmarks.run --task usb [--profile default|smoke]``.

The FlowPRO rounds, the baselines and the statistical report arrive with issues 5-7. Until
then this runs what exists, and says so:

1. the task's scripted expert, evaluated closed loop on ID and OOD initial states
   (success rate with Wilson 95 % interval, completion time, failure kinds);
2. the SFT demonstration dataset (LeRobotDataset v3.0), recorded or resumed under ``--data``;
3. the SFT base policy (stage 1), trained or resumed under ``--runs`` — a run directory named
   by a hash of its configuration and dataset size, so the same configuration is reused;
4. the base policy evaluated closed loop on ID and OOD.

Results go to ``<out>/expert.json`` and ``<out>/sft_base.json`` with the command that made them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import envs  # noqa: F401
from benchmarks.evaluate import evaluate
from envs.expert_eval import run_episodes, summarize
from envs.record import record
from envs.tasks import get_task
from flowpro.train import SFTConfig, train_sft

@dataclass(frozen=True)
class Profile:
    expert_rollouts: int  # per split
    demos: int
    sft_steps: int
    sft_batch: int
    policy_rollouts: int  # per split
    state_only: bool = True  # privileged object poses instead of cameras (CPU budget)
    sft_model: str = '{"relative_actions": true}'  # JSON overrides of the policy config


PROFILES = {
    "default": Profile(expert_rollouts=100, demos=100, sft_steps=8000, sft_batch=64, policy_rollouts=50),
    "smoke": Profile(expert_rollouts=6, demos=2, sft_steps=20, sft_batch=16, policy_rollouts=2),
}
NOT_YET = ("note: the FlowPRO rounds, the baselines and the statistical report are not implemented yet "
           "(issues 5-7); this run evaluates the scripted expert, records the SFT demonstrations, trains "
           "the SFT base policy and evaluates it.")


def _git_commit() -> str | None:
    """HEAD, suffixed with ``+dirty`` when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def _stage_sft(task: str, demos_root: Path, runs: Path, profile: Profile, seed: int) -> Path:
    """Train (or reuse, or resume) the SFT base policy; the run directory is named by its config."""
    info = json.loads((demos_root / "meta/info.json").read_text())
    cfg = SFTConfig(task=task, dataset=str(demos_root), out="", state_only=profile.state_only,
                    steps=profile.sft_steps, batch_size=profile.sft_batch, seed=seed,
                    save_every=max(1, profile.sft_steps // 8), model=profile.sft_model)
    key = {**asdict(cfg), "out": None, "dataset": None, "dataset_episodes": info["total_episodes"]}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
    cfg.out = str(runs / f"sft_{digest}")
    policy_dir = Path(cfg.out) / "policy"
    if policy_dir.exists():
        print(f"reusing {policy_dir}", file=sys.stderr)
        return policy_dir
    return train_sft(cfg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--profile", default="default", choices=sorted(PROFILES))
    ap.add_argument("--out", default=None, help="results directory (default results/<task>)")
    ap.add_argument("--data", default=None, help="data directory (default data/<task>)")
    ap.add_argument("--runs", default=None, help="training runs directory (default runs/<task>)")
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
    runs = Path(args.runs or f"runs/{task}")
    profile = PROFILES[args.profile]
    command = "python -m benchmarks.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    provenance = {"command": command, "task": task, "profile": args.profile, "profile_settings": asdict(profile),
                  "git_commit": _git_commit(), "python": platform.python_version()}
    print(NOT_YET, file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    expert = {}
    for split in ("id", "ood"):
        print(f"[1/4] expert rollouts: {task}/{split}, {profile.expert_rollouts} episodes", file=sys.stderr)
        seeds = list(range(args.seed, args.seed + profile.expert_rollouts))
        expert[split] = summarize(run_episodes(task, split, seeds))
        print(json.dumps({"split": split, **expert[split]}), file=sys.stderr)
    print(f"[2/4] SFT demonstrations -> {data / 'demos'} ({profile.demos} episodes, resumable)", file=sys.stderr)
    demos = record(task, profile.demos, "id", data / "demos", seed=args.seed)
    (out / "expert.json").write_text(json.dumps({**provenance, "expert": expert, "demos": demos,
                                                 "seconds": round(time.perf_counter() - t0, 1)}, indent=2) + "\n")

    t1 = time.perf_counter()
    print(f"[3/4] SFT base policy ({profile.sft_steps} steps, "
          f"{'state-only' if profile.state_only else 'vision'})", file=sys.stderr)
    policy_dir = _stage_sft(task, data / "demos", runs, profile, args.seed)
    base = {}
    for split in ("id", "ood"):
        print(f"[4/4] SFT base rollouts: {task}/{split}, {profile.policy_rollouts} episodes", file=sys.stderr)
        # Evaluation seeds start at 1000: demos use 0, 1, ... so no test scene was a training scene.
        seeds = list(range(1000 + args.seed, 1000 + args.seed + profile.policy_rollouts))
        results = evaluate(task, policy_dir, seeds, split)
        base[split] = {**summarize(results), "rollouts": results}
        print(json.dumps({"split": split, **{k: v for k, v in base[split].items() if k != "rollouts"}}), file=sys.stderr)
    train_cfg = json.loads((policy_dir.parent / "train_config.json").read_text())
    (out / "sft_base.json").write_text(json.dumps({**provenance, "policy_dir": str(policy_dir), "train_config": train_cfg,
                                                   "evaluation": base,
                                                   "seconds": round(time.perf_counter() - t1, 1)}, indent=2) + "\n")
    print(json.dumps({"task": task, "profile": args.profile,
                      "expert_sr": {k: v["success_rate"] for k, v in expert.items()},
                      "sft_base_sr": {k: v["success_rate"] for k, v in base.items()}}))
    print(f"wrote {out / 'expert.json'} and {out / 'sft_base.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
