"""How far the SFT base's sampled chunks are from the demonstrated chunks, on 256 training states.

    PYTHONPATH=. python scripts/explore/base_prediction_error.py [POLICY_DIR]
"""
import sys

import numpy as np
import torch

from flowpro.data import ChunkDataset
from flowpro.policies import FlowPolicy

p = FlowPolicy.load(sys.argv[1] if len(sys.argv) > 1 else "runs/usb/sft_a1f4798688/policy").eval()
ds = ChunkDataset("data/usb/demos", p.config, use_images=False, env_state=True)
idx = np.random.default_rng(0).choice(len(ds), 256, replace=False)
items = [ds[int(i)] for i in idx]
batch = {k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else [it[k] for it in items]
         for k in items[0]}
torch.manual_seed(0)
with torch.no_grad():
    err = p.sample_actions(batch) - batch["action"]  # absolute targets, metres
for arm, cols in (("left", slice(0, 3)), ("right", slice(10, 13))):
    e = err[..., cols].norm(dim=-1) * 1000
    print(f"{arm} tool position error (mm): step 0 median {e[:, 0].median():.2f}, p90 {e[:, 0].quantile(0.9):.2f}; "
          f"step 14 (last executed) median {e[:, 14].median():.2f}; whole chunk mean {e.mean():.2f}")
print(f"gripper error (of 1 = open): left {err[..., 9].abs().mean():.4f}, right {err[..., 19].abs().mean():.4f}")
