"""How the corrections' first frames after a rollback differ from the rest (issue 14, part 1).

    python scripts/rollback_frames_profile.py --base runs/usb/sft_6a94f037aa \
        --pairs runs/usb/diag7/pairs_r1_30 --out results/usb/diagnostics/rollback_frames.json

For the Case-2 samples (states on ``tau^w``), split at ``--first`` frames after the rollback:
the base's mean flow loss (one noise and time draw per sample) per part, per pair and per action
column; per pair, how far the first frames move the left tool and tilt the right one; and the 99th percentile of each column's normalised target ``|a - mean| / spread`` over a
chunk, under the policy's per-column spreads and under one spread per action group, beside the
demonstrations' (a random sample of ``--demo-samples`` chunks). With ``--bound b``, also the share
of target elements (and of chunks) that ``PolicyConfig.target_bound = b`` would clamp, per source.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from envs.geometry import POS, arm_slice
from flowpro.data import ChunkDataset, PreferenceDataset
from flowpro.policies.base import ACTION, OBS_STATE, group_scale, to_relative
from flowpro.tuples import SOURCE_L, SOURCE_W
from loss_by_dimension import column_errors  # scripts/, on the path when run as a script
from script_output import load_base, provenance, steps_since_rollback, write_result

RIGHT_TILT = 18  # right tool R[2, 1]: the tilt about the finger axis (docs/tuples.md)


def target_percentiles(rel: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> list[float]:
    """99th percentile over samples of each column's largest |normalised target| in the chunk."""
    z = ((rel - mean) / std).abs().amax(1).numpy()
    return np.percentile(z, 99, axis=0).round(1).tolist()


def clamped_share(rel: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, bound: float) -> dict[str, float]:
    """Share of the normalised target elements beyond ``+-bound``, and of chunks with any."""
    beyond = ((rel - mean) / std).abs() > bound
    return {"elements": round(float(beyond.float().mean()), 5), "chunks": round(float(beyond.flatten(1).any(1).float().mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--first", type=int, default=30, help="frames after the rollback that count as its start")
    ap.add_argument("--demo-samples", type=int, default=3000)
    ap.add_argument("--bound", type=float, default=None, help="report what a target bound b would clamp")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    _, policy, demos, kw = load_base(args.base)
    policy.eval()
    pref = PreferenceDataset(args.pairs, policy.config, **kw)
    offset = steps_since_rollback(pref)
    idx = np.flatnonzero(pref.source == SOURCE_W)
    errors = column_errors(policy, pref, idx)
    loss, early = errors.mean(1), offset[idx] < args.first
    pair = pref.pair_of[idx]
    failure = {int(p): str(f) for p, f in zip(np.asarray(pref.hf["pair_id"]), np.asarray(pref.hf["failure"]))}
    part = lambda m: {"samples": int(m.sum()), "mean_loss": round(float(loss[m].mean()), 4),  # noqa: E731
                      "median_loss": round(float(np.median(loss[m])), 4),
                      "share_of_loss": round(float(loss[m].sum() / loss.sum()), 3),
                      "mean_error_per_column": errors[m].mean(0).round(3).tolist()}
    sft = ChunkDataset(demos, policy.config, **kw)
    pick = np.random.default_rng(0).choice(len(sft), min(args.demo_samples, len(sft)), replace=False)
    demo_rel = torch.stack([to_relative(sft[int(i)][ACTION], sft[int(i)][OBS_STATE]) for i in pick])
    rel = to_relative(pref.a_w, pref.state[pref.frame])
    mean, std = policy.action_norm.mean, policy.action_norm.std
    groups = {}
    for name, spread in (("column", std), ("group", group_scale(std))):
        groups[name] = {"spread": spread.numpy().round(4).tolist(),
                        "demonstrations": target_percentiles(demo_rel, mean, spread),
                        "corrections_first": target_percentiles(rel[idx[early]], mean, spread),
                        "corrections_later": target_percentiles(rel[idx[~early]], mean, spread),
                        "bridges": target_percentiles(rel[pref.source == SOURCE_L], mean, spread)}
    state = pref.state.double().numpy()
    left = arm_slice("left")

    def motion(p: int) -> dict:
        """What the correction does in its first frames: the left tool's (the strip's holder) move,
        and the right tool's largest tilt about the finger axis."""
        frames = pref.frame[idx[(pair == p) & early]].numpy()
        first, last = state[frames.min()], state[frames.max()]
        tilt = np.degrees(np.arcsin(np.clip(np.abs(state[frames, RIGHT_TILT]), 0.0, 1.0))).max()
        return {"left_tool_moved_mm": round(float(np.linalg.norm((last[left] - first[left])[POS]) * 1000), 1),
                "right_tilt_max_deg": round(float(tilt), 1)}

    result = {**provenance("rollback_frames_profile.py", argv), "first": args.first,
              "first_frames": part(early), "later_frames": part(~early),
              "per_pair": [{"pair": int(p), "failure": failure.get(int(p), ""),
                            "first_mean_loss": round(float(loss[(pair == p) & early].mean()), 3),
                            "later_mean_loss": round(float(loss[(pair == p) & ~early].mean()), 3),
                            "share_of_loss": round(float(loss[pair == p].sum() / loss.sum()), 3), **motion(p)}
                           for p in np.unique(pair)],
              "normalised_target_p99": groups}
    if args.bound is not None:
        sources = {"demonstrations": demo_rel, "corrections_first": rel[idx[early]],
                   "corrections_later": rel[idx[~early]], "bridges": rel[pref.source == SOURCE_L]}
        result["target_bound"] = {"bound": args.bound, "clamped_share": {
            name: clamped_share(r, mean, std, args.bound) for name, r in sources.items()}}
        policy.config.target_bound = args.bound  # the same draws, now against clamped targets
        bounded = column_errors(policy, pref, idx).mean(1)
        result["target_bound"]["first_frames"] = {"mean_loss": round(float(bounded[early].mean()), 4),
                                                  "share_of_loss": round(float(bounded[early].sum() / bounded.sum()), 3)}
        result["target_bound"]["later_frames_mean_loss"] = round(float(bounded[~early].mean()), 4)
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
