"""Feetech STS/SMS gripper protocol: checksums, packets, and a round trip with a servo emulated on a pty
that drives the fingers of the simulator's MuJoCo model (docs/platform.md §Grippers)."""

import time

import pytest

from envs.xtrainer import FINGER_TRAVEL_M
from hardware import feetech as ft
from hardware.bench_physics import BenchPhysics, held_object
from hardware.emulator_process import EmulatorProcess
from hardware.feetech_emulator import FeetechServoEmulator


# ----------------------------------------------------------------------------- packets
def test_checksums_of_hand_computed_packets():
    # Ping ID 1; read 2 bytes of present position (56 = 0x38) from ID 1.
    assert ft.instruction_packet(1, ft.PING) == bytes.fromhex("ff ff 01 02 01 fb")
    assert ft.instruction_packet(1, ft.READ, bytes([56, 2])) == bytes.fromhex("ff ff 01 04 02 38 02 be")
    # Torque limit 300 (0x012C, little-endian) to register 48 of ID 21: ~(21+5+3+48+44+1 = 122) = 0x85.
    assert ft.instruction_packet(21, ft.WRITE, bytes([48, 0x2C, 0x01])) == bytes.fromhex("ff ff 15 05 03 30 2c 01 85")


def test_parse_packet_skips_noise_waits_for_the_rest_and_rejects_bad_checksums():
    pkt = ft.status_packet(22, 0, bytes([0x00, 0x08]))
    assert ft.parse_packet(b"\x00\x13" + pkt[:4]) == (None, 2)
    packet, used = ft.parse_packet(b"\x00\x13" + pkt)
    assert packet == ft.Packet(22, 0, b"\x00\x08") and used == 2 + len(pkt)
    with pytest.raises(ft.FeetechChecksumError, match="bad checksum"):
        ft.parse_packet(pkt[:-1] + bytes([pkt[-1] ^ 1]))


def test_position_and_load_encodings():
    assert ft.decode_position(ft.encode_position(3055)) == 3055
    assert ft.encode_position(-5) == bytes([5, 0x80]) and ft.decode_position(bytes([5, 0x80])) == -5
    assert ft.decode_load(ft.encode_u16(300)) == pytest.approx(0.3)
    assert ft.decode_load(ft.encode_u16(300 | 0x400)) == pytest.approx(-0.3)


def test_registers_agree_with_lerobots_sts_sms_table():
    from lerobot.motors.feetech.tables import STS_SMS_SERIES_CONTROL_TABLE as table

    assert table["Torque_Enable"] == ft.TORQUE_ENABLE
    assert table["Acceleration"] == ft.ACCELERATION
    assert table["Goal_Position"] == ft.GOAL_POSITION
    assert table["Torque_Limit"] == ft.TORQUE_LIMIT
    assert table["Present_Position"] == ft.PRESENT_POSITION
    assert table["Present_Load"] == ft.PRESENT_LOAD


# ----------------------------------------------------------------------------- against the pty servo
@pytest.fixture
def servo():
    emu = EmulatorProcess(FeetechServoEmulator, servo_id=21, position=2048).start()
    port = ft.SerialPort(emu.path)
    yield emu, ft.FeetechBus(port, timeout_s=0.05, retries=0)
    port.close()
    emu.close()


