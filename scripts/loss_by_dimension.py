"""Which action dimensions carry the base's flow loss on the round's tuples? (issue 14, part 1)

    python scripts/loss_by_dimension.py --policy runs/usb/sft_xxx --demos data/usb/demos_xxx \
        --pairs runs/usb/diag/pairs_r1_30 --out results/usb/diagnostics/loss_by_dimension.json

Under the policy, one shared noise/time draw per sample, the flow-matching error ``(v - u)^2``
(normalised action space, padded steps masked) averaged per action group (each arm's position,
rotation and gripper), and per column beside the column's normalisation spread, over: demonstration frames, all Case-2 states, the worst 10 % of Case-2
states, Case-2 states in the first 30 frames after the rollback, and the Case-1 bridges. Also
which environment-state inputs lie beyond 10 standard deviations of the demonstrations, and how
often, in the pairs' frames.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from benchmarks.evaluate import resolve_policy_dir
from flowpro.data import ChunkDataset, PreferenceDataset
from flowpro.finetune import collate
from flowpro.policies import FlowPolicy
from flowpro.tuples import SOURCE_L, SOURCE_W, load_pairs
from script_output import provenance, write_result  # scripts/, on the path when run as a script

GROUPS = {"left_pos": slice(0, 3), "left_rot": slice(3, 9), "left_grip": slice(9, 10),
          "right_pos": slice(10, 13), "right_rot": slice(13, 19), "right_grip": slice(19, 20)}
USB_ENV_STATE = (["strip_qpos"] * 7 + ["lamp_qpos"] * 7 + ["holder_pos"] * 3 + ["holder_quat"] * 4
                 + ["socket_pos"] * 3 + ["socket_axis"] * 3 + ["plug_pos"] * 3 + ["plug_axis"] * 3
                 + ["plug_in_socket"] * 3 + ["offset_fine"] * 6 + ["offset_approach"] * 6)


@torch.no_grad()
def column_errors(policy: FlowPolicy, dataset, index: np.ndarray, seed: int = 0, batch: int = 256) -> np.ndarray:
    """[N, action columns]: each sample's mean flow error per column over its valid steps."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(index), batch):
        b = collate([dataset[int(i)] for i in index[start:start + batch]])
        n = len(b["action"])
        err = policy.flow_errors(b, policy.sample_noise(n, gen), policy.sample_time(n, gen))
        valid = (~b["action_is_pad"]).float() if "action_is_pad" in b else torch.ones(err.shape[:2])
        out.append(((err * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)).numpy())
    return np.concatenate(out)


def group_errors(columns: np.ndarray) -> np.ndarray:
    """[N, columns] -> [N, groups]: the mean over each group's columns."""
    return np.stack([columns[:, g].mean(1) for g in GROUPS.values()], 1)


def summary(e: np.ndarray) -> dict:
    total = e.mean(1)
    return {"n": int(len(e)), "mean_loss": round(float(total.mean()), 4),
            **{g: round(float(e[:, k].mean()), 4) for k, g in enumerate(GROUPS)}}


def env_outliers(policy: FlowPolicy, pref, names: list[str]) -> dict:
    z = ((pref.env.float() - policy.env_norm.mean) / policy.env_norm.std).abs().numpy()
    far = z > 10
    by = {}
    for k in np.flatnonzero(far.any(0)):
        name = names[k] if k < len(names) else f"dim{k}"
        by[f"{k}:{name}"] = {"frames": round(float(far[:, k].mean()), 4), "max_z": round(float(z[:, k].max()), 1),
                             "demo_std": float(f"{float(policy.env_norm.std[k]):.3g}")}
    return {"frames_any_over_10": round(float(far.any(1).mean()), 4), "by_dimension": by}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True)
    ap.add_argument("--demos", required=True)
    ap.add_argument("--pairs", required=True)
    ap.add_argument("--demo-frames", type=int, default=2000)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    policy = FlowPolicy.load(resolve_policy_dir(args.policy))
    c = policy.config
    kw = {"use_images": bool(c.cameras), "env_state": bool(c.env_state_dim)}
    demos = ChunkDataset(args.demos, c, **kw)
    pref = PreferenceDataset(args.pairs, c, **kw)
    demo_idx = np.random.default_rng(0).choice(len(demos), size=min(args.demo_frames, len(demos)), replace=False)
    w = np.flatnonzero(pref.source == SOURCE_W)
    cols = {"demonstrations": column_errors(policy, demos, demo_idx), "case2_all": column_errors(policy, pref, w),
            "case1_bridges": column_errors(policy, pref, np.flatnonzero(pref.source == SOURCE_L))}
    ew = group_errors(cols["case2_all"])
    where = {int(g): k for p in load_pairs(args.pairs) for k, g in enumerate(p.index_w)}
    frame = np.array([where[int(pref.frame[i])] for i in w])
    worst = np.argsort(-ew.mean(1))[:len(w) // 10]
    result = {**provenance("loss_by_dimension.py", argv),
              "groups": {g: [s.start, s.stop] for g, s in GROUPS.items()},
              "flow_error_by_group": {
                  "demonstrations": summary(group_errors(cols["demonstrations"])),
                  "case2_all": summary(ew),
                  "case2_worst_10%": summary(ew[worst]),
                  "case2_first_30_frames": summary(ew[frame < 30]),
                  "case2_after_30_frames": summary(ew[frame >= 30]),
                  "case1_bridges": summary(group_errors(cols["case1_bridges"]))},
              "action_std_per_column": [float(f"{float(v):.3g}") for v in policy.action_norm.std],
              "flow_error_per_column": {k: [round(float(v), 3) for v in e.mean(0)] for k, e in cols.items()}}
    if c.env_state_dim:
        names = USB_ENV_STATE if c.env_state_dim == len(USB_ENV_STATE) else []
        result["env_state_beyond_10_sd"] = env_outliers(policy, pref, names)
    write_result(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
