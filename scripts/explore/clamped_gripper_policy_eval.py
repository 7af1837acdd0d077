import sys, envs, torch
import envs.xtrainer as X
kp, fr, n0, n1 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
orig = X.build_xml
def patched(*a, **k):
    return orig(*a, **k).replace('<position kp="400" dampratio="1" forcerange="-25 25"', f'<position kp="{kp}" dampratio="1" forcerange="-{fr} {fr}"')
import envs.env as E
E.build_xml = patched
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
print(kp, fr, sum(o[0] for o in out), len(out), out)
