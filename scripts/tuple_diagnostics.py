"""How far are a round's preference tuples from what the base learned? (issue 14, part 1)

    python scripts/tuple_diagnostics.py --policy runs/usb/sft_xxx --demos data/usb/demos_xxx \
        --pairs runs/usb/pairs_round1_xxx --out results/usb/diagnostics/tuples_round1.json

Under the policy, with one shared noise/time draw per sample (as the losses use them), the mean
flow loss on demonstration frames (Case 3), on the corrections' states (Case 2) and on the
Case-1 bridges (also binned by the gap from ``M`` to ``J``); how far the observations lie from the statistics the policy normalises by; and
the bridges' gaps, lengths and speeds beside the demonstrations' and corrections' per-step moves
(:mod:`flowpro.bridges`).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from benchmarks.evaluate import resolve_policy_dir
from flowpro.bridges import bridge_statistics, demonstration_speeds
from flowpro.data import ChunkDataset, PreferenceDataset
from flowpro.finetune import collate
from flowpro.policies import FlowPolicy
from flowpro.tuples import SOURCE_L, SOURCE_W, load_pairs
from script_output import provenance, write_result  # scripts/, on the path when run as a script


@torch.no_grad()
def per_sample_flow_loss(policy: FlowPolicy, dataset, index: np.ndarray, seed: int = 0, batch: int = 256
                         ) -> np.ndarray:
    """The per-sample flow loss of ``dataset[index]``, one shared noise/time draw per sample."""
    gen = torch.Generator().manual_seed(seed)
    losses = []
    for start in range(0, len(index), batch):
        b = collate([dataset[int(i)] for i in index[start:start + batch]])
        n = len(b["action"])
        losses.append(policy.per_sample_loss(b, policy.sample_noise(n, gen), policy.sample_time(n, gen)))
    return torch.cat(losses).numpy()


def mean_flow_loss(policy: FlowPolicy, dataset, index: np.ndarray) -> dict:
    """Mean and quantiles of the per-sample flow loss over ``dataset[index]``."""
    return loss_summary(per_sample_flow_loss(policy, dataset, index))


def loss_summary(v: np.ndarray) -> dict:
    """Count, mean, median and 90 % quantile of per-sample losses ``v``."""
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), "mean": round(float(v.mean()), 4), "median": round(float(np.median(v)), 4),
            "q90": round(float(np.quantile(v, 0.9)), 4)}


def input_ranges(policy: FlowPolicy, dataset) -> dict:
    """How far a dataset's observations lie from the statistics the policy normalises by: quantiles of
    |z| = |x - mean| / std over all values, and the share of frames with any |z| above 10 (before any
    ``input_bound``)."""
    out = {}
    for key, norm, values in (("state", policy.state_norm, dataset.state), ("environment_state", policy.env_norm,
                                                                         getattr(dataset, "env", None))):
        if values is None or not policy.config.env_state_dim and key == "environment_state":
            continue
        z = ((values.float() - norm.mean) / norm.std).abs().numpy()
        out[key] = {"q50": round(float(np.median(z)), 2), "q99": round(float(np.quantile(z, 0.99)), 2),
                    "max": round(float(z.max()), 1), "frames_over_10": round(float((z > 10).any(1).mean()), 4)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--demos", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--demo-frames", type=int, default=2000, help="demonstration frames sampled for the loss")
    ap.add_argument("--gap-edges-mm", type=float, nargs="+", default=[5.0, 10.0, 20.0],
                    help="bin edges (mm) of the Case-1 loss by the gap from M to J (default: 5 10 20)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    policy = FlowPolicy.load(resolve_policy_dir(args.policy))
    c = policy.config
    kw = {"use_images": bool(c.cameras), "env_state": bool(c.env_state_dim)}
    demos = ChunkDataset(args.demos, c, **kw)
    pref = PreferenceDataset(args.pairs, c, **kw)
    rng = np.random.default_rng(0)
    demo_idx = rng.choice(len(demos), size=min(args.demo_frames, len(demos)), replace=False)
    case1 = np.flatnonzero(pref.source == SOURCE_L)
    case1_loss = per_sample_flow_loss(policy, pref, case1)
    loss = {"demonstrations": mean_flow_loss(policy, demos, demo_idx),
            "case2_corrections": mean_flow_loss(policy, pref, np.flatnonzero(pref.source == SOURCE_W)),
            "case1_bridges": loss_summary(case1_loss)}
    gap = pref.bridge_gap[case1]  # the larger tool gap from M to J, metres
    edges = [0.0] + list(args.gap_edges_mm) + [np.inf]  # millimetres; bins (lo, hi], the first from 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (gap * 1000 <= hi) & ((gap * 1000 > lo) | (lo == 0))
        loss[f"case1_bridges_gap_{lo:g}_to_{hi:g}_mm"] = loss_summary(case1_loss[in_bin])
    base = loss["demonstrations"]["mean"]
    for v in loss.values():
        if v["n"]:
            v["times_demonstrations"] = round(v["mean"] / base, 2)
    pairs = load_pairs(args.pairs)
    result = {**provenance("tuple_diagnostics.py", argv),
              "pairs": len(pairs), "tuples": {"case1": int((pref.source == SOURCE_L).sum()),
                                              "case2": int((pref.source == SOURCE_W).sum())},
              "tau_l_frames": [len(p.states_l) for p in pairs], "tau_w_frames": [len(p.states_w) for p in pairs],
              "flow_loss_under_policy": loss,
              "normalised_inputs": {"demonstrations": input_ranges(policy, demos), "pairs": input_ranges(policy, pref)},
              "bridges": bridge_statistics(pairs, c.chunk_size),
              "demonstrations": demonstration_speeds(demos.action.double().numpy(), demos.episode_end.numpy())}
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
