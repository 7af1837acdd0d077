import sys, envs, torch, json
from envs.tasks import usb as U
c = float(sys.argv[1]); n0, n1 = int(sys.argv[2]), int(sys.argv[3])
orig = U.UsbTask.__init__
U.UsbTask.__init__ = lambda self, clearance_m=c: orig(self, clearance_m)
from envs.env import XTrainerEnv
from envs.rollout import rollout
from flowpro.policies import FlowPolicy
from benchmarks.evaluate import PolicyRunner
torch.set_num_threads(1)
p = FlowPolicy.load("runs/usb/sft_a1f4798688/policy")
env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
out = []
for s in range(n0, n1):
    r = rollout(env, PolicyRunner(p, s), seed=s, options={"split": "id"}, n_action_steps=15)
    out.append((r.success, r.terminated_by, r.stages_seen[-1]))
print(c, sum(o[0] for o in out), len(out), out)
