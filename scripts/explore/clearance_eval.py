"""The flat-socket SFT base at a looser flat-bezel socket (clearance CLEAR metres per side, no
lead-in), on the ID scenes FIRST_SEED .. END_SEED - 1.

    PYTHONPATH=. python scripts/explore/clearance_eval.py CLEAR FIRST_SEED END_SEED

The socket reaches the evaluation's workers as the task variant ``usb:clearance_m=CLEAR,lead_m=0.0``.
Prints ``CLEAR successes rollouts [(success, terminated_by, last stage), ...]``.
"""
import sys

from socket_variant_eval import outcome, policy_rollouts, socket  # scripts/explore, on the path when run as a script

BASE = "runs/usb/sft_a1f4798688/policy"  # the flat-socket base (results/usb/explore/README.md)

if __name__ == "__main__":
    c, n0, n1 = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    out = [outcome(r) for r in policy_rollouts(BASE, socket(c, lead_m=0.0), n0, n1)]
    print(c, sum(o[0] for o in out), len(out), out)
