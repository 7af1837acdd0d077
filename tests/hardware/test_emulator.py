"""The loopback Dobot emulator itself: the MuJoCo model behind it, feedback contents, command-line
entry point (docs/platform.md §Protocol)."""

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import mujoco
import numpy as np
import pytest
from bench_model import bench_at_home, settle

from envs.kinematics import forward_kinematics
from envs.xtrainer import FINGER_TRAVEL_M
from hardware import dobot_protocol as dp
from hardware import feetech as ft
from hardware.dobot_client import DobotClient, DobotConfig
from hardware.emulator import SETTLED_DEG, ArmEmulator, XTrainerEmulator, quaternion_wxyz, tool_vector
from hardware.emulator_process import EmulatorProcess

REPO = Path(__file__).resolve().parents[2]
HOME_L = np.array([-90, 0, -90, 0, 90, 90], dtype=float)


def _rot(rx, ry, rz):
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def test_tool_vector_is_dobot_rz_ry_rx_euler_in_mm_and_degrees():
    T = np.eye(4)
    T[:3, :3] = _rot(0.3, -0.4, 1.2)
    T[:3, 3] = [0.1, -0.2, 0.3]
    np.testing.assert_allclose(tool_vector(T), [100, -200, 300, *np.rad2deg([0.3, -0.4, 1.2])], atol=1e-9)


def test_quaternion_matches_rotation():
    R = _rot(0.3, -0.4, 1.2)
    w, x, y, z = quaternion_wxyz(R)
    R2 = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    np.testing.assert_allclose(R2, R, atol=1e-12)


def test_feedback_packet_describes_the_state_and_mode_returns_to_idle():
    with EmulatorProcess(ArmEmulator, "left", "127.0.0.1", dashboard_port=0, motion_port=0, feedback_port=0) as emu, \
            DobotClient(DobotConfig("127.0.0.1", "V3", emu.ports["dashboard"], emu.ports["motion"],
                                    emu.ports["feedback"])) as client:
        client.start_up()
        q = np.array([-80, 5, -85, 3, 92, 95], dtype=float)
        client.servo_j(q, t=0.05)
        client.wait_for(lambda f: f.robot_mode == dp.MODE_RUNNING, 0.5, "running")
        fb = client.wait_for(lambda f: f.robot_mode == dp.MODE_ENABLED, 2.0, "idle again")
        np.testing.assert_allclose(fb.q_actual_deg, q, atol=SETTLED_DEG)
        # The model's flange pose and the DH chain of the same joints agree: the tool vector keeps
        # the convention of the simulator's tool site.
        T = forward_kinematics(np.deg2rad(fb.q_actual_deg), tool=0.197)
        np.testing.assert_allclose(fb.tool_vector_actual, tool_vector(T), atol=1e-6)
        assert fb.speed_scaling == pytest.approx(0.2)


# ----------------------------------------------------------------------------- the model behind it
def test_both_arms_and_grippers_move_in_one_model():
    with XTrainerEmulator(dashboard_port=0, motion_port=0, feedback_port=0, grippers=True) as bench:
        physics = bench.physics
        assert all(a.physics is physics for a in bench.arms.values())
        with pytest.raises(ValueError, match="left arm of this bench is already driven"):
            ArmEmulator("left", dashboard_port=0, motion_port=0, feedback_port=0, physics=physics)
        with pytest.raises(ValueError, match="emulates a nova5 but the bench model holds nova2 arms"):
            ArmEmulator("left", model="nova5", dashboard_port=0, motion_port=0, feedback_port=0, physics=physics)
        right = bench.arms["right"]
        with DobotClient(DobotConfig(right.host, "V3", right.ports["dashboard"], right.ports["motion"],
                                     right.ports["feedback"])) as client:
            client.start_up()
            target = np.array([95, -5, 95, 0, -90, -90], dtype=float)
            client.servo_j(target, t=0.1)
            client.wait_for(lambda f: np.max(np.abs(f.q_actual_deg - target)) < 0.05, 2.0, "right arm at target")
        port = ft.SerialPort(bench.grippers["left"].path)
        try:
            gripper = ft.Gripper(ft.FeetechBus(port), ft.DEFAULT_CALIBRATION["left"])
            gripper.start()
            gripper.command(0.0)
            time.sleep(0.2)
        finally:
            port.close()
        np.testing.assert_allclose(np.rad2deg(physics.joints("right")[0]), target, atol=0.05)
        np.testing.assert_allclose(np.rad2deg(physics.joints("left")[0]), HOME_L, atol=SETTLED_DEG)
        # Closed on the left; the right gripper, never started, is unpowered but still open.
        assert physics.fingers("left")[0] < 1e-4 and physics.fingers("right")[0] > 0.9 * FINGER_TRAVEL_M


