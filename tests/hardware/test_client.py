"""The real Dobot client against the loopback emulator over TCP, including every injected fault
(docs/platform.md §Protocol)."""

import socket
import threading
import time

import numpy as np
import pytest

from hardware import dobot_protocol as dp
from hardware.dobot_client import DobotClient, DobotConfig, FeedbackReader, RobotErrorModeError, StaleFeedbackError
from hardware.emulator import SETTLED_DEG, ArmEmulator
from hardware.emulator_process import EmulatorProcess

HOME_L = np.array([-90, 0, -90, 0, 90, 90], dtype=float)
START_UP = ["EnableRobot()", "SpeedFactor(20)", "AccJ(20)", "SpeedJ(20)", "SetTool(1,{0,0,197,0,0,0})", "Tool(1)"]


def _emulator(**kw) -> ArmEmulator:
    kw.setdefault("firmware", "V3")
    return EmulatorProcess(ArmEmulator, "left", "127.0.0.1", dashboard_port=0, motion_port=0, feedback_port=0,
                           **kw).start()


def _config(emu: ArmEmulator, **kw) -> DobotConfig:
    return DobotConfig(host=emu.host, firmware=kw.pop("firmware", emu.firmware), dashboard_port=emu.ports["dashboard"],
                       motion_port=emu.ports.get("motion", _closed_port()), feedback_port=emu.ports["feedback"],
                       timeout_s=kw.pop("timeout_s", 1.0), **kw)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def emu():
    e = _emulator()
    yield e
    e.close()


@pytest.fixture
def client(emu):
    c = DobotClient(_config(emu)).connect()
    yield c
    c.close()


def _stream_to(client: DobotClient, target: np.ndarray, steps: int = 12, hz: float = 30.0) -> None:
    start = client.joints_deg()
    for k in range(1, steps + 1):
        client.servo_j(start + (target - start) * k / steps, t=1 / hz)
        time.sleep(1 / hz)


# ----------------------------------------------------------------------------- start-up and motion
def test_start_up_sequence_in_order_on_the_right_ports(emu, client):
    assert client.firmware == "V3" and client.motion is not client.dashboard
    client.start_up()
    assert emu.commands_seen == START_UP
    fb = client.feedback()
    assert fb.robot_mode == dp.MODE_ENABLED and fb.enable_status == 1 and fb.robot_type == 101
    # Tool(1) is in effect: the tool point sits 197 mm beyond the flange (pointing down at home;
    # the model's servos sag a few thousandths of a degree under the fingers' weight: ~0.02 mm here).
    fb = client.wait_for(lambda f: True, 0.5, "fresh packet")
    np.testing.assert_allclose(fb.tool_vector_actual[:3], [-117.5, -345.0, 218.4], atol=0.05)


@pytest.mark.parametrize("servoj_replies", [False, True])
def test_stream_servoj_and_read_joints_back(servoj_replies):
    with _emulator(servoj_replies=servoj_replies) as emu, DobotClient(_config(emu)) as client:
        client.start_up()
        target = HOME_L + [10, -5, 8, 3, -4, 6]
        _stream_to(client, target)
        fb = client.wait_for(lambda f: np.max(np.abs(f.q_actual_deg - target)) < 0.05, 1.0, "target")
        assert fb.robot_mode in (dp.MODE_ENABLED, dp.MODE_RUNNING)
        np.testing.assert_allclose(client.request("GetAngle").floats(), fb.q_actual_deg, atol=0.5)
        # Replies to ServoJ (older firmware) are tolerated and never taken for a request's reply.
        assert (client.motion.unmatched_replies > 0) == servoj_replies
        assert client.motion.stream_error is None


def test_v4_carries_motion_on_the_dashboard_port_and_is_detected():
    with _emulator(firmware="V4") as emu:
        assert "motion" not in emu.ports
        with DobotClient(_config(emu, firmware="auto")) as client:
            assert client.firmware == "V4" and client.motion is client.dashboard
            client.start_up()
            target = HOME_L + [5, 0, 0, 0, 0, 0]
            _stream_to(client, target, steps=6)
            client.wait_for(lambda f: abs(f.q_actual_deg[0] - target[0]) < 0.05, 1.0, "target")
            client.stop()
            assert emu.commands_seen[-1] == "Stop()"


