"""The loopback Dobot emulator itself: joint model, feedback contents, command-line entry point (SPEC §8)."""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from envs.kinematics import forward_kinematics
from hardware import dobot_protocol as dp
from hardware import feetech as ft
from hardware.dobot_client import DobotClient, DobotConfig
from hardware.emulator import ArmEmulator, quaternion_wxyz, tool_vector

REPO = Path(__file__).resolve().parents[1]


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
    with ArmEmulator("left", "127.0.0.1", dashboard_port=0, motion_port=0, feedback_port=0) as emu, \
            DobotClient(DobotConfig("127.0.0.1", "V3", emu.ports["dashboard"], emu.ports["motion"],
                                    emu.ports["feedback"])) as client:
        client.start_up()
        q = np.array([-80, 5, -85, 3, 92, 95], dtype=float)
        client.servo_j(q, t=0.05)
        client.wait_for(lambda f: f.robot_mode == dp.MODE_RUNNING, 0.5, "running")
        fb = client.wait_for(lambda f: f.robot_mode == dp.MODE_ENABLED, 2.0, "idle again")
        np.testing.assert_allclose(fb.q_actual_deg, q, atol=1e-3)
        T = forward_kinematics(np.deg2rad(fb.q_actual_deg), tool=0.197)
        np.testing.assert_allclose(fb.tool_vector_actual[:3], T[:3, 3] * 1000, atol=1e-6)
        assert fb.speed_scaling == pytest.approx(0.2)


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_command_line_serves_both_arms_until_interrupted():
    d, m, f = _free_port(), _free_port(), _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "hardware.emulator", "--dashboard-port", str(d),
                             "--motion-port", str(m), "--feedback-port", str(f)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            # a shell that started pytest in the background leaves SIGINT ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        lines = [proc.stdout.readline() for _ in range(4)]
        assert lines[0].startswith("left arm (V3, nova2) on 127.0.0.1") and "127.0.0.2" in lines[1], lines
        for line, servo_id in zip(lines[2:], (21, 22)):
            assert f"gripper (Feetech ID {servo_id}) on /dev/" in line, lines
            port = ft.SerialPort(line.split(" on ")[1].strip())
            try:
                ft.FeetechBus(port, timeout_s=0.2).ping(servo_id)
            finally:
                port.close()
        for host, j1 in (("127.0.0.1", -90), ("127.0.0.2", 90)):
            with DobotClient(DobotConfig(host, "auto", d, m, f)) as client:
                assert client.firmware == "V3"
                assert client.feedback().q_actual_deg[0] == j1
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=5) == 0
