"""The soft-gripper SFT base evaluated on the seeds of its own demonstrations (ID seeds 0..7).

    PYTHONPATH=. python scripts/explore/base_on_training_seeds.py 0 8
"""
import sys

from benchmarks.evaluate import evaluate

if __name__ == "__main__":
    res = evaluate("usb", "runs/usb/sft_a1f4798688/policy", list(range(int(sys.argv[1]), int(sys.argv[2]))), "id")
    for r in res:
        print(r["seed"], r["success"], r["terminated_by"], r["steps"], r["stages_seen"], r["failures_seen"])
    print("successes", sum(r["success"] for r in res), "of", len(res))
