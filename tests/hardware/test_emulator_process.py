"""The emulator in a process of its own (hardware/emulator_process.py): driven as in process, and
its real-time streams carry on through a stall of the process that drives it."""

import os
import socket
import sys
import time

import numpy as np
import pytest

from hardware import dobot_protocol as dp
from hardware.emulator import ArmEmulator, XTrainerEmulator
from hardware.emulator_process import EmulatorProcess, EmulatorProcessError, Remote


def test_attributes_methods_and_faults_reach_the_emulator_in_its_own_process():
    with EmulatorProcess(XTrainerEmulator, dashboard_port=0, motion_port=0, feedback_port=0, grippers=True) as bench:
        assert bench.pid != os.getpid()
        assert set(bench.arms) == {"left", "right"} and set(bench.grippers) == {"left", "right"}
        left = bench.arms["left"]
        assert isinstance(left, Remote) and isinstance(left.ports, dict) and left.host == "127.0.0.1"
        assert os.path.exists(bench.grippers["left"].path)  # the pty is open to this process too
        left.faults.feedback_paused = True  # a write through a handle lands on the emulator's Faults
        assert left.faults.feedback_paused is True and bench.arms["right"].faults.feedback_paused is False
        q = np.array([-80.0, 5, -85, 3, 92, 95])
        left.place(q)
        np.testing.assert_allclose(left.joints_deg(), q, atol=0.01)
        left.commands_seen = ["x"]
        assert left.commands_seen == ["x"]  # values come back as copies
        with pytest.raises(ValueError, match="broadcast"):  # the emulator's own error, as in process
            left.place([1.0, 2.0])
        with pytest.raises(AttributeError):
            left.no_such_attribute  # noqa: B018


def test_feedback_keeps_its_period_while_the_driving_process_stalls():
    """This process holds its interpreter lock for 0.3 s (as a long garbage collection would): the
    emulator, in its own process, still stamps a packet every 8 ms through the stall."""
    with EmulatorProcess(ArmEmulator, "left", dashboard_port=0, motion_port=0, feedback_port=0) as emu, \
            socket.create_connection(("127.0.0.1", emu.ports["feedback"])) as raw:
        raw.settimeout(5.0)
        buf = raw.recv(dp.PACKET_SIZE)  # the stream has begun
        interval = sys.getswitchinterval()
        sys.setswitchinterval(10.0)  # no other thread of this process runs during the loop below
        try:
            end = time.monotonic() + 0.3
            while time.monotonic() < end:
                pass
        finally:
            sys.setswitchinterval(interval)
        while len(buf) < 60 * dp.PACKET_SIZE:
            buf += raw.recv(65536)
    stamps = np.array([dp.decode_feedback(buf[i:i + dp.PACKET_SIZE]).timestamp_ms
                       for i in range(0, 60 * dp.PACKET_SIZE, dp.PACKET_SIZE)], dtype=float)
    gaps = np.diff(stamps)  # in this process the emulator's threads would leave one gap of ~300 ms
    assert stamps[-1] - stamps[0] >= 300 and np.max(gaps) < 50, gaps


def test_a_failed_start_and_a_dead_process_raise_named_errors():
    with pytest.raises(ValueError, match="unknown arm 'middle'"):  # the constructor's own error
        EmulatorProcess(ArmEmulator, "middle", dashboard_port=0, motion_port=0, feedback_port=0).start()
    emu = EmulatorProcess(ArmEmulator, "left", dashboard_port=0, motion_port=0, feedback_port=0).start()
    os.kill(emu.pid, 9)
    with pytest.raises(EmulatorProcessError, match="exited"):
        emu.ports  # noqa: B018
    emu.close()
    emu.close()  # idempotent
    with pytest.raises(EmulatorProcessError, match="not running"):
        emu.ports  # noqa: B018
