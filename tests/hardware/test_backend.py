"""RealXTrainer: the real-robot backend against the loopback emulators (arms over TCP, grippers on ptys)."""

import contextlib
import re

import numpy as np
import pytest

from envs.control import IKController
from envs.geometry import ARMS, GRIP, POS, ROT6, arm_slice, r6_to_matrix
from envs.rollout import Backend, RollbackBackend, rollout
from hardware import dobot_protocol as dp
from hardware import feetech as ft
from hardware.backend import RealXTrainer, keyboard_emergency_stop
from hardware.dobot_client import DobotConfig
from hardware.emulator import XTrainerEmulator
from hardware.emulator_process import EmulatorProcess
from hardware.safety import SafetyError, SafetyStop, SafetyViolation


@contextlib.contextmanager
def emulated_bench(**kwargs):
    """RealXTrainer connected to the emulated bench: both arms (TCP) and both grippers (ptys) in one model."""
    bench = EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0, grippers=True).start()
    emus, servos = bench.arms, bench.grippers
    for s in servos.values():
        s.move_by_hand(2400)  # fingers left partly closed: reset opens them
    ports = {arm: ft.SerialPort(servos[arm].path) for arm in ARMS}
    grippers = {arm: ft.Gripper(ft.FeetechBus(ports[arm]), ft.DEFAULT_CALIBRATION[arm]) for arm in ARMS}
    configs = {arm: DobotConfig(e.host, "V3", e.ports["dashboard"], e.ports["motion"], e.ports["feedback"],
                                timeout_s=1.0) for arm, e in emus.items()}
    backend = RealXTrainer(configs, grippers, **{"task_description": "reach", "time_limit_s": 0.4, **kwargs})
    try:
        backend.connect()
        yield backend, emus, servos
    finally:
        backend.close()
        for port in ports.values():
            port.close()
        bench.close()


@pytest.fixture
def bench():
    with emulated_bench() as b:
        yield b


def _servoj_deg(cmd: str) -> np.ndarray:
    return np.array([float(v) for v in re.match(r"ServoJ\(([^t]*),t=", cmd).group(1).split(",")])


def test_implements_the_rollback_backend_protocol(bench):
    backend, _, _ = bench
    assert isinstance(backend, Backend) and isinstance(backend, RollbackBackend)


def test_reset_goes_home_and_observes_like_the_simulator(bench, reach_env):
    backend, emus, servos = bench
    obs, info = backend.reset()
    sim_obs, _ = reach_env.reset(seed=0)
    # Same pose, same layout. The emulated servos sag ~0.002 deg under the fingers' weight and reset
    # returns once the joints are within 0.01 deg of home (3e-4: 0.017 deg, 0.06 mm at the tool);
    # reset waits for the grippers to open within 0.02 of their target, the fingers may still be moving.
    for row, sim_row, grip in ((obs["agent_pos"], sim_obs["agent_pos"], [arm_slice(a).start + GRIP for a in ARMS]),
                               (obs["joint_pos"], sim_obs["joint_pos"], [6, 13])):
        rest = np.setdiff1d(np.arange(row.size), grip)
        np.testing.assert_allclose(row[rest], sim_row[rest], atol=3e-4)
        np.testing.assert_allclose(row[grip], sim_row[grip], atol=0.02)
    assert servos["left"].torque_limit == 300 and info["time_s"] == 0 and not info["is_success"]


