"""A policy at another USB socket: clearance CLEAR metres per side, a 45-degree lead-in LEAD metres
wide (0: a flat bezel), re-planning every NAS steps (default 15), on the ID scenes FIRST_SEED ..
END_SEED - 1.

    PYTHONPATH=. python scripts/explore/socket_variant_eval.py POLICY_DIR LEAD CLEAR FIRST_SEED END_SEED [NAS]

The socket is a task variant, ``usb:clearance_m=CLEAR,lead_m=LEAD`` (:class:`envs.tasks.TaskSpec`),
which reaches the evaluation's worker processes as data; the rollouts are those of
``python -m benchmarks.evaluate --task usb:clearance_m=CLEAR,lead_m=LEAD --n-action-steps NAS``.
Prints ``seed (success, terminated_by, last stage) failures_seen`` per rollout, then
``RESULT LEAD CLEAR successes rollouts``. clearance_eval.py and lead_in_eval.py use its helpers.
"""
import sys

from benchmarks.evaluate import evaluate
from envs.tasks import TaskSpec


def socket(clearance_m: float, lead_m: float) -> TaskSpec:
    """The USB task with this socket."""
    return TaskSpec("usb", {"clearance_m": clearance_m, "lead_m": lead_m})


def policy_rollouts(policy_dir: str, task: TaskSpec, first: int, end: int, n_action_steps: int = 15) -> list[dict]:
    """ID rollouts of the policy on seeds ``first .. end - 1``, in parallel over the cores."""
    return evaluate(task, policy_dir, list(range(first, end)), "id", n_action_steps=n_action_steps)


def outcome(rollout: dict) -> tuple[bool, str, str]:
    """(success, terminated_by, the last stage reached) of one rollout."""
    return rollout["success"], rollout["terminated_by"], rollout["stages_seen"][-1]


if __name__ == "__main__":
    pol, lead, clear, n0, n1 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    nas = int(sys.argv[6]) if len(sys.argv) > 6 else 15
    results = policy_rollouts(pol, socket(clear, lead), n0, n1, nas)
    for r in results:
        print(r["seed"], outcome(r), r["failures_seen"], flush=True)
    print("RESULT", lead, clear, sum(r["success"] for r in results), len(results))
