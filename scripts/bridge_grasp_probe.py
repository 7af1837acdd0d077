"""Do Smooth-Interpolation bridges keep a held object held? (issue 14, part 1; docs/tuples.md)

    python scripts/bridge_grasp_probe.py --seeds 0 1 2 3 4 5 --every 2 --out results/usb/bridge_grasp_probe.json

A pair is recorded with the USB scripted expert while both arms hold their objects: ``tau^l`` is
the expert's own executed segment, ``tau^w`` the expert's continuation from the same restored
state with a re-drawn holding pose (so the bridges have to travel, as after a real
intervention). For every Case-1 state ``M`` the probe restores the simulator exactly to ``M``,
executes the first ``n_action_steps`` rows of the bridged chunk ``a^w`` and checks that both
grasps hold: both fingers still touch each object and no slip or drop predicate fires (the
task's slip predicate includes a 10 mm / 10 degree drift in the hand); the largest drift of an
object in its gripper is recorded too. It compares the bridge as built by :func:`flowpro.tuples.build_pair_tuples`
(from the command in effect at ``M``) with a bridge from the measured pose at ``M`` (the old
rule) and with ``tau^w``'s own chunk from ``J``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import envs  # noqa: F401  (headless rendering before mujoco loads)
from envs.env import XTrainerEnv
from envs.rollout import ExpertPolicy
from flowpro.interpolation import closest_index, smooth_interpolate
from flowpro.tuples import SOURCE_L, build_pair_tuples, chunk_at

GRASPS = (("left", "strip"), ("right", "lamp"))
LOST = ("strip_slip", "lamp_slip", "strip_dropped", "lamp_dropped")


@dataclass
class HeldPair:
    """A recorded pair whose ``tau^l`` frames can be restored (``snapshots[i]`` is the state at frame ``i``)."""

    env: XTrainerEnv
    states_l: np.ndarray
    actions_l: np.ndarray
    states_w: np.ndarray
    actions_w: np.ndarray
    snapshots: list


def _run_expert(env: XTrainerEnv, policy: ExpertPolicy, steps: int) -> tuple[list, list, list]:
    states, actions, snaps = [], [], []
    obs = env.observe()
    for _ in range(steps):
        snaps.append(env.snapshot())
        action = policy.predict_chunk(obs, env.task_description)[0]
        states.append(obs["agent_pos"])
        actions.append(action)
        obs, _ = env.act(action)
    return states, actions, snaps


def record_held_pair(seed: int, n_l: int = 75, n_w: int = 90, settle: int = 10) -> HeldPair:
    """Run the expert until both objects are held and lifted (stage ``align``), then record
    ``tau^l`` (``n_l`` frames) and, from the same restored state, ``tau^w`` (``n_w`` frames) with
    the expert's holding pose re-drawn."""
    env = XTrainerEnv(task="usb", obs_mode="state")
    policy = ExpertPolicy(env, seed)
    obs, info = env.reset(seed=seed)
    policy.reset()
    aligned = 0
    while aligned < settle:
        if env.time_s >= env.time_limit_s:
            raise RuntimeError(f"seed {seed}: the expert never held both objects")
        obs, info = env.act(policy.predict_chunk(obs, env.task_description)[0])
        aligned = aligned + 1 if info["stage"] == "align" else 0
    start, expert_state = env.snapshot(), policy.expert.get_state()
    states_l, actions_l, snaps = _run_expert(env, policy, n_l)
    env.restore(start)
    rng = np.random.default_rng([seed, 1])
    policy.expert.set_state({**expert_state, "hold_offset": rng.uniform(-0.015, 0.015, 3).tolist()})
    states_w, actions_w, _ = _run_expert(env, policy, n_w)
    return HeldPair(env, np.array(states_l), np.array(actions_l), np.array(states_w), np.array(actions_w), snaps)


def grasp_held(pair: HeldPair, frame: int, rows: np.ndarray) -> tuple[bool, float]:
    """Restore ``tau^l`` frame ``frame``, execute ``rows``; (both grasps held, largest drift in metres)."""
    env = pair.env
    env.restore(pair.snapshots[frame])
    task = env.task

    def rel(arm: str, obj: str) -> np.ndarray:
        return (np.linalg.inv(task.tool_pose(env.data, arm)) @ task.object_pose(env.data, obj))[:3, 3]

    ref = {obj: rel(arm, obj) for arm, obj in GRASPS}
    drift, lost = 0.0, False
    for row in rows:
        _, info = env.act(row)
        lost |= any(k in LOST for k in info["failures"])
        drift = max(drift, *(float(np.linalg.norm(rel(arm, obj) - ref[obj])) for arm, obj in GRASPS))
    held = all(task.held(env.data, arm, obj) for arm, obj in GRASPS)
    return held and not lost, drift


def probe(pair: HeldPair, h: int = 30, n_rows: int = 15, every: int = 1) -> dict:
    """Every ``every``-th Case-1 state of ``pair``, executed with three chunks; per chunk the
    number of probes whose grasps held and the drifts."""
    tuples = build_pair_tuples(pair.states_l, pair.actions_l, pair.states_w, pair.actions_w, h)
    m = h // 2
    out: dict = {"command": {"held": 0, "drift_mm": []}, "measured": {"held": 0, "drift_mm": []},
                 "tau_w": {"held": 0, "drift_mm": []}, "probes": 0}
    for k in np.flatnonzero(tuples.source == SOURCE_L)[::every]:
        i = int(tuples.frame[k])
        target, _ = chunk_at(pair.actions_w, closest_index(pair.states_l[i], pair.states_w), h)
        chunks = {"command": tuples.a_w[k], "measured": smooth_interpolate(pair.states_l[i], target, m),
                  "tau_w": target}
        for name, chunk in chunks.items():
            ok, drift = grasp_held(pair, i, chunk[:n_rows])
            out[name]["held"] += ok
            out[name]["drift_mm"].append(round(drift * 1e3, 3))
        out["probes"] += 1
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--every", type=int, default=1, help="probe every k-th Case-1 state")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    per_seed = {}
    for seed in args.seeds:
        per_seed[str(seed)] = probe(record_held_pair(seed), every=args.every)
        r = per_seed[str(seed)]
        print(f"seed {seed}: held {r['command']['held']}/{r['probes']} (command), {r['measured']['held']}/"
              f"{r['probes']} (measured), {r['tau_w']['held']}/{r['probes']} (tau^w)", file=sys.stderr)
    total = {name: sum(r[name]["held"] for r in per_seed.values()) for name in ("command", "measured", "tau_w")}
    n = sum(r["probes"] for r in per_seed.values())
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    result = {"command": "python scripts/bridge_grasp_probe.py " + " ".join(argv or sys.argv[1:]), "git_commit": commit,
              "probes": n, "held": total, "per_seed": per_seed}
    print(json.dumps({"probes": n, "held": total}))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
