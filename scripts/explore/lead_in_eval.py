"""The 0.3 mm USB socket with a 45-degree lead-in LEAD metres wide (0: a flat bezel): the scripted
expert, or the flat-socket SFT base trained on flat-bezel demos, on the ID scenes FIRST_SEED ..
END_SEED - 1.

    PYTHONPATH=. python scripts/explore/lead_in_eval.py expert|base LEAD FIRST_SEED END_SEED

The socket reaches the workers as the task variant ``usb:clearance_m=0.0003,lead_m=LEAD``; the
expert's episodes are those of ``python -m envs.expert_eval --task usb:clearance_m=0.0003,lead_m=LEAD``.
Prints ``seed (success, terminated_by, last stage)`` per episode, then
``expert|base LEAD successes episodes [(success, terminated_by, last stage), ...]``.
"""
import sys

from clearance_eval import BASE  # scripts/explore, on the path when run as a script
from envs.expert_eval import run_episodes
from socket_variant_eval import outcome, policy_rollouts, socket

if __name__ == "__main__":
    who, lead, n0, n1 = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    task = socket(0.0003, lead)
    if who == "expert":
        results = run_episodes(task, "id", list(range(n0, n1)))
    else:
        results = policy_rollouts(BASE, task, n0, n1)
    out = [outcome(r) for r in results]
    for r, o in zip(results, out):
        print(r["seed"], o, flush=True)
    print(who, lead, sum(o[0] for o in out), len(out), out)
