import sys, envs, torch
from envs.env import XTrainerEnv
from envs.rollout import rollout
from flowpro.policies import FlowPolicy
from benchmarks.evaluate import PolicyRunner
torch.set_num_threads(1)
scale = float(sys.argv[1]); nas = int(sys.argv[2])
p = FlowPolicy.load("runs/usb/sft_a1f4798688/policy")
class R(PolicyRunner):
    def predict_chunk(self, obs, instruction):
        batch = self.obs_to_batch(obs, instruction)
        noise = self.policy.sample_noise(1, self.generator) * scale
        with torch.inference_mode():
            return self.policy.sample_actions(batch, noise=noise)[0].numpy().astype(float)
env = XTrainerEnv(task="usb", obs_mode="state", privileged_obs=True)
out = []
for s in range(1000, 1008):
    r = rollout(env, R(p, s), seed=s, options={"split": "id"}, n_action_steps=nas)
    out.append((r.success, r.terminated_by, r.stages_seen[-1]))
print(scale, nas, sum(o[0] for o in out), out)
