"""Does the oracle's expert, taking over mid-task, continue what the scene shows? (issue 14, part 1)

    python scripts/expert_takeover_probe.py --seeds 0 1 2 3 4 5 6 7 --out results/usb/expert_takeover_probe.json

From expert USB episodes, every ``--every`` steps while both objects are held, the state is
snapshotted and the next 30 steps are run twice from it: by the same expert (its own
continuation, what a demonstration does there) and by a fresh expert reset at that state with a
new random draw (what the oracle does after a rollback, ``flowpro.operator.OracleOperator``).
Per probe: how far the strip moves and how far the plug backs away from the socket (the largest
increase of the plug-to-socket distance). Probes where the strip already sits at its holding
pose (the continuation moves it under 1 mm) are summarised apart: there a correction that
moves the strip or pulls the plug back contradicts the demonstrations.
"""

from __future__ import annotations

import argparse
import sys
import numpy as np

from envs.env import XTrainerEnv
from script_output import provenance, write_result  # scripts/, on the path when run as a script

STEPS = 30


def run_from(env, snap, expert) -> tuple[float, float]:
    """(strip displacement, plug retreat) in mm over STEPS steps of ``expert`` from ``snap``."""
    t = env.task
    env.restore(snap)
    dist = lambda: float(np.linalg.norm(t.plug_pose(env.data)[:3, 3] - t.socket_pose(env.data)[:3, 3]))  # noqa: E731
    strip0, d0 = t.object_pose(env.data, "strip")[:3, 3].copy(), dist()
    d_max = d0
    for _ in range(STEPS):
        env.act(expert.act(env))
        d_max = max(d_max, dist())
    return (float(np.linalg.norm(t.object_pose(env.data, "strip")[:3, 3] - strip0)) * 1e3, (d_max - d0) * 1e3)


def quantiles(v: list[float]) -> dict:
    return {"n": len(v), **({} if not v else {k: round(float(q), 1) for k, q in
                                               zip(("q50", "q90", "max"), np.quantile(v, [0.5, 0.9, 1.0]))})}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(8)))
    ap.add_argument("--every", type=int, default=20, help="probe every this many steps")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    env = XTrainerEnv(task="usb", obs_mode="state")
    t = env.task
    probes = []
    for seed in args.seeds:
        env.reset(seed=seed)
        expert = t.make_expert()
        expert.reset(env, np.random.default_rng(seed))
        for step in range(1200):
            _, info = env.act(expert.act(env))
            if info["is_success"]:
                break
            if step % args.every or not (t.held(env.data, "left", "strip") and t.held(env.data, "right", "lamp")):
                continue
            snap, own = env.snapshot(), expert.get_state()
            same = t.make_expert()
            same.set_state(own)
            fresh = t.make_expert()
            fresh.reset(env, np.random.default_rng([99, seed, step]))
            row = {"seed": seed, "step": step, "stage": info["stage"], "continuation": run_from(env, snap, same),
                   "fresh_expert": run_from(env, snap, fresh)}
            env.restore(snap)
            expert.set_state(own)
            probes.append(row)
    at_hold = [p for p in probes if p["continuation"][0] < 1.0]
    summary = {}
    for name, rows in (("all", probes), ("strip_at_holding_pose", at_hold)):
        summary[name] = {who: {"strip_moved_mm": quantiles([p[who][0] for p in rows]),
                               "plug_retreat_mm": quantiles([p[who][1] for p in rows])}
                         for who in ("continuation", "fresh_expert")}
    result = {**provenance("expert_takeover_probe.py", argv), "steps_per_probe": STEPS, "summary": summary,
              "probes": probes}
    write_result(result, args.out, shown=summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
