"""Open-loop replay of the recorded SFT demonstrations: do the stored actions reproduce success?

    PYTHONPATH=. python scripts/explore/demo_replay.py 4
"""
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import envs  # noqa: F401
from envs.env import XTrainerEnv

root = Path("data/usb/demos")  # the default benchmark's 100 demos (soft gripper)
cols = ["action", "episode_seed", "episode_index", "observation.state"]
t = pa.concat_tables([pq.read_table(f, columns=cols) for f in sorted(root.glob("data/chunk-*/file-*.parquet"))]).to_pydict()
ep, act, st = np.array(t["episode_index"]), np.array(t["action"]), np.array(t["observation.state"])
seeds = np.array(t["episode_seed"]).reshape(-1)
env = XTrainerEnv(task="usb", obs_mode="state")
for e in range(int(sys.argv[1])):
    idx = np.where(ep == e)[0]
    obs, _ = env.reset(seed=int(seeds[idx[0]]), options={"split": "id"})
    max_dev = 0.0
    for k, i in enumerate(idx):
        max_dev = max(max_dev, float(np.abs(obs["agent_pos"] - st[i]).max()))
        obs, _, term, trunc, info = env.step(act[i])
        if term or trunc:
            break
    print(f"episode {e} seed {seeds[idx[0]]}: {k + 1}/{len(idx)} steps replayed, success {bool(info.get('is_success'))}, "
          f"max |state - recorded state| {max_dev:.1e}", flush=True)
