"""Shared test helper: the simulator's bench model at rest at home, built here independently of
:mod:`hardware.bench_physics` (to check the emulators against a rollout of their own), with the
Feetech-like force-clamped fingers the emulator uses (docs/platform.md §Grippers)."""

import mujoco
import numpy as np

import envs  # noqa: F401  (before mujoco is used)
from envs.xtrainer import FINGER_TRAVEL_M, BenchConfig, build_xml, home_qpos

FEETECH_FINGERS = {"finger_kp": 3000.0, "finger_force_n": 12.0}  # the 30 % torque limit


def bench_at_home() -> tuple[mujoco.MjModel, mujoco.MjData, dict[str, tuple[list[int], list[int]]]]:
    """Model, data with both arms at home (servos holding there, grippers open), and each arm's
    ``(qpos addresses, actuator ids)`` of its six joints."""
    m = mujoco.MjModel.from_xml_string(build_xml(BenchConfig(**FEETECH_FINGERS)))
    d = mujoco.MjData(m)
    ids = {}
    for arm in ("left", "right"):
        qadr = [int(m.joint(f"{arm}/j{i + 1}").qposadr[0]) for i in range(6)]
        act = [int(m.actuator(f"{arm}/j{i + 1}").id) for i in range(6)]
        d.qpos[qadr] = d.ctrl[act] = home_qpos(arm)
        for f in "ab":
            d.qpos[m.joint(f"{arm}/finger_{f}").qposadr[0]] = FINGER_TRAVEL_M
            d.ctrl[m.actuator(f"{arm}/finger_{f}").id] = FINGER_TRAVEL_M
        ids[arm] = (qadr, act)
    mujoco.mj_forward(m, d)
    return m, d, ids


def settle(m: mujoco.MjModel, d: mujoco.MjData, seconds: float) -> None:
    for _ in range(int(np.ceil(seconds / m.opt.timestep))):
        mujoco.mj_step(m, d)