def _read_packet(sock: socket.socket) -> dp.Feedback:
    buf = b""
    while len(buf) < dp.PACKET_SIZE:
        chunk = sock.recv(dp.PACKET_SIZE - len(buf))
        assert chunk, "feedback connection closed"
        buf += chunk
    return dp.decode_feedback(buf)


def test_measured_joints_follow_the_models_servo_dynamics():
    """A streamed ServoJ of 3 deg on J1 over 30 ms: the feedback lags the target, overshoots it and
    moves J2 and J5 through inertial coupling, matching an independent rollout of the model. A
    first-order lag (the kinematic emulator this replaced) can do neither."""
    step, ramp_s = np.array([3.0, 0, 0, 0, 0, 0]), 0.03
    with EmulatorProcess(ArmEmulator, "left", "127.0.0.1", dashboard_port=0, motion_port=0, feedback_port=0) as emu, \
            DobotClient(DobotConfig("127.0.0.1", "V3", emu.ports["dashboard"], emu.ports["motion"],
                                    emu.ports["feedback"])) as client:
        client.start_up()
        time.sleep(0.3)  # the servos settle from power-on (their static sag under the fingers)
        with socket.create_connection(("127.0.0.1", emu.ports["feedback"])) as raw:
            rest = _read_packet(raw)
            client.servo_j(HOME_L + step, t=ramp_s)
            packets = [_read_packet(raw) for _ in range(40)]  # 320 ms
    stamps = np.array([p.timestamp_ms for p in packets], dtype=float) / 1000
    q_target = np.array([p.q_target_deg for p in packets]) - HOME_L
    q = np.array([p.q_actual_deg for p in packets]) - HOME_L
    assert np.all(np.diff(stamps) > 0) and np.allclose(q_target[-1], step)

    m, d, ids = bench_at_home()
    qadr, act = ids["left"]
    settle(m, d, 0.5)  # as the emulator did
    np.testing.assert_allclose(np.rad2deg(d.qpos[qadr]) - HOME_L, rest.q_actual_deg - HOME_L, atol=1e-4)
    times, ctrl, traj = [0.0], [np.zeros(6)], [np.rad2deg(d.qpos[qadr]) - HOME_L]
    for k in range(int(0.4 / m.opt.timestep)):
        t = (k + 1) * m.opt.timestep
        d.ctrl[act] = np.deg2rad(HOME_L + step * min(1.0, t / ramp_s))
        mujoco.mj_step(m, d)
        times.append(t)
        ctrl.append(np.rad2deg(d.ctrl[act]) - HOME_L)
        traj.append(np.rad2deg(d.qpos[qadr]) - HOME_L)
    times, ctrl, traj = np.array(times), np.array(ctrl), np.array(traj)

    def errors(offset_s: float) -> tuple[float, float, float]:
        """Worst deviation of (QTarget J1, QActual J1, QActual J2-J6) from the rollout, when the
        command reached the emulator ``offset_s`` before the first packet that shows it."""
        tau = stamps - stamps[np.argmax(q_target[:, 0] > 0)] + offset_s
        tau = tau[tau >= 0], np.flatnonzero(tau >= 0)
        at = lambda a, j: np.interp(tau[0], times, a[:, j])  # noqa: E731
        return (float(np.max(np.abs(at(ctrl, 0) - q_target[tau[1], 0]))),
                float(np.max(np.abs(at(traj, 0) - q[tau[1], 0]))),
                max(float(np.max(np.abs(at(traj, j) - q[tau[1], j]))) for j in range(1, 6)))

    # The command's arrival between two packets is unknown (timestamps are whole ms): fit it.
    best = min(np.arange(0.0, 0.0121, 0.00025), key=lambda o: sum(errors(o)))
    e_target, e_j1, e_others = errors(best)
    assert e_target < 0.12 and e_j1 < 0.12 and e_others < 0.01, (best, e_target, e_j1, e_others)
    assert q[:, 0].max() > step[0] + 0.1  # overshoot
    assert np.abs(q[:, [1, 4]]).max() > 0.02  # joints with a constant target move


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _start_emulator(link_dir: Path, dashboard: int, motion: int, feedback: int) -> tuple[subprocess.Popen, queue.Queue]:
    """``python -m hardware.emulator`` on these ports, linking its grippers in ``link_dir``, with its
    output lines fed to a queue (so a missing line fails the test after a timeout instead of blocking it)."""
    args = ["--dashboard-port", str(dashboard), "--motion-port", str(motion), "--feedback-port", str(feedback),
            "--gripper-links", str(link_dir)]
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulator", *args],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            # a shell that started pytest in the background leaves SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return proc, lines


