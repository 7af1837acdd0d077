"""env.act is bitwise what it was at ac987f7 (issue 14, part 4: the speed-ups around the physics).

Fixed scenes driven by fixed actions; every step's observation, full physics state, reward,
termination flags, info (IK reports included) and snapshot (physics and Python side) go into one
SHA-256 chain, compared with the digest recorded at ac987f7, before any speed-up. A speed-up that
changes a single bit anywhere fails here.

The USB scenario follows the scripted expert with a seeded perturbation (so the fingers close on
the strip and the lamp, and the task view sees contacts), plus, on three of the first 30 steps, a far jump that
leaves the safety box or the reach (the IK's clamped, unreachable and joint-step-clamped paths).
Reach takes seeded random targets around the home pose; a joint-mode USB scenario checks the
other action path. The USB scenario ends by restoring a snapshot and replaying 40 of its steps.
``per_step_digests`` gives one digest per step, to find the first step that
differs against a checkout of ac987f7 (``python tests/test_step_bitwise.py SCENARIO``).

The digests are of this machine's floating point (MuJoCo 4.0.0, NumPy, DAQP builds in the venv);
another CPU or library build may legitimately differ (see tests/test_reproducibility.py).
"""

from __future__ import annotations

import hashlib
import pickle
import sys

import mujoco
import numpy as np
import pytest

from envs.control import ik_info
from envs.env import XTrainerEnv
from envs.geometry import ARMS, GRIP, POS, ROT6, arm_slice

EXPECTED = {
    "usb_expert_perturbed": "d1faae0cb1c391ff8e9d1d2dbdba995a704af24c9654edaf1ea91aacb5be4bec",
    "reach_random": "7ad109164e97d70e657ebfa152d1db92581cdfbd25626ba1ec0350a7f7ab5b24",
    "usb_joint": "a88f37ca08cee67acee4a1f8c97af5e93b3e91e051ed85fe6d0dd8dd730d2c5b",
}