def test_ee_actions_use_the_simulators_ik_and_reach_the_target(bench):
    backend, emus, _ = bench
    obs, _ = backend.reset()
    action = obs["agent_pos"].copy()
    for arm in ARMS:
        action[arm_slice(arm)][POS] += [0.0, 0.03, 0.04]  # 3 cm forward, 4 cm up
        action[arm_slice(arm)][9] = 0.0  # close the gripper
    ik = IKController(backend.cfg)
    q_expected, _ = ik.solve({arm: backend.safe[arm].q_cmd for arm in ARMS},
                             {arm: (action[arm_slice(arm)][POS], r6_to_matrix(action[arm_slice(arm)][ROT6])) for arm in ARMS})
    obs, info = backend.act(action)
    for arm in ARMS:
        sent = [c for c in emus[arm].commands_seen if c.startswith("ServoJ")][-1]
        np.testing.assert_allclose(_servoj_deg(sent), np.rad2deg(q_expected[arm]), atol=1e-5)
    for _ in range(8):
        obs, info = backend.act(action)
    err = [np.linalg.norm(obs["agent_pos"][arm_slice(a)][POS] - action[arm_slice(a)][POS]) for a in ARMS]
    assert max(err) < 2e-3, err
    assert info["ik"]["left"]["reachable"] and info["time_s"] == pytest.approx(9 / 30)
    assert obs["joint_pos"][6] < 0.5  # the left gripper is closing


def test_a_rollout_through_the_simulators_loop(bench):
    backend, emus, _ = bench

    class Hold:
        def reset(self):
            pass

        def predict_chunk(self, obs, instruction):
            assert instruction == "reach"
            return np.repeat(obs["agent_pos"][None], 5, axis=0)

    result = rollout(backend, Hold(), n_action_steps=5, record=True)
    assert result.terminated_by == "time_limit" and result.steps == 12 and len(result.trajectory) == 12
    assert backend.overruns <= 2


def test_operator_marks_success(bench):
    backend, _, _ = bench
    obs, _ = backend.reset()
    backend.act(obs["agent_pos"])
    backend.mark_success()
    _, info = backend.act(obs["agent_pos"])
    assert info["is_success"] and info["completion_time_s"] == pytest.approx(1 / 30)


def test_an_error_on_one_arm_stops_both(bench):
    backend, emus, _ = bench
    obs, _ = backend.reset()
    emus["right"].inject_error()
    backend.clients["right"].wait_for(lambda f: f.in_error, 0.5, "error")
    with pytest.raises(SafetyStop, match="right arm stopped: controller in error mode"):
        backend.act(obs["agent_pos"])
    assert emus["left"].commands_seen[-1] == "ResetRobot()"
    with pytest.raises(SafetyStop):
        backend.act(obs["agent_pos"])
    backend.clear_stop()
    assert backend.clients["right"].feedback().robot_mode == dp.MODE_ENABLED
    backend.act(obs["agent_pos"])


def test_refused_joint_action_sends_nothing_and_stops(bench):
    b, emus, _ = bench
    b.action_mode = "joint"
    b.reset()
    row = np.concatenate([np.r_[b.safe[a].q_cmd, 1.0] for a in ARMS])
    row[2] = 0.3  # left J3 > 0 breaks the sign rule
    before = {a: len(e.commands_seen) for a, e in emus.items()}
    with pytest.raises(SafetyViolation, match="left arm: J3"):
        b.act(row)
    assert all(not c.startswith("ServoJ") for a in ARMS for c in emus[a].commands_seen[before[a]:])
    with pytest.raises(ValueError, match="shape"):
        b.act(row[:13])


def test_drive_to_times_out_with_a_clear_error(bench):
    backend, emus, _ = bench
    backend.reset()
    q = {arm: backend.safe[arm].q_cmd + [0.05, 0, 0, 0, 0, 0] for arm in ARMS}
    emus["left"].max_speed = 0.1  # the left arm crawls
    with pytest.raises(SafetyError, match="did not reach"):
        backend.drive_to(q, timeout_s=0.3)
    assert backend.safe["right"].tripped == "target not reached"


def test_drive_back_retraces_the_recorded_joint_path(bench):
    backend, emus, _ = bench
    obs, _ = backend.reset()
    path = [obs["joint_pos"]]
    action = obs["agent_pos"].copy()
    for k in range(6):
        action[arm_slice("left")][POS] += [0.01, 0.0, 0.005]
        obs, _ = backend.act(action)
        path.append(obs["joint_pos"])
    n_before = len(emus["left"].commands_seen)
    backend.drive_back(path, speed_rad_s=1.0)
    np.testing.assert_allclose(backend.observe()["joint_pos"][:6], path[0][:6], atol=2e-3)
    sent = [_servoj_deg(c) for c in emus["left"].commands_seen[n_before:] if c.startswith("ServoJ")]
    # The retrace passes near every recorded waypoint, newest first.
    for row in path[-2:0:-1]:
        assert min(np.max(np.abs(np.deg2rad(q) - row[:6])) for q in sent) < 0.01


