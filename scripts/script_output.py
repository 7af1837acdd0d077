"""What every diagnostic script in scripts/ writes: the command and commit that made a result,
the result as JSON (printed, and written whole to ``--out``), and an evaluation on the tuning scenes;
with the few helpers the diagnostics share (the base's policy and data, steps since a rollback)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.evaluate import evaluate, resolve_policy_dir
from benchmarks.run import _git_commit
from envs.expert_eval import summarize
from flowpro.policies import FlowPolicy
from flowpro.tuples import SOURCE_W


def provenance(script: str, argv: list[str] | None) -> dict:
    """``command`` and ``git_commit`` (``+dirty`` when tracked files differ) of a script's run."""
    return {"command": f"python scripts/{script} " + " ".join(argv or sys.argv[1:]), "git_commit": _git_commit()}


def write_result(result: dict, out: str | None, shown: object = None) -> None:
    """Print ``shown`` (default: the whole result) and write the result to ``out`` if given."""
    print(json.dumps(result if shown is None else shown, indent=1))
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(result, indent=1) + "\n")


def tuning_evaluation(policy_dir: Path, first: int, rollouts: int, workers: int) -> tuple[list[dict], dict]:
    """USB ID rollouts on the tuning scenes ``first ..``: the rollouts and their summary."""
    runs = evaluate("usb", policy_dir, list(range(first, first + rollouts)), "id", workers)
    s = summarize(runs)
    return runs, {"scenes": f"ID tuning seeds {first}..{first + rollouts - 1}",
                  "evaluation": {k: s[k] for k in ("episodes", "successes", "success_rate", "wilson95",
                                                   "reached_stage", "terminated_by")}}


def write_rollouts(path: Path, rollouts: list[dict]) -> None:
    """One JSON line per rollout, the format of ``benchmarks.evaluate --out``."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rollouts))


def add_evaluation_arguments(ap: argparse.ArgumentParser) -> None:
    """``--rollouts``, ``--seed`` (the first tuning scene), ``--workers`` and ``--result``."""
    ap.add_argument("--rollouts", type=int, default=100)
    ap.add_argument("--seed", type=int, default=5000, help="first tuning scene")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--result", default=None, help="where the result JSON is written")


def load_base(base: str) -> tuple[Path, FlowPolicy, str, dict]:
    """A base run's policy directory, the policy, its demonstrations' root and the dataset
    keywords (images, privileged state) that match the policy."""
    base_dir = resolve_policy_dir(base)
    policy = FlowPolicy.load(base_dir)
    demos = json.loads((base_dir.parent / "train_config.json").read_text())["dataset"]
    c = policy.config
    return base_dir, policy, demos, {"use_images": bool(c.cameras), "env_state": bool(c.env_state_dim)}


def steps_since_rollback(pref) -> np.ndarray:
    """Per tuple of a ``PreferenceDataset``: steps from the rollback to its state on ``tau^w``
    (-1 for Case-1 tuples, whose states lie on ``tau^l``)."""
    on_w, offset = pref.source == SOURCE_W, np.full(len(pref), -1)
    for p in np.unique(pref.pair_of):
        sel = np.flatnonzero(on_w & (pref.pair_of == p))
        offset[sel] = pref.frame[sel].numpy() - int(pref.frame[sel].min())
    return offset