def _feed(h, obj) -> None:
    """Hash a nested observation / info value exactly (floats by their round-trip repr)."""
    if isinstance(obj, np.ndarray):
        h.update(f"nd{obj.dtype.str}{obj.shape}".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k, v in obj.items():
            h.update(repr(k).encode())
            _feed(h, v)
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[" if isinstance(obj, list) else b"(")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


RECORDED_INFO_KEYS = ("task", "stage", "is_success", "completion_time_s", "failures", "terminal_failure",
                      "failures_seen", "time_s", "ik")


def _as_recorded(info: dict) -> dict:
    """``info`` in the form the digests were recorded in: ``completion_time_s`` None before success
    and ``ik`` None where no IK ran, in the order of then. Issue 17 gave info one schema from reset
    on (the key absent until success, an unsolved report), which changes no value."""
    assert set(info) <= set(RECORDED_INFO_KEYS), f"info has new keys {set(info) - set(RECORDED_INFO_KEYS)}"
    old = {**info, "completion_time_s": info.get("completion_time_s"),
           "ik": None if info["ik"] == ik_info(None) else info["ik"]}
    return {k: old[k] for k in RECORDED_INFO_KEYS}


def _step_digest(env: XTrainerEnv, out) -> str:
    h = hashlib.sha256()
    _feed(h, (*out[:-1], _as_recorded(out[-1])))
    snap = env.snapshot()
    h.update(snap.physics.tobytes())
    _feed(h, pickle.loads(snap.python))  # its values: pickle's bytes also encode object identity
    for name in ("qpos", "qvel", "act", "ctrl", "qacc_warmstart", "xpos", "xmat", "site_xpos", "site_xmat",
                 "sensordata", "contact"):
        value = getattr(env.data, name)
        if name == "contact":
            h.update(np.asarray(value.geom).tobytes())
            h.update(np.asarray(value.dist).tobytes())
        else:
            h.update(np.asarray(value).tobytes())
    return h.hexdigest()


def _usb_expert_perturbed(steps: int = 320):
    env = XTrainerEnv(task="usb", obs_mode="state")
    expert = env.task.make_expert()
    out = env.reset(seed=1002)
    expert.reset(env, np.random.default_rng(7))
    rng = np.random.default_rng(11)
    yield env, out
    actions, snap = [], None
    for t in range(steps):
        if t == 20:
            snap = env.snapshot()
        a = expert.act(env).astype(np.float64)
        for arm in ARMS:
            s = arm_slice(arm)
            a[s][POS] += rng.normal(0.0, 0.0005, 3)
            a[s][ROT6] += rng.normal(0.0, 0.002, 6)
            if t < 30 and t % 9 == 8:  # far: out of the safety box or the reach, a large joint step
                a[s][POS] += rng.uniform(-0.6, 0.6, 3)
                a[s][ROT6] = rng.normal(0.0, 1.0, 6)
        a = a.astype(np.float32) if t % 2 else a
        actions.append(a)
        yield env, env.step(a)
    # Rollback: back to step 20 and the same actions again (far jumps included); nothing the
    # controller keeps between calls may make the replay differ.
    env.restore(snap)
    for a in actions[20:60]:
        yield env, env.step(a)


def _reach_random(steps: int = 40):
    env = XTrainerEnv(task="reach", obs_mode="state")
    out = env.reset(seed=3)
    home = out[0]["agent_pos"].copy()
    rng = np.random.default_rng(5)
    yield env, out
    for t in range(steps):
        a = home.copy()
        for arm in ARMS:
            s = arm_slice(arm)
            a[s][POS] += rng.uniform(-0.08, 0.08, 3)
            a[s][ROT6] += rng.normal(0.0, 0.05, 6)
            a[s][GRIP] = rng.uniform(0.0, 1.0)
        yield env, env.step(a)


def _usb_joint(steps: int = 30):
    env = XTrainerEnv(task="usb", obs_mode="state", action_mode="joint")
    out = env.reset(seed=1005)
    q0 = out[0]["joint_pos"].copy()
    rng = np.random.default_rng(9)
    yield env, out
    for _ in range(steps):
        yield env, env.step(q0 + rng.normal(0.0, 0.05, 14))


SCENARIOS = {"usb_expert_perturbed": _usb_expert_perturbed, "reach_random": _reach_random, "usb_joint": _usb_joint}


def per_step_digests(name: str) -> list[str]:
    out = []
    for env, step_out in SCENARIOS[name]():
        out.append(_step_digest(env, step_out))
    env.close()
    return out


def scenario_digest(name: str) -> str:
    return hashlib.sha256("".join(per_step_digests(name)).encode()).hexdigest()


PROBE_XML = """<mujoco><option timestep="0.002"/><worldbody><geom type="plane" size="1 1 0.1"/>
<body pos="0 0 0.3" euler="20 35 10"><freejoint/><geom type="box" size="0.05 0.03 0.02"/></body>
<body pos="0.02 0 0.5" euler="5 -10 60"><freejoint/><geom type="capsule" size="0.02 0.05"/></body>
</worldbody></mujoco>"""
RECORDED_ON = "d31f2bbe09188847"  # platform_probe() where EXPECTED was recorded


def platform_probe() -> str:
    """A digest of floating point that involves none of this project's code: NumPy's vectorised
    transcendental functions and products (their kernels depend on the CPU's instruction set) and
    MuJoCo's contact dynamics. Where it differs, the EXPECTED digests cannot be expected to hold."""
    x = np.linspace(-3.0, 3.0, 4099)
    m = mujoco.MjModel.from_xml_string(PROBE_XML)
    d = mujoco.MjData(m)
    for _ in range(300):
        mujoco.mj_step(m, d)
    parts = [np.sin(x), np.cos(x), np.exp(x), np.arctan2(x, 1.3 - x), np.sqrt(np.abs(x)),
             np.outer(x[:64], x[:64]) @ np.cos(x[:64]), d.qpos, d.qvel]
    return hashlib.sha256(b"".join(np.ascontiguousarray(p).tobytes() for p in parts)).hexdigest()[:16]


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_env_act_is_bitwise_what_it_was(name):
    probe = platform_probe()
    if probe != RECORDED_ON:
        pytest.skip(f"this machine's floating point differs from the one the digests were recorded on "
                    f"(platform probe {probe}, recorded {RECORDED_ON}); tests/test_reproducibility.py still "
                    "checks that a rerun here is bitwise identical")
    assert scenario_digest(name) == EXPECTED[name]


def test_the_usb_scenario_reaches_contacts_and_the_ik_edge_cases():
    """The scenario is not trivially easy: the fingers touch the objects and the IK's clamps fire."""
    stages, ik_flags = set(), set()
    for env, out in _usb_expert_perturbed():
        info = out[-1]
        stages.add(info["stage"])
        for report in (info["ik"] or {}).values():
            ik_flags |= {k for k in ("clamped_to_safety_box", "joint_step_clamped") if report[k]}
            if not report["reachable"]:
                ik_flags.add("unreachable")
    env.close()
    assert "lift" in stages
    assert ik_flags == {"clamped_to_safety_box", "joint_step_clamped", "unreachable"}


if __name__ == "__main__":
    for name in sys.argv[1:] or sorted(SCENARIOS):
        digests = per_step_digests(name)
        print(name, hashlib.sha256("".join(digests).encode()).hexdigest(), "platform probe", platform_probe())
        if len(sys.argv) > 1:
            print("\n".join(digests))