def test_v3_rejects_motion_commands_on_the_dashboard_port(emu, client):
    client.start_up()
    with pytest.raises(dp.UnknownCommandError, match=r"ServoJ\("):
        client.dashboard.request(dp.servoj_command(HOME_L))


def test_error_reply_raises_exception_naming_the_command(client):
    with pytest.raises(dp.ParameterRangeError, match=r"SpeedFactor\(200\).*parameter 1"):
        client.request("SpeedFactor", 200)
    with pytest.raises(dp.UnknownCommandError, match=r"Fly\(\)"):
        client.request("Fly")
    with pytest.raises(dp.ParameterCountError, match=r"Tool\(1,2\)"):
        client.request("Tool", 1, 2)
    assert client.request("RobotMode").floats() == [dp.MODE_DISABLED]


def test_servoj_error_reply_is_raised_by_the_next_send():
    with _emulator(servoj_replies=True) as emu, DobotClient(_config(emu)) as client:
        client.start_up()
        client.servo_j(HOME_L + [0, 0, 0, 0, 0, 400])  # J6 beyond 360 deg
        deadline = time.monotonic() + 1.0
        while client.motion.stream_error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        with pytest.raises(dp.ParameterRangeError, match=r"ServoJ\(.*parameter 6"):
            client.servo_j(HOME_L)
        client.servo_j(HOME_L)  # raised once, then streaming goes on


def test_several_stream_replies_in_one_segment_do_not_confuse_a_request():
    # V4: ServoJ replies share the dashboard connection with the requests.
    with _emulator(firmware="V4", servoj_replies=True) as emu, DobotClient(_config(emu)) as client:
        client.start_up()
        for _ in range(20):
            client.servo_j(HOME_L)
        assert client.request("RobotMode").name == "RobotMode"
        deadline = time.monotonic() + 1.0
        while client.dashboard.unmatched_replies < 20 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert client.dashboard.unmatched_replies == 20


# ----------------------------------------------------------------------------- faults
def test_error_mode_is_recovered_with_clear_error_then_enable(emu, client):
    client.start_up()
    emu.inject_error()
    client.wait_for(lambda f: f.robot_mode == dp.MODE_ERROR and f.error_status == 1, 0.5, "error mode")
    emu.commands_seen = []
    client.start_up()
    assert emu.commands_seen[:3] == ["ClearError()", "EnableRobot()", "EnableRobot()"]
    assert client.feedback().robot_mode == dp.MODE_ENABLED


def test_error_mode_without_permission_raises(emu):
    with DobotClient(_config(emu, auto_clear_errors=False)) as client:
        emu.inject_error()
        client.wait_for(lambda f: f.in_error, 0.5, "error mode")
        with pytest.raises(RobotErrorModeError, match="not allowed"):
            client.start_up()
        assert "ClearError()" not in emu.commands_seen


def test_persisting_alarm_fails_enable_robot_by_name(emu, client):
    emu.faults.sticky_error = True
    emu.inject_error()
    client.wait_for(lambda f: f.in_error, 0.5, "error mode")
    with pytest.raises(dp.AlarmError, match=r"EnableRobot\(\)"):
        client.recover()


def test_servo_jump_raises_the_controller_alarm(client):
    client.start_up()
    client.servo_j(HOME_L + [0, 0, 0, 0, 0, 90])  # far beyond a servo step: the controller alarms
    fb = client.wait_for(lambda f: f.in_error, 0.5, "alarm")
    assert fb.robot_mode == dp.MODE_ERROR
    np.testing.assert_allclose(fb.q_actual_deg, HOME_L, atol=SETTLED_DEG)  # and did not move


def test_dropped_feedback_connection_goes_stale_then_reconnects(emu, client):
    assert client.feedback() is not None
    emu.drop_feedback(down_s=0.4)
    time.sleep(0.2)
    with pytest.raises(StaleFeedbackError, match="ms old"):
        client.feedback()
    fb = client.wait_for(lambda f: True, 2.0, "feedback after reconnect")
    assert fb.robot_mode == dp.MODE_DISABLED and client.feedback_reader.reconnects >= 1


def test_paused_feedback_stream_is_stale(emu, client):
    emu.faults.feedback_paused = True
    time.sleep(0.15)
    with pytest.raises(StaleFeedbackError):
        client.feedback()
    emu.faults.feedback_paused = False
    client.wait_for(lambda f: True, 0.5, "feedback resumed")
    assert client.feedback_reader.age_s() < 0.1


