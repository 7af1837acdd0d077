"""Control steps per second of the simulated X-Trainer, and the cost of snapshot + restore.

    python -m benchmarks.perf.platform_speed [--steps 900] [--out results/perf/platform_speed.json]

Targets (issue 2): three 96x96 cameras >= 3x real time at 30 Hz (>= 100 steps/s); state mode
>= 10x real time (>= 300 steps/s); snapshot + restore < 1 % of a control step. All numbers of
one run come from the same process, so their ratios are comparable.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import envs  # noqa: F401  (first: selects headless rendering before mujoco loads)

import mujoco  # noqa: E402
from benchmarks.perf import write_result  # noqa: E402
from envs.env import XTrainerEnv  # noqa: E402
from envs.rollout import ExpertPolicy  # noqa: E402


def steps_per_second(env: XTrainerEnv, steps: int) -> float:
    """Expert-driven control steps per second, resets excluded."""
    policy = ExpertPolicy(env, seed=0)
    env.reset(seed=0)
    policy.reset()
    elapsed, episode = 0.0, 0
    for _ in range(steps):
        action = policy.predict_chunk(None, "")[0]
        t0 = time.perf_counter()
        _, _, term, trunc, _ = env.step(action)
        elapsed += time.perf_counter() - t0
        if term or trunc:
            episode += 1
            env.reset(seed=episode)
            policy.reset()
    return steps / elapsed


def rollback_seconds(env: XTrainerEnv, n: int = 3000) -> tuple[float, float]:
    """Mean seconds of one snapshot() and of one restore() (without re-rendering the observation)."""
    env.reset(seed=0)
    env.step(env.ee_pose())
    t0 = time.perf_counter()
    for _ in range(n):
        snap = env.snapshot()
    t1 = time.perf_counter()
    for _ in range(n):
        env.restore(snap, observe=False)
    t2 = time.perf_counter()
    return (t1 - t0) / n, (t2 - t1) / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="reach")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--out", default="results/perf/platform_speed.json")
    args = ap.parse_args()

    rgb = XTrainerEnv(task=args.task, obs_mode="rgb", image_size=(96, 96))
    state = XTrainerEnv(task=args.task, obs_mode="state")
    sps_rgb = steps_per_second(rgb, args.steps)
    sps_state = steps_per_second(state, args.steps)
    snap_s, restore_s = rollback_seconds(rgb)
    step_rgb_s = 1.0 / sps_rgb
    hz = rgb.cfg.control_hz
    result = {
        "command": f"python -m benchmarks.perf.platform_speed --task {args.task} --steps {args.steps}",
        "task": args.task,
        "control_hz": hz,
        "physics_substeps_per_control_step": rgb.cfg.substeps,
        "rgb_3x96x96_steps_per_s": round(sps_rgb, 1),
        "rgb_x_realtime": round(sps_rgb / hz, 2),
        "state_steps_per_s": round(sps_state, 1),
        "state_x_realtime": round(sps_state / hz, 2),
        "snapshot_us": round(snap_s * 1e6, 2),
        "restore_us": round(restore_s * 1e6, 2),
        "snapshot_physics_bytes": int(mujoco.mj_stateSize(rgb.model, mujoco.mjtState.mjSTATE_INTEGRATION) * 8),
        "snapshot_pct_of_rgb_step": round(100 * snap_s / step_rgb_s, 3),
        "snapshot_pct_of_state_step": round(100 * snap_s * sps_state, 3),
        "snapshot_plus_restore_pct_of_rgb_step": round(100 * (snap_s + restore_s) / step_rgb_s, 3),
        "snapshot_plus_restore_pct_of_state_step": round(100 * (snap_s + restore_s) * sps_state, 3),
        "targets": {"rgb_x_realtime": 3.0, "state_x_realtime": 10.0, "snapshot_plus_restore_pct": 1.0},
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "mujoco": mujoco.__version__, "MUJOCO_GL": os.environ.get("MUJOCO_GL"),
                    "LP_NUM_THREADS": os.environ.get("LP_NUM_THREADS")},
    }
    rgb.close()
    state.close()
    write_result(args.out, result)


if __name__ == "__main__":
    main()