def test_keyboard_emergency_stop_stops_both_arms(bench):
    backend, emus, _ = bench
    obs, _ = backend.reset()
    keys = iter(["x", " ", ""])
    keyboard_emergency_stop(backend, read_key=lambda: next(keys)).join(timeout=2.0)
    assert all(backend.safe[a].tripped == "keyboard emergency stop" for a in ARMS)
    assert all(emus[a].commands_seen[-1] == "ResetRobot()" for a in ARMS)
    with pytest.raises(SafetyStop, match="keyboard emergency stop"):
        backend.act(obs["agent_pos"])


def test_restore_drives_back_along_the_path_to_the_snapshot(bench):
    backend, emus, _ = bench
    backend.time_limit_s = 10.0
    obs, _ = backend.reset()
    action = obs["agent_pos"].copy()
    snaps, rows = [], [obs["joint_pos"]]
    for k in range(8):  # like the collection loop: a snapshot before every step
        snaps.append(backend.snapshot())
        action[arm_slice("left")][POS] += [0.01, 0.0, 0.006]
        action[arm_slice("right")][POS] += [-0.005, 0.0, 0.004]
        obs, info = backend.act(action)
        rows.append(obs["joint_pos"])
        if k == 5:
            backend.mark_success()
            backend.mark_failure("slip")
    assert info["is_success"] and info["failures"] == ["slip"]
    assert snaps[3].index == 3 and snaps[3].step == 3
    np.testing.assert_array_equal(snaps[3].joint_pos, rows[3])  # the observation the step started from

    n_before = len(emus["left"].commands_seen)
    obs = backend.restore(snaps[3], speed_rad_s=1.0)
    np.testing.assert_allclose(obs["joint_pos"][:6], snaps[3].joint_pos[:6], atol=2e-3)
    np.testing.assert_allclose(obs["joint_pos"][7:13], snaps[3].joint_pos[7:13], atol=2e-3)
    assert backend.time_s == pytest.approx(3 / 30)
    # The way back passed the recorded points 6, 5, 4 (newest first) before reaching 3.
    sent = [_servoj_deg(c) for c in emus["left"].commands_seen[n_before:] if c.startswith("ServoJ")]
    hits = [int(np.argmin([np.max(np.abs(np.deg2rad(q) - snaps[i].joint_pos[:6])) for q in sent])) for i in (6, 5, 4)]
    assert hits == sorted(hits), hits
    _, info = backend.act(obs["agent_pos"])  # marks made after the snapshot are gone
    assert not info["is_success"] and info["failures"] == [] and info["time_s"] == pytest.approx(4 / 30)
    assert backend.snapshot().index == 4
    with pytest.raises(ValueError, match="not on the recorded path"):
        backend.restore(snaps[7])  # that part of the path was rolled back
    backend.reset()
    with pytest.raises(ValueError, match="belongs to episode"):
        backend.restore(snaps[0])
    with pytest.raises(TypeError, match="PathSnapshot"):
        backend.restore({"index": 0})


def test_restore_to_the_current_point_does_not_move(bench):
    backend, emus, _ = bench
    obs, _ = backend.reset()
    backend.act(obs["agent_pos"])
    snap = backend.snapshot()
    n_before = len(emus["left"].commands_seen)
    obs = backend.restore(snap)
    sent = [_servoj_deg(c) for c in emus["left"].commands_seen[n_before:] if c.startswith("ServoJ")]
    assert all(np.max(np.abs(np.deg2rad(q) - snap.joint_pos[:6])) < 2e-3 for q in sent)
    assert backend.time_s == pytest.approx(1 / 30) and obs["environment_state"].shape == (0,)