def test_packets_with_a_wrong_test_value_are_rejected(emu, client):
    before = client.feedback_reader.packets
    emu.faults.bad_test_value = 5
    deadline = time.monotonic() + 1.0
    while client.feedback_reader.rejected < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.feedback_reader.rejected == 5
    assert "test value" in str(client.feedback_reader.last_error)
    client.wait_for(lambda f: True, 0.5, "good packets again")
    assert client.feedback_reader.packets > before


def test_feedback_split_across_segments_is_reassembled():
    with _emulator(faults=None) as emu:
        emu.faults.split_feedback = 100
        with DobotClient(_config(emu)) as client:
            client.wait_for(lambda f: True, 0.5, "split packet")
            time.sleep(0.1)
            assert client.feedback_reader.rejected == 0 and client.feedback_reader.packets >= 3


def test_delayed_reply_times_out_by_name_then_succeeds(emu, client):
    emu.faults.reply_delay_s = 0.3
    with pytest.raises(dp.DobotTimeoutError, match=r"RobotMode\(\)"):
        client.request("RobotMode", timeout_s=0.1)
    assert client.request("GetAngle", timeout_s=1.5).name == "GetAngle"  # the late RobotMode reply is skipped
    emu.faults.reply_delay_s = 0.0


def test_malformed_reply_fails_that_request_only(emu, client):
    emu.faults.malformed_replies = 1
    with pytest.raises(dp.ProtocolError, match=r"EnableRobot\(\): protocol error: malformed reply"):
        client.request("EnableRobot")
    assert client.request("RobotMode").floats() == [dp.MODE_ENABLED]


def test_split_replies_are_reassembled(emu, client):
    emu.faults.split_replies = 3
    client.start_up()
    assert client.request("GetAngle").floats() == pytest.approx(HOME_L.tolist(), abs=SETTLED_DEG)


def test_dropped_command_connection_raises_connection_error(emu, client):
    emu.drop_commands()
    time.sleep(0.05)
    with pytest.raises(dp.DobotConnectionError, match=r"RobotMode\(\)"):
        client.request("RobotMode")
    with pytest.raises(dp.DobotConnectionError, match=r"ServoJ\("):
        client.servo_j(HOME_L)


def test_connect_fails_clearly_without_a_controller():
    cfg = DobotConfig(host="127.0.0.1", dashboard_port=_closed_port(), connect_timeout_s=0.5)
    with pytest.raises(dp.DobotConnectionError, match="dashboard port"):
        DobotClient(cfg).connect()


def test_right_arm_on_its_own_loopback_address():
    with EmulatorProcess(ArmEmulator, "right", dashboard_port=0, motion_port=0, feedback_port=0) as emu:
        assert emu.host == "127.0.0.2"
        with DobotClient(_config(emu)) as client:
            np.testing.assert_allclose(client.feedback().q_actual_deg, [90, 0, 90, 0, -90, -90], atol=SETTLED_DEG)


# ----------------------------------------------------------------------------- feedback reader on a raw stream
def _serve_once(payload: bytes, hold_s: float = 1.0) -> tuple[int, threading.Thread]:
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = srv.accept()
        conn.sendall(payload)
        time.sleep(hold_s)
        conn.close()
        srv.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return srv.getsockname()[1], t


def test_reader_keeps_only_the_newest_of_a_backlog():
    backlog = b"".join(dp.encode_feedback(robot_mode=5, timestamp_ms=i) for i in range(50))
    port, t = _serve_once(backlog)
    reader = FeedbackReader("127.0.0.1", port, reconnect=False)
    try:
        fb = reader.wait(lambda f: f.timestamp_ms == 49, timeout_s=1.0)
        assert fb is not None and reader.packets == 50 and reader.rejected == 0
    finally:
        reader.close()


def test_reader_resynchronises_a_misaligned_stream():
    good = [dp.encode_feedback(robot_mode=5, timestamp_ms=i) for i in range(3)]
    port, t = _serve_once(b"\x01" * 17 + good[0] + good[1] + good[2])
    reader = FeedbackReader("127.0.0.1", port, reconnect=False)
    try:
        fb = reader.wait(lambda f: f.timestamp_ms == 2, timeout_s=1.0)
        assert fb is not None and reader.rejected >= 1 and reader.resyncs >= 1
    finally:
        reader.close()
