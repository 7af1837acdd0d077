"""The SFT base at another socket (clearance CLEAR metres, 45-degree lead-in LEAD metres; UsbTask's
default is patched in this process), re-planning every NAS steps (default 15).

    PYTHONPATH=. python results/usb/explore/socket_variant_eval.py POLICY_DIR LEAD CLEAR FIRST_SEED END_SEED [NAS]
"""
import sys

import envs  # noqa: F401
from envs.tasks import usb as U

pol, lead, clear, n0, n1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
nas = int(sys.argv[6]) if len(sys.argv) > 6 else 15
orig = U.UsbTask.__init__
U.UsbTask.__init__ = lambda self, clearance_m=clear, lead_m=lead: orig(self, clearance_m, lead_m)
import torch
from benchmarks.evaluate import PolicyRunner
from envs.env import XTrainerEnv
from envs.rollout import rollout
from flowpro.policies import FlowPolicy
torch.set_num_threads(1)
env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
policy = FlowPolicy.load(pol)
out = []
for s in range(n0, n1):
    r = rollout(env, PolicyRunner(policy, s), seed=s, options={"split": "id"}, n_action_steps=nas)
    out.append((r.success, r.terminated_by, r.stages_seen[-1]))
    print(s, out[-1], r.failures_seen, flush=True)
print("RESULT", lead, clear, sum(o[0] for o in out), len(out))