def _wait(pred, timeout=1.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_start_up_sets_the_torque_limit_and_round_trips_positions(servo):
    emu, bus = servo
    cal = ft.GripperCalibration(21, open_ticks=2048, closed_ticks=3055)
    g = ft.Gripper(bus, cal)
    assert emu.torque_limit == 1000
    g.start()
    assert emu.torque_limit == 300 and emu.torque_on
    assert g.opening() == pytest.approx(1.0)
    assert g.command(0.0) == 3055
    _wait(lambda: g.position() == 3055)
    assert g.opening() == pytest.approx(0.0) and abs(g.load()) < 0.01  # at rest: next to no servo force
    assert g.command(0.5) == 2552  # round(3055 - 0.5 * 1007)
    _wait(lambda: abs(g.opening() - 0.5) < 1e-3)
    # The goal block is written as 7 bytes from register 41: acceleration, position, time, speed.
    write = [p for p in emu.requests if p.code == ft.WRITE and p.params[0] == 41][-1]
    assert write.params == bytes([41, 0]) + ft.encode_position(2552) + bytes(4)


def test_goal_position_drives_the_models_fingers(servo):
    emu, bus = servo
    g = ft.Gripper(bus, ft.GripperCalibration(21, open_ticks=2048, closed_ticks=3055))
    g.start()
    model = emu.physics.model
    assert model.actuator_forcerange[model.actuator("left/finger_a").id].tolist() == [-12.0, 12.0]  # 30 % torque
    g.command(0.25)
    _wait(lambda: abs(g.opening() - 0.25) < 2e-3)
    opening_m, force_n = emu.physics.fingers("left")
    assert opening_m == pytest.approx(0.25 * FINGER_TRAVEL_M, abs=1e-4) and abs(force_n) < 0.5
    assert emu.physics.fingers("right")[0] == pytest.approx(FINGER_TRAVEL_M)  # the other gripper stays open


def _servo_holding(width: float) -> FeetechServoEmulator:
    return FeetechServoEmulator(21, physics=BenchPhysics(scene=held_object("left", width)))


def test_load_reads_the_torque_limit_when_the_fingers_hold_an_object():
    width = 0.036  # the fingers stop at 18 mm each: opening 0.45
    with EmulatorProcess(_servo_holding, width) as emu:
        port = ft.SerialPort(emu.path)
        try:
            g = ft.Gripper(ft.FeetechBus(port), ft.GripperCalibration(21, open_ticks=2048, closed_ticks=3055))
            g.start()
            assert g.load() == 0.0
            g.command(0.0)
            time.sleep(0.3)
            # On the object, not closed (the bench's soft default contact lets each pad sink about 1 mm).
            nominal = width / 2 / FINGER_TRAVEL_M
            assert nominal - 0.05 < g.opening() < nominal + 0.005
            assert g.load() == pytest.approx(0.3, abs=0.002)  # pressing with the 30 % torque limit
            g.command(1.0)
            _wait(lambda: g.opening() > 0.99)
            assert abs(g.load()) < 0.05
        finally:
            port.close()


def test_timeouts_checksums_and_status_errors_name_the_servo(servo):
    emu, bus = servo
    g = ft.Gripper(bus, ft.GripperCalibration(21, 2048, 3055))
    emu.silent = 1
    with pytest.raises(ft.FeetechTimeoutError, match="servo 21: read present position .*no status packet"):
        g.position()
    emu.corrupt = 1
    with pytest.raises(ft.FeetechChecksumError, match="servo 21: read present load .*bad checksum"):
        g.load()
    bus.retries = 1
    emu.corrupt = 1
    assert g.position() == 2048  # one corrupted status, retried
    emu.error_bits = 0x20
    with pytest.raises(ft.FeetechStatusError, match="servo 21: write goal position .*overload"):
        g.command(1.0)


def test_wrong_servo_id_times_out(servo):
    emu, bus = servo
    with pytest.raises(ft.FeetechTimeoutError, match="servo 22: ping"):
        bus.ping(22)


def test_calibration_file_round_trip_and_hand_calibration(servo, tmp_path):
    emu, bus = servo
    path = tmp_path / "grippers.json"
    ft.save_calibration(path, ft.DEFAULT_CALIBRATION)
    loaded = ft.load_calibration(path)
    assert loaded == ft.DEFAULT_CALIBRATION and loaded["right"].servo_id == 22
    g = ft.Gripper(bus, loaded["left"])
    hand = iter([2100, 2990])

    def prompt(message):  # the operator moves the fingers by hand
        emu.move_by_hand(next(hand))

    cal = ft.calibrate(g, prompt)
    assert (cal.open_ticks, cal.closed_ticks) == (2100, 2990) and not emu.torque_on
    ft.save_calibration(path, {"left": cal})
    assert ft.load_calibration(path)["left"].open_ticks == 2100
    with pytest.raises(ft.FeetechError, match="cannot read gripper calibration"):
        ft.load_calibration(tmp_path / "missing.json")
    path.write_text('{"left": {"servo_id": 21, "open": 1}}')
    with pytest.raises(ft.FeetechError, match="unexpected keyword"):
        ft.load_calibration(path)
    with pytest.raises(ValueError, match="both 2048"):
        ft.GripperCalibration(21, 2048, 2048)
