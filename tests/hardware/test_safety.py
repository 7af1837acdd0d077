"""Safety layer: limits, J3 sign rule, joint-step ramping, safety box, downward speed, watchdog
(docs/platform.md §Safety limits)."""

import time

import numpy as np
import pytest

from envs.control import MAX_JOINT_STEP_RAD, SAFETY_BOX
from hardware import dobot_protocol as dp
from hardware.dobot_client import DobotClient, DobotConfig
from hardware.emulator import ArmEmulator
from hardware.emulator_process import EmulatorProcess
from hardware.safety import ArmLimits, SafeArm, SafetyStop, SafetyViolation, check_joint_target, plan_motion, ramp

HOME = {"left": np.deg2rad([-90, 0, -90, 0, 90, 90]), "right": np.deg2rad([90, 0, 90, 0, -90, -90])}
DT = 1 / 30


# ----------------------------------------------------------------------------- pure checks
def test_limits_reuse_the_simulator_constants():
    for arm in ("left", "right"):
        lim = ArmLimits.for_arm(arm)
        assert lim.max_step_rad == MAX_JOINT_STEP_RAD == 0.9
        np.testing.assert_array_equal(lim.box_lo, SAFETY_BOX[arm][0])
        np.testing.assert_array_equal(lim.box_hi, SAFETY_BOX[arm][1])
        np.testing.assert_allclose(np.rad2deg(lim.joint_hi), [360, 180, 160, 360, 360, 360])
    with pytest.raises(ValueError, match="unknown arm"):
        ArmLimits.for_arm("middle")


@pytest.mark.parametrize("arm, j3_deg, ok", [("left", -90, True), ("left", 10, False), ("left", 0, False),
                                             ("right", 90, True), ("right", -10, False)])
def test_j3_sign_rule(arm, j3_deg, ok):
    q = HOME[arm].copy()
    q[2] = np.deg2rad(j3_deg)
    if ok:
        check_joint_target(ArmLimits.for_arm(arm), q)
    else:
        with pytest.raises(SafetyViolation, match=f"{arm} arm: J3 = .*sign rule"):
            check_joint_target(ArmLimits.for_arm(arm), q)


def test_joint_limits_and_bad_values_are_refused_by_name():
    lim = ArmLimits.for_arm("left")
    q = HOME["left"].copy()
    q[1] = np.deg2rad(181)
    with pytest.raises(SafetyViolation, match=r"J2 = 181.00 deg outside its limits \[-180, 180\]"):
        check_joint_target(lim, q)
    with pytest.raises(SafetyViolation, match="NaN"):
        check_joint_target(lim, np.r_[HOME["left"][:5], np.nan])
    with pytest.raises(SafetyViolation, match="6 joint values"):
        check_joint_target(lim, HOME["left"][:5])


def test_ramp_splits_large_moves_into_steps_below_the_limit():
    q0 = HOME["left"]
    q1 = q0 + [2.0, 0, 0, 0, 0, -0.3]
    path = ramp(q0, q1, 0.9)
    assert len(path) == 3
    steps = np.diff(np.vstack([q0, *path]), axis=0)
    assert np.max(np.abs(steps)) <= 0.9 + 1e-12
    np.testing.assert_allclose(path[-1], q1)
    assert len(ramp(q0, q0 + 0.1, 0.9)) == 1


def test_plan_motion_limits_the_downward_tool_speed():
    lim = ArmLimits.for_arm("left")
    q1 = HOME["left"] + [0, -0.45, 0, 0, 0, 0]  # J2 back: the tool drops ~0.15 m
    path = plan_motion(lim, HOME["left"], q1, DT)
    z = np.array([lim.tool_position(q)[2] for q in [HOME["left"], *path]])
    assert z[-1] < z[0] - 0.12  # it does go down ...
    assert np.max(-np.diff(z)) / DT <= 1.0 + 1e-9  # ... no faster than 1 m/s
    assert len(path) >= 5
    # Upward moves of the same size are not slowed down.
    assert len(plan_motion(lim, q1, HOME["left"], DT)) == 1


def test_plan_motion_refuses_leaving_the_safety_box_but_allows_returning():
    lim = ArmLimits.for_arm("left")
    out = HOME["left"] + [-1.2, 0, 0, 0, 0, 0]  # swings the tool toward the base (y > -160 mm)
    assert lim.box_distance(lim.tool_position(out)) > 0
    with pytest.raises(SafetyViolation, match="left arm: tool point .* leaves the safety box"):
        plan_motion(lim, HOME["left"], out, DT)
    back = plan_motion(lim, out, HOME["left"], DT)  # from outside, moving back in is allowed
    np.testing.assert_allclose(back[-1], HOME["left"])


