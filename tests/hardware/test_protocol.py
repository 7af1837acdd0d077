"""Dobot TCP/IP protocol: command formatting, streaming reply parsing, errors, feedback packets
(docs/platform.md §Protocol, §Feedback packet)."""

import struct

import numpy as np
import pytest

from hardware import dobot_protocol as dp


# ----------------------------------------------------------------------------- commands
def test_format_command_matches_the_spec_start_up_strings():
    assert dp.format_command("EnableRobot") == "EnableRobot()"
    assert dp.format_command("SpeedFactor", 20) == "SpeedFactor(20)"
    assert dp.format_command("SetTool", 1, (0, 0, 197, 0, 0, 0)) == "SetTool(1,{0,0,197,0,0,0})"
    assert dp.format_command("Tool", 1) == "Tool(1)"


def test_servoj_formats_degrees_and_keywords():
    cmd = dp.servoj_command([-90, 0.5, -90.125, 0, 90, 1e-7])
    assert cmd == "ServoJ(-90,0.5,-90.125,0,90,0,t=0.03,lookahead_time=50,gain=500)"
    with pytest.raises(ValueError, match="6 joint"):
        dp.servoj_command([0.0] * 5)
    with pytest.raises(ValueError, match="non-finite"):
        dp.servoj_command([0, 0, 0, 0, 0, float("nan")])


def test_command_splitter_parses_by_parentheses_not_segments():
    s = dp.CommandSplitter()
    assert s.feed(b"EnableRobot()SpeedFactor(2") == [dp.parse_command("EnableRobot()")]
    out = s.feed(b"0)SetTool(1,{0,0,197,0,0,0})Serv")
    assert [c.name for c in out] == ["SpeedFactor", "SetTool"]
    assert out[0].args == ("20",)
    assert out[1].args == ("1", "{0,0,197,0,0,0}")
    out = s.feed(b"oJ(1,2,3,4,5,6,t=0.03,lookahead_time=50,gain=500)")
    assert out[0].name == "ServoJ" and out[0].args == tuple("123456")
    assert out[0].kwargs == {"t": "0.03", "lookahead_time": "50", "gain": "500"}


def test_command_splitter_reports_garbage_and_keeps_the_next_command():
    out = dp.CommandSplitter().feed(b"12#$ RobotMode()")
    assert isinstance(out[0], dp.ProtocolError)
    assert isinstance(out[1], dp.Command) and out[1].name == "RobotMode"


# ----------------------------------------------------------------------------- replies
def test_reply_parser_handles_several_replies_in_one_segment():
    p = dp.ReplyParser()
    out = p.feed(b"0,{},EnableRobot();0,{5},RobotMode();-1,{},SpeedFactor(200);")
    assert [r.name for r in out] == ["EnableRobot", "RobotMode", "SpeedFactor"]
    assert out[1].floats() == [5.0]
    assert out[2].error_id == -1 and out[2].command == "SpeedFactor(200)"
    assert p.pending == ""


@pytest.mark.parametrize("cut", range(1, 40))
def test_reply_parser_handles_a_reply_split_anywhere(cut):
    data = b"0,{-90.000000,0.000000,-90.000000,0,90,90},GetAngle();0,{},Tool(1);"
    p = dp.ReplyParser()
    out = p.feed(data[:cut]) + p.feed(data[cut:])
    assert [r.name for r in out] == ["GetAngle", "Tool"]
    assert out[0].floats() == [-90, 0, -90, 0, 90, 90]


def test_reply_parser_byte_by_byte_with_nested_braces():
    data = b"0,{{1,2},{3}},SetTool(1,{0,0,197,0,0,0});"
    p = dp.ReplyParser()
    out = []
    for b in data:
        out += p.feed(bytes([b]))
    assert len(out) == 1 and out[0].values == ("{1,2}", "{3}")
    assert out[0].command == "SetTool(1,{0,0,197,0,0,0})"


def test_reply_parser_reports_malformed_reply_and_resynchronises():
    p = dp.ReplyParser()
    out = p.feed(b"garbage;0,{},Tool(1);0,{}x;0,{5},RobotMode();")
    kinds = [type(x).__name__ for x in out]
    assert kinds == ["ProtocolError", "Reply", "ProtocolError", "Reply"]
    assert "malformed reply" in str(out[0])
    assert out[3].floats() == [5.0]