def _next_lines(lines: queue.Queue, n: int, timeout_s: float = 30.0) -> list[str]:
    deadline, got = time.monotonic() + timeout_s, []
    while len(got) < n:
        try:
            got.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"the emulator printed only {got} in {timeout_s} s") from None
    return got


def test_command_line_serves_both_arms_until_interrupted(tmp_path):
    d, m, f = _free_port(), _free_port(), _free_port()
    proc, out = _start_emulator(tmp_path, d, m, f)
    links = [tmp_path / "gripper_left", tmp_path / "gripper_right"]
    try:
        lines = _next_lines(out, 6)
        assert lines[5] == "ready\n", lines  # printed once everything is served and linked
        assert lines[0].startswith("left arm (V3, nova2) on 127.0.0.1") and "127.0.0.2" in lines[1], lines
        assert lines[4] == f"gripper links: {links[0]}, {links[1]}\n", lines
        for line, servo_id, link in zip(lines[2:4], (21, 22), links):
            assert f"gripper (Feetech ID {servo_id}) on /dev/" in line, lines
            assert os.readlink(link) == line.split(" on ")[1].strip()
            port = ft.SerialPort(str(link))
            try:
                ft.FeetechBus(port, timeout_s=0.2).ping(servo_id)
            finally:
                port.close()
        for host, j1 in (("127.0.0.1", -90), ("127.0.0.2", 90)):
            with DobotClient(DobotConfig(host, "auto", d, m, f)) as client:
                assert client.firmware == "V3"
                assert client.feedback().q_actual_deg[0] == pytest.approx(j1, abs=SETTLED_DEG)
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
    assert not any(link.is_symlink() for link in links)  # its links go with it


def test_command_line_cleans_up_when_interrupted_while_starting(tmp_path):
    """Ctrl-C during the banner (before "ready") still exits 0 and removes the gripper links."""
    proc, lines = _start_emulator(tmp_path, _free_port(), _free_port(), _free_port())
    first = _next_lines(lines, 1)[0]
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=10)
    out = first + "".join(lines.queue)
    assert proc.returncode == 0, out
    assert first.startswith("left arm"), out
    assert not any(p.is_symlink() for p in tmp_path.iterdir()), out