# ----------------------------------------------------------------------------- against the emulator
@pytest.fixture
def rig(request):
    kw = dict(getattr(request, "param", {}))
    safe_kw = {"command_timeout_s": 0.3, **kw.pop("safe", {})}
    emu = EmulatorProcess(ArmEmulator, "left", "127.0.0.1", dashboard_port=0, motion_port=0, feedback_port=0,
                          **kw).start()
    client = DobotClient(DobotConfig("127.0.0.1", "V3", emu.ports["dashboard"], emu.ports["motion"],
                                     emu.ports["feedback"], timeout_s=1.0)).connect()
    client.start_up()
    safe = SafeArm(client, "left", control_dt=DT, **safe_kw)
    yield emu, client, safe
    safe.close()
    client.close()
    emu.close()


def test_reach_a_target_through_the_safety_layer_where_a_raw_jump_alarms(rig):
    emu, client, safe = rig
    target = HOME["left"] + [1.2, 0, 0, 0, 0, 0]  # 69 deg: the controller alarms on such a servo jump
    assert safe.servo(target) == 2  # ramped into two commands of 0.6 rad
    safe.idle()  # no more commands coming: the command watchdog would stop the arm otherwise
    fb = client.wait_for(lambda f: np.max(np.abs(f.q_actual_rad - target)) < 1e-3, 2.0, "target")
    assert not fb.in_error and safe.tripped is None
    client.servo_j(np.rad2deg(HOME["left"]))  # the same jump back, without the safety layer
    assert client.wait_for(lambda f: f.in_error, 0.5, "alarm").robot_mode == dp.MODE_ERROR


def test_refused_command_sends_nothing(rig):
    emu, client, safe = rig
    before = list(emu.commands_seen)
    q = HOME["left"].copy()
    q[2] = 0.2
    with pytest.raises(SafetyViolation, match="sign rule"):
        safe.servo(q)
    time.sleep(0.05)
    assert emu.commands_seen == before


def test_move_to_drives_at_a_joint_speed_and_waits(rig):
    emu, client, safe = rig
    target = HOME["left"] + [0.15, 0.1, -0.1, 0, 0, 0]
    t0 = time.monotonic()
    safe.move_to(target, speed_rad_s=0.5)
    assert time.monotonic() - t0 >= 0.25  # 0.15 rad at 0.5 rad/s
    np.testing.assert_allclose(safe.joints(), target, atol=2e-3)


def test_watchdog_stops_on_stale_feedback(rig):
    emu, client, safe = rig
    safe.servo(HOME["left"] + [0.05, 0, 0, 0, 0, 0])
    emu.faults.feedback_paused = True
    deadline = time.monotonic() + 1.0
    while not safe.stopped.is_set() and time.monotonic() < deadline:
        safe._last_command_s = time.monotonic()  # keep commanding: only the feedback is stale
        time.sleep(0.01)
    assert "feedback is" in safe.tripped and "ms old" in safe.tripped
    assert emu.commands_seen[-1] == "ResetRobot()"
    with pytest.raises(SafetyStop, match="feedback"):
        safe.servo(HOME["left"])
    emu.faults.feedback_paused = False
    client.wait_for(lambda f: True, 0.5, "feedback")
    safe.reset()
    safe.servo(HOME["left"])


# The emulator shares this process, so a stall of the whole process (~400 ms seen under CI load) ages
# its feedback as well; the tests of the other watchdog rules lift the 100 ms feedback limit so that
# only the rule under test can trip (the stale-feedback rule has its own test above).
NO_FEEDBACK_LIMIT = {"feedback_timeout_s": 10.0}


@pytest.mark.parametrize("rig", [{"safe": NO_FEEDBACK_LIMIT}], indirect=True)
def test_watchdog_stops_when_commands_stop_arriving(rig):
    emu, client, safe = rig
    safe.servo(HOME["left"] + [0.05, 0, 0, 0, 0, 0])
    assert safe.stopped.wait(1.0)
    assert safe.tripped is not None and "no command for" in safe.tripped
    assert emu.commands_seen[-1] == "ResetRobot()"


@pytest.mark.parametrize("rig", [{"max_speed_deg_s": 400.0, "safe": NO_FEEDBACK_LIMIT}], indirect=True)
def test_watchdog_trips_on_a_measured_fast_descent(rig):
    emu, client, safe = rig
    safe.engage()
    client.servo_j(np.rad2deg(HOME["left"] + [0, -0.5, 0, 0, 0, 0]), t=0.008)  # bypasses the safety layer
    assert safe.stopped.wait(1.0)
    assert "descending at" in safe.tripped
    assert emu.commands_seen[-1] == "ResetRobot()"


def test_error_mode_stops_the_safe_arm(rig):
    emu, client, safe = rig
    safe.servo(HOME["left"] + [0.02, 0, 0, 0, 0, 0])
    emu.inject_error()
    client.wait_for(lambda f: f.in_error, 0.5, "error")
    with pytest.raises(SafetyStop, match="error mode"):
        safe.servo(HOME["left"])
