"""Do near-constant action columns drive the positives-only collapse? (issue 14, part 1)

    python scripts/masked_column_finetune.py --base runs/usb/sft_xxx --pairs runs/usb/diag7/pairs_r1_30 \
        --out runs/usb/diag7/sft_only_masked --drop-columns 5,8,18 --result results/usb/diagnostics/masked_columns.json

The policy normalises each action column by its spread over the demonstrations. Three rotation
components (the z components of the tool's x and y axes, offsets from the measured pose: left
``R[2, 0]`` and ``R[2, 1]``, right ``R[2, 1]``; the tool points down in every demonstration) have a
spread of 2-8 milliradians, so a fraction of a degree of tilt in a correction or a bridge is many
standard deviations there and dominates the flow loss and its gradient. This diagnostic repeats the SFT-only ablation (the flow loss on ``a^w`` over this
round's tuples and ``D_SFT`` at 80 : 20, the same steps, learning rate, seed and batches as
``python -m flowpro.train rpro --loss sft``) with ``--drop-columns`` left out of the loss, and
evaluates the result on the tuning scenes. It also reports each column's share of the squared
gradient norm of one batch of tuples. A diagnostic only: the method keeps every column.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from flowpro.data import ChunkDataset, PreferenceDataset
from flowpro.finetune import Method, RPROConfig, collate, finetune_round
from flowpro.policies import FlowPolicy
from flowpro.policies.base import ACTION, ACTION_PAD
from flowpro.tuples import SOURCE_L
from script_output import (add_evaluation_arguments, load_base, provenance, tuning_evaluation, write_result,
                           write_rollouts)  # scripts/, on the path when run as a script


def masked_loss(policy: FlowPolicy, batch: dict, noise, t, keep: torch.Tensor) -> torch.Tensor:
    """The per-sample flow loss over valid steps and the kept columns only."""
    err = policy.flow_errors(batch, noise, t)[..., keep]
    valid = (~batch[ACTION_PAD]).to(err.dtype) if ACTION_PAD in batch else torch.ones(err.shape[:2])
    return (err.mean(-1) * valid).sum(1) / valid.sum(1).clamp_min(1.0)


class MaskedSFT(Method):
    """FlowPRO's buffers and ratios; behaviour cloning on ``a^w`` without the dropped columns."""

    uses_reference = False

    def __init__(self, cfg: RPROConfig, keep: torch.Tensor):
        super().__init__(cfg)
        self.keep = keep

    def batch_loss(self, policy, reference, batch, generator, log_terms):
        b = batch[ACTION].shape[0]
        loss = masked_loss(policy, batch, policy.sample_noise(b, generator), policy.sample_time(b, generator),
                           self.keep).mean()
        return loss, {"loss": float(loss.detach()), "sft": float(loss.detach())}, ({"sft": loss} if log_terms else {})


def gradient_shares(policy: FlowPolicy, pref, n: int = 256) -> list[float]:
    """Each action column's share of the summed squared gradient norms of the flow loss on ``n``
    bridge tuples (one column's loss at a time)."""
    idx = np.flatnonzero(pref.source == SOURCE_L)[:n]
    batch = collate([pref[int(i)] for i in idx])
    gen = torch.Generator().manual_seed(0)
    noise, t = policy.sample_noise(len(idx), gen), policy.sample_time(len(idx), gen)
    params = [p for p in policy.parameters() if p.requires_grad]
    norms = []
    for col in range(policy.config.action_dim):
        keep = torch.zeros(policy.config.action_dim, dtype=torch.bool)
        keep[col] = True
        grads = torch.autograd.grad(masked_loss(policy, batch, noise, t, keep).mean(), params, allow_unused=True)
        norms.append(float(sum((g ** 2).sum() for g in grads if g is not None)))
    total = sum(norms)
    return [round(v / total, 4) for v in norms]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--out", required=True, help="run directory of the masked fine-tuning")
    ap.add_argument("--drop-columns", default="5,8,18")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-5)
    add_evaluation_arguments(ap)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    base_dir, policy, demos, kw = load_base(args.base)
    c = policy.config
    drop = [int(x) for x in args.drop_columns.split(",") if x]
    keep = torch.ones(c.action_dim, dtype=torch.bool)
    keep[drop] = False
    pref, sft = PreferenceDataset(args.pairs, c, **kw), ChunkDataset(demos, c, **kw)
    shares = gradient_shares(policy, pref)
    cfg = RPROConfig(task="usb", base=str(base_dir), out=args.out, rounds=1, loss="sft", steps=args.steps, lr=args.lr)
    out = Path(args.out)
    policy_dir = out / "train" / "policy"
    if not policy_dir.exists():
        method = MaskedSFT(cfg, keep)
        finetune_round(cfg, 1, method, policy, None, method.buffers(pref, [], sft), out / "train")
    rollouts, evaluation = tuning_evaluation(policy_dir, args.seed, args.rollouts, args.workers)
    write_rollouts(out / "eval_id.jsonl", rollouts)
    result = {**provenance("masked_column_finetune.py", argv), "dropped_columns": drop, "dropped_columns_std": [float(f"{float(policy.action_norm.std[k]):.3g}") for k in drop],
              "bridge_gradient_share_per_column": shares,
              "bridge_gradient_share_of_dropped": round(sum(shares[k] for k in drop), 4), **evaluation,
              "rollouts": rollouts}
    write_result(result, args.result, shown={k: v for k, v in result.items() if k != "rollouts"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
