"""The USB socket with a 45-degree lead-in of LEAD metres (UsbTask(lead_m=...); the default task has a
flat bezel): the scripted expert, or the soft-gripper SFT base trained on flat-bezel demos.

    PYTHONPATH=. python results/usb/explore/lead_in_eval.py expert|base LEAD FIRST_SEED END_SEED
"""
import sys

import envs  # noqa: F401
from envs.tasks import usb as U

who, lead, n0, n1 = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
orig = U.UsbTask.__init__
U.UsbTask.__init__ = lambda self, clearance_m=0.0003, lead_m=lead: orig(self, clearance_m, lead_m)

import torch  # noqa: E402

from benchmarks.evaluate import PolicyRunner  # noqa: E402
from envs.env import XTrainerEnv  # noqa: E402
from envs.rollout import ExpertPolicy, rollout  # noqa: E402
from flowpro.policies import FlowPolicy  # noqa: E402

torch.set_num_threads(1)
env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
assert env.task.lead == lead
policy = FlowPolicy.load("runs/usb/sft_a1f4798688/policy") if who == "base" else None
out = []
for s in range(n0, n1):
    agent = ExpertPolicy(env, s) if who == "expert" else PolicyRunner(policy, s)
    r = rollout(env, agent, seed=s, options={"split": "id"}, n_action_steps=1 if who == "expert" else 15)
    out.append((r.success, r.terminated_by, r.stages_seen[-1]))
    print(s, out[-1], flush=True)
print(who, lead, sum(o[0] for o in out), len(out), out)
