"""The MuJoCo model behind the emulators: stepped in real time with each step's servo target,
bitwise the simulator's model (docs/platform.md §Protocol, §MuJoCo)."""

import mujoco
import numpy as np
import pytest
from bench_model import bench_at_home

from envs.kinematics import forward_kinematics
from envs.xtrainer import home_qpos
from hardware.bench_physics import MAX_CATCH_UP_S, BenchPhysics


def _ramp(home: np.ndarray, t: float) -> np.ndarray:
    """A 5 deg ServoJ on J2 over 40 ms, starting at t = 100.01 s."""
    return home + np.deg2rad([0, 5, 0, 0, 0, 0]) * min(1.0, max(0.0, (t - 100.01) / 0.04))


def test_catching_up_in_bursts_is_the_simulators_model_stepped_with_each_steps_target():
    physics = BenchPhysics(clock=lambda: 100.0)  # step 0 at t = 100 s; sync() is told the time here
    home = home_qpos("left")
    physics.drive_arm("left", lambda t: _ramp(home, t))
    for now in (100.003, 100.0305, 100.0311, 100.09, 100.2):  # bursts of different lengths
        physics.sync(now)
    n = int(np.floor(0.2 / physics.dt))
    assert physics.time == pytest.approx(100.0 + n * physics.dt)

    m, d, ids = bench_at_home()
    qadr, act = ids["left"]
    for k in range(n):
        d.ctrl[act] = _ramp(home, 100.0 + (k + 1) * physics.dt)  # the target at the end of each step
        mujoco.mj_step(m, d)
    q, qd = physics.joints("left")
    np.testing.assert_array_equal(q, d.qpos[qadr])  # bitwise: the same model, the same commands
    assert abs(np.rad2deg(q[1] - home[1]) - 5) < 0.1  # and the arm got there
    np.testing.assert_array_equal(physics.joints("right")[0], d.qpos[ids["right"][0]])  # the other arm held
    # The model's flange is the DH chain's end (the tool vector's convention).
    np.testing.assert_allclose(physics.flange_pose("left"), forward_kinematics(q, tool=0.0), atol=1e-9)


def test_a_long_stall_skips_ahead_instead_of_replaying_everything():
    physics = BenchPhysics(clock=lambda: 0.0)
    physics.sync(3.0)
    assert physics.time == pytest.approx(3.0, abs=physics.dt)
    assert physics.skipped_s == pytest.approx(3.0 - MAX_CATCH_UP_S, abs=physics.dt)


def test_placing_an_arm_and_refusing_a_second_controller():
    physics = BenchPhysics(clock=lambda: 0.0)
    q = home_qpos("right") + [0.1, -0.2, 0.1, 0, 0, 0]
    physics.place_arm("right", q)
    physics.sync(0.2)
    np.testing.assert_allclose(physics.joints("right")[0], q, atol=1e-4)  # held there (static sag only)
    physics.drive_arm("right", lambda t: q)
    with pytest.raises(ValueError, match="right arm of this bench is already driven"):
        physics.drive_arm("right", lambda t: q)
    with pytest.raises(ValueError, match="unknown arm 'middle'"):
        physics.place_arm("middle", q)