def test_reply_floats_rejects_non_numbers():
    (r,) = dp.ReplyParser().feed(b"0,{abc},RobotMode();")
    with pytest.raises(dp.ProtocolError, match="RobotMode"):
        r.floats()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("error_id, cls", [
    (-1, dp.CommandFailedError), (-2, dp.AlarmError), (-3, dp.EmergencyStopError),
    (-4, dp.PowerOffError), (-10000, dp.UnknownCommandError), (-20000, dp.ParameterCountError),
    (-30002, dp.ParameterTypeError), (-40006, dp.ParameterRangeError), (-777, dp.DobotError)])
def test_error_ids_map_to_exceptions_naming_the_command(error_id, cls):
    (r,) = dp.ReplyParser().feed(f"{error_id},{{}},ServoJ(1,2,3,4,5,6);".encode())
    with pytest.raises(cls) as e:
        r.raise_for_error()
    assert type(e.value) is cls
    assert "ServoJ(1,2,3,4,5,6)" in str(e.value) and e.value.error_id == error_id


def test_parameter_errors_name_the_parameter():
    e = dp.error_for(-40003, "SpeedFactor(300)")
    assert e.parameter == 3 and "parameter 3" in str(e)
    assert dp.error_for(-30001, "Tool(x)").parameter == 1


def test_ok_reply_does_not_raise():
    (r,) = dp.ReplyParser().feed(b"0,{},ClearError();")
    assert r.raise_for_error() is r and r.ok


# ----------------------------------------------------------------------------- feedback
def _hand_built_packet(mode=5, q=(-90, 0, -90, 0, 90, 90), test=dp.TEST_VALUE, error=0, size=1440):
    """A packet assembled with struct at the offsets of docs/platform.md §Feedback packet, independent
    of FEEDBACK_DTYPE."""
    buf = bytearray(1440)
    struct.pack_into("<H", buf, 0, size)
    struct.pack_into("<Q", buf, 24, mode)
    struct.pack_into("<Q", buf, 32, 123456)
    struct.pack_into("<Q", buf, 48, test)
    struct.pack_into("<d", buf, 64, 0.2)
    struct.pack_into("<6d", buf, 192, *[v + 1 for v in q])
    struct.pack_into("<6d", buf, 432, *q)
    struct.pack_into("<6d", buf, 624, 100.0, -400.0, 250.0, 180.0, 0.0, 45.0)
    struct.pack_into("<B", buf, 1026, 1)
    struct.pack_into("<B", buf, 1029, error)
    struct.pack_into("<B", buf, 1031, 101)
    return bytes(buf)


def test_decode_hand_built_packet_at_spec_offsets():
    fb = dp.decode_feedback(_hand_built_packet())
    assert fb.robot_mode == 5 and fb.timestamp_ms == 123456 and fb.robot_type == 101
    np.testing.assert_array_equal(fb.q_actual_deg, [-90, 0, -90, 0, 90, 90])
    np.testing.assert_array_equal(fb.q_target_deg, [-89, 1, -89, 1, 91, 91])
    np.testing.assert_array_equal(fb.tool_vector_actual, [100, -400, 250, 180, 0, 45])
    assert fb.speed_scaling == 0.2 and fb.enable_status == 1 and not fb.in_error
    assert dp.decode_feedback(_hand_built_packet(mode=9)).in_error
    assert dp.decode_feedback(_hand_built_packet(error=1)).in_error


def test_decode_rejects_wrong_test_value_size_and_length():
    with pytest.raises(dp.ProtocolError, match="test value"):
        dp.decode_feedback(_hand_built_packet(test=0x0123456789ABCDEE))
    with pytest.raises(dp.ProtocolError, match="MessageSize"):
        dp.decode_feedback(_hand_built_packet(size=1439))
    with pytest.raises(dp.ProtocolError, match="1439 bytes"):
        dp.decode_feedback(_hand_built_packet()[:-1])


def test_encode_matches_hand_built_layout_and_round_trips():
    buf = dp.encode_feedback(robot_mode=5, timestamp_ms=123456, speed_scaling=0.2,
                             q_actual=[-90, 0, -90, 0, 90, 90], q_target=[-89, 1, -89, 1, 91, 91],
                             tool_vector_actual=[100, -400, 250, 180, 0, 45], enable_status=1,
                             robot_type=101)
    assert buf == _hand_built_packet()
    assert dp.FEEDBACK_DTYPE.itemsize == 1440
    with pytest.raises(KeyError, match="unknown feedback field"):
        dp.encode_feedback(q_actuel=[0] * 6)


def test_find_packet_start_resynchronises_a_misaligned_stream():
    pkt = _hand_built_packet()
    stream = b"\x00" * 17 + pkt + pkt
    assert dp.find_packet_start(stream) == 17
    assert dp.find_packet_start(pkt[100:]) is None
