"""Is it the corrections, or the fine-tuning protocol, that breaks the base? (issue 14, part 1)

    python scripts/positive_source_finetune.py --base runs/usb/sft_6a94f037aa \
        --positives fresh:data/usb/fresh_expert_s130000 --out runs/usb/diag8/fresh \
        --result results/usb/diagnostics/positive_sources/fresh.json

DAgger-Buffered's protocol (behaviour cloning, 80 % of each batch from the "current" buffer and
20 % from ``D_SFT``, the same steps, learning rate, seed and batch size as
``python -m flowpro.train rpro --method dagger_buffered``), with the current buffer swapped:

- ``fresh:DIR``: complete expert episodes never seen by the base (``python -m envs.record ...``
  on seeds disjoint from ``D_SFT``'s and from every evaluation scene). If these break the base
  too, the protocol is at fault, not the corrections.
- ``case2:DIR``: a pair dataset's corrections (what DAgger-Buffered trains on).
- ``case2_after:N:DIR``: only the corrections' frames at least ``N`` steps after the rollback.
- ``case2_no:KIND:DIR``: the corrections of pairs whose intervention was not ``KIND`` (e.g. stall).
- ``case2_drop:IDS:DIR``: the corrections of every pair but those with the comma-separated ids.

``--current-share`` replaces the 80 % (the rest of each batch comes from ``D_SFT``). The fine-tuned
policy is evaluated on the tuning scenes. A diagnostic only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from baselines.dagger import DAggerBuffered
from flowpro.data import ChunkDataset, PreferenceDataset
from flowpro.finetune import RPROConfig, finetune_round
from flowpro.mixing import CURRENT, SFT
from flowpro.tuples import SOURCE_W
from script_output import (add_evaluation_arguments, load_base, provenance, steps_since_rollback, tuning_evaluation,
                           write_result, write_rollouts)  # scripts/, on the path when run as a script


def correction_subset(pref: PreferenceDataset, keep_pair: np.ndarray, min_offset: int) -> torch.utils.data.Subset:
    """Case-2 tuples of the kept pairs whose state lies ``min_offset`` or more steps into ``tau^w``."""
    keep = (pref.source == SOURCE_W) & keep_pair[pref.pair_of] & (steps_since_rollback(pref) >= min_offset)
    return torch.utils.data.Subset(pref, np.flatnonzero(keep).tolist())


class SharedBuffered(DAggerBuffered):
    """DAgger-Buffered with another share of the current buffer in each batch."""

    def __init__(self, cfg: RPROConfig, share: float):
        super().__init__(cfg)
        self.share = share

    def ratios(self, k, buffers):
        return {CURRENT: self.share, SFT: 1.0 - self.share}


def current_buffer(spec: str, config, kw: dict) -> tuple[torch.utils.data.Dataset, dict]:
    kind, _, rest = spec.partition(":")
    if kind == "fresh":
        ds = ChunkDataset(rest, config, **kw)
        return ds, {"kind": kind, "root": rest, "samples": len(ds)}
    min_offset, exclude, dropped = 0, None, []
    if kind == "case2_after":
        n, _, rest = rest.partition(":")
        min_offset = int(n)
    elif kind == "case2_no":
        exclude, _, rest = rest.partition(":")
    elif kind == "case2_drop":
        ids, _, rest = rest.partition(":")
        dropped = [int(x) for x in ids.split(",")]
    elif kind != "case2":
        raise ValueError("--positives must start with fresh:, case2:, case2_after:N:, case2_no:KIND: or "
                         f"case2_drop:IDS:, got {spec!r}")
    pref = PreferenceDataset(rest, config, **kw)
    failure = np.asarray(pref.hf["failure"])
    pair_id = np.asarray(pref.hf["pair_id"])
    kinds = {int(p): str(f) for p, f in zip(pair_id, failure)}
    keep_pair = np.array([(exclude is None or kinds.get(p) != exclude) and p not in dropped
                          for p in range(int(pair_id.max()) + 1)])
    sub = correction_subset(pref, keep_pair, min_offset)
    if not len(sub):
        raise ValueError(f"{spec}: no correction frames are left")
    return sub, {"kind": kind, "root": rest, "samples": len(sub), "pairs_kept": int(keep_pair.sum()),
                 "min_offset": min_offset, "excluded_failure": exclude, "dropped_pairs": dropped}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--positives", required=True, help="fresh:DIR | case2:DIR | case2_after:N:DIR | case2_no:KIND:DIR | case2_drop:IDS:DIR")
    ap.add_argument("--out", required=True, help="run directory of the fine-tuning")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--current-share", type=float, default=0.8, help="share of each batch from the current buffer")
    add_evaluation_arguments(ap)
    args = ap.parse_args(argv)
    if not 0.0 < args.current_share < 1.0:
        ap.error(f"--current-share must be in (0, 1), got {args.current_share}")
    torch.set_num_threads(1)
    base_dir, policy, demos, kw = load_base(args.base)
    current, described = current_buffer(args.positives, policy.config, kw)
    sft = ChunkDataset(demos, policy.config, **kw)
    cfg = RPROConfig(task="usb", base=str(base_dir), out=args.out, rounds=1, method="dagger_buffered",
                     steps=args.steps, lr=args.lr)
    out = Path(args.out)
    policy_dir = out / "train" / "policy"
    if not policy_dir.exists():
        finetune_round(cfg, 1, SharedBuffered(cfg, args.current_share), policy, None, {CURRENT: current, SFT: sft},
                       out / "train")
    rollouts, evaluation = tuning_evaluation(policy_dir, args.seed, args.rollouts, args.workers)
    write_rollouts(out / "eval_id.jsonl", rollouts)
    result = {**provenance("positive_source_finetune.py", argv), "positives": described,
              "protocol": {"method": "dagger_buffered", "ratios": {CURRENT: args.current_share, SFT: round(1.0 - args.current_share, 6)}, "steps": args.steps,
                           "lr": args.lr, "batch_size": cfg.batch_size}, **evaluation, "rollouts": rollouts}
    write_result(result, args.result, shown={k: v for k, v in result.items() if k != "rollouts"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
