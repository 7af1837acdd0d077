"""Command-to-feedback latency and 30 Hz command-loop jitter through the Dobot emulator (issue 8).

    python -m benchmarks.perf.hardware_latency [--trials 200] [--steps 300] [--out results/perf/hardware_latency.json]

Everything runs over real loopback TCP with the project's client code (docs/platform.md §Protocol: ServoJ on the
motion port, 1440-byte feedback packets pushed every 8 ms on 30004):

- **Command-to-feedback latency**: with the arm at rest, send one ``ServoJ`` to a changed target
  (±0.5° on J1) at a random phase of the feedback tick, and time until the feedback reader holds
  a packet whose ``QTarget`` has changed. Up to one 8 ms tick passes before the next packet, so
  about half a tick (4 ms) is the floor of the mean. (``QActual`` is no clean signal here: the
  emulated arm moves in the MuJoCo model, whose servos are still settling from the previous move.)
- **Command-loop jitter**: :class:`hardware.backend.RealXTrainer` stepping both arms at 30 Hz (a
  slow sinusoid in end-effector space through the simulator's IK and the safety layer), the
  period between consecutive ``ServoJ`` commands as received by the left controller, and the
  control loop's own period (between ``act`` returns): p50 / p99 / max, with the number of
  overrun periods.

The machine has 2 cores shared with other jobs; the load average is recorded with the numbers.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

import envs  # noqa: F401  (headless rendering before mujoco loads)
from benchmarks.perf import write_result
from envs.geometry import ARMS, POS, arm_slice
from hardware.backend import RealXTrainer
from hardware.dobot_client import DobotClient, DobotConfig
from hardware.emulator import ArmEmulator, XTrainerEmulator


def _stats_ms(values_s: list[float] | np.ndarray) -> dict[str, float]:
    v = np.asarray(values_s) * 1000.0
    return {"p50": round(float(np.percentile(v, 50)), 3), "p99": round(float(np.percentile(v, 99)), 3),
            "max": round(float(np.max(v)), 3), "mean": round(float(np.mean(v)), 3), "n": int(v.size)}


def _config(e: ArmEmulator) -> DobotConfig:
    return DobotConfig(e.host, "V3", e.ports["dashboard"], e.ports["motion"], e.ports["feedback"], timeout_s=2.0)


def command_latency(trials: int) -> dict:
    """Time from a ServoJ send until the feedback shows the changed target."""
    with ArmEmulator("left", dashboard_port=0, motion_port=0, feedback_port=0) as emu:
        client = DobotClient(_config(emu)).connect()
        try:
            client.start_up()
            reader = client.feedback_reader
            assert reader is not None
            latency_s, missed = [], 0
            rng = np.random.default_rng(0)
            for k in range(trials):
                # The previous segment (t = 0.03 s) is done: QTarget stands still. The random part
                # spreads the sends over the 8 ms feedback tick instead of locking to its phase.
                time.sleep(0.05 + rng.uniform(0.0, 0.008))
                before = reader.latest
                q = before.q_target_deg.copy()
                q[0] += 0.5 if k % 2 == 0 else -0.5
                t0 = time.monotonic()
                client.servo_j(q, t=0.03)
                fb = reader.wait(lambda f, b=before: np.max(np.abs(f.q_target_deg - b.q_target_deg)) > 1e-9, 0.5, t0)
                if fb is None:
                    missed += 1
                    continue
                latency_s.append(fb.received_s - t0)
        finally:
            client.close()
    return {"servoj_to_changed_qtarget_ms": _stats_ms(latency_s), "missed": missed, "feedback_period_ms": 8.0}


def loop_jitter(steps: int, hz: float = 30.0) -> dict:
    """Period statistics of a RealXTrainer control loop at ``hz`` with both arms moving."""
    bench = XTrainerEmulator(dashboard_port=0, motion_port=0, feedback_port=0).start()  # both arms, one model
    emus = bench.arms
    backend = RealXTrainer({arm: _config(e) for arm, e in emus.items()}, control_hz=hz, time_limit_s=steps / hz + 1)
    try:
        backend.connect()
        obs, _ = backend.reset()
        home = obs["agent_pos"].copy()
        t_start = time.monotonic()
        returns = []
        for k in range(steps):
            action = home.copy()
            for arm in ARMS:  # 2 cm circles at 0.5 Hz
                phase = 2 * np.pi * 0.5 * k / hz
                action[arm_slice(arm)][POS] += 0.02 * np.array([np.sin(phase), 1 - np.cos(phase), 0.0])
            backend.act(action)
            returns.append(time.monotonic())
        received = np.array([t for t in emus["left"].servoj_times if t >= t_start])
    finally:
        backend.close()
        bench.close()
    target = 1.0 / hz
    loop = np.diff(returns)
    ctrl = np.diff(received)
    return {"hz": hz, "steps": steps, "target_period_ms": round(1000 * target, 3),
            "loop_period_ms": _stats_ms(loop), "loop_abs_jitter_ms": _stats_ms(np.abs(loop - target)),
            "controller_servoj_period_ms": _stats_ms(ctrl),
            "controller_abs_jitter_ms": _stats_ms(np.abs(ctrl - target)),
            "overruns": backend.overruns,
            "physics_skipped_s": bench.physics.skipped_s}  # > 0: the emulator's model fell behind real time


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--out", default="results/perf/hardware_latency.json")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    latency = command_latency(args.trials)
    jitter = loop_jitter(args.steps)
    argv_text = " ".join(argv) if argv is not None else " ".join(sys.argv[1:])
    out = {
        "command": f"python -m benchmarks.perf.hardware_latency {argv_text}".strip(),
        "what": "loopback TCP through hardware.emulator (arms in the simulator's MuJoCo model) with the "
                "project's Dobot client (docs/platform.md §Protocol)",
        "command_to_feedback": latency,
        "command_loop_30hz": jitter,
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
    }
    write_result(args.out, out)
    return out


if __name__ == "__main__":
    main()
