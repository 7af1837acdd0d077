import sys, envs
import envs.xtrainer as X
kp, fr = sys.argv[1], sys.argv[2]
orig = X.build_xml
def patched(*a, **k):
    xml = orig(*a, **k)
    return xml.replace('<position kp="400" dampratio="1" forcerange="-25 25"', f'<position kp="{kp}" dampratio="1" forcerange="-{fr} {fr}"')
X.build_xml = patched
import envs.env as E
E.build_xml = patched
from envs.env import XTrainerEnv
from envs.rollout import rollout, ExpertPolicy
env = XTrainerEnv(task="usb", obs_mode="state")
assert f'kp="{kp}"' in env.xml
res = [rollout(env, ExpertPolicy(env, s), seed=s, options={"split": "id"}, n_action_steps=1) for s in range(int(sys.argv[3]))]
print(kp, fr, sum(r.success for r in res), len(res), [r.terminated_by for r in res if not r.success][:5])
