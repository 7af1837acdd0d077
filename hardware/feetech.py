"""Feetech STS/SMS serial-bus servos driving the X-Trainer grippers (docs/platform.md §Grippers).

The grippers are not on the Dobot controller: each is one Feetech STS/SMS servo behind its own
USB–RS485 adapter at 1 Mbaud, ID 21 (left) / 22 (right).

Protocol (Feetech STS/SMS memory-table protocol):

- instruction packet ``FF FF ID LEN INSTR P1..Pn CHK`` with ``LEN = n + 2``;
- status packet ``FF FF ID LEN ERR P1..Pn CHK``;
- ``CHK = ~(ID + LEN + INSTR|ERR + sum(P)) & 0xFF``;
- two-byte registers little-endian; positions use bit 15 as the sign, the load bit 10 as the
  direction (magnitude in 0.1 % of the maximum torque).

Registers used (docs/platform.md §Grippers): torque enable 40; goal block written as 7 bytes from 41 (acceleration,
goal position 42–43, goal time, goal speed); torque limit 48 (set to 300 = 30 % at start-up);
present position 56–57; present load 60–61.

Calibration: the open and closed positions (ticks) differ per unit; they live in a JSON config file
(:func:`load_calibration`, :func:`save_calibration`). The gripper scalar is 1 = open, 0 = closed.
"""

from __future__ import annotations

import json
import os
import select
import termios
import time
import tty
from dataclasses import asdict, dataclass
from pathlib import Path

from hardware.errors import HardwareError

# Instructions.
PING, READ, WRITE = 0x01, 0x02, 0x03
BROADCAST_ID = 0xFE
# Registers (address, size) of the STS/SMS memory table.
TORQUE_ENABLE = (40, 1)
ACCELERATION = (41, 1)
GOAL_POSITION = (42, 2)
GOAL_BLOCK = (41, 7)  # acceleration, goal position, goal time, goal speed
TORQUE_LIMIT = (48, 2)
PRESENT_POSITION = (56, 2)
PRESENT_LOAD = (60, 2)
DEFAULT_TORQUE_LIMIT = 300  # 30 % (docs/platform.md §Grippers)
BAUDRATE = 1_000_000
GRIPPER_IDS = {"left": 21, "right": 22}
STATUS_BITS = {0: "input voltage", 1: "angle sensor", 2: "overheating", 3: "overcurrent", 5: "overload"}


class FeetechError(HardwareError):
    """A servo transaction failed; the message names the servo ID and what was asked."""


class FeetechTimeoutError(FeetechError):
    pass


class FeetechChecksumError(FeetechError):
    pass


class FeetechStatusError(FeetechError):
    """The servo answered with error bits set (voltage, sensor, temperature, current, overload)."""

    def __init__(self, servo_id: int, what: str, error: int):
        self.servo_id, self.error = servo_id, error
        names = [name for bit, name in STATUS_BITS.items() if error & (1 << bit)] or [f"0x{error:02X}"]
        super().__init__(f"servo {servo_id}: {what}: status error {', '.join(names)}")


# ----------------------------------------------------------------------------------- packets
def checksum(body: bytes) -> int:
    """``~(sum of ID, LEN, INSTR/ERR and parameters) & 0xFF``."""
    return (~sum(body)) & 0xFF


def instruction_packet(servo_id: int, instruction: int, params: bytes = b"") -> bytes:
    """``FF FF ID LEN INSTR P.. CHK``."""
    if not 0 <= servo_id <= 0xFE:
        raise ValueError(f"servo id must be in 0..254, got {servo_id}")
    body = bytes([servo_id, len(params) + 2, instruction]) + bytes(params)
    return b"\xff\xff" + body + bytes([checksum(body)])


def status_packet(servo_id: int, error: int, params: bytes = b"") -> bytes:
    """``FF FF ID LEN ERR P.. CHK`` (what a servo sends back)."""
    return instruction_packet(servo_id, error, params)


@dataclass(frozen=True)
class Packet:
    """A parsed packet: ``code`` is the instruction (to a servo) or the error byte (from one)."""

    servo_id: int
    code: int
    params: bytes


def parse_packet(buf: bytes | bytearray) -> tuple[Packet | None, int]:
    """Parse the first complete packet in ``buf``: ``(packet, bytes consumed)``; ``(None, n)`` means
    "need more bytes" after discarding ``n`` bytes of leading noise. Raises
    :class:`FeetechChecksumError` (with the bytes consumed in ``args[1]``) on a bad checksum."""
    start = buf.find(b"\xff\xff")
    if start < 0:
        return None, max(0, len(buf) - 1)
    while start + 2 < len(buf) and buf[start + 2] == 0xFF:  # FF FF FF ...: the header starts later
        start += 1
    if len(buf) < start + 4:
        return None, start
    length = buf[start + 3]
    end = start + 4 + length
    if length < 2:
        raise FeetechChecksumError(f"invalid packet length {length}", start + 4)
    if len(buf) < end:
        return None, start
    body = bytes(buf[start + 2:end - 1])
    if checksum(body) != buf[end - 1]:
        raise FeetechChecksumError(f"bad checksum 0x{buf[end - 1]:02X} (expected 0x{checksum(body):02X}) "
                                   f"in packet {bytes(buf[start:end]).hex(' ')}", end)
    return Packet(body[0], body[2], body[3:]), end


def encode_u16(value: int) -> bytes:
    return int(value).to_bytes(2, "little")


def encode_position(ticks: int) -> bytes:
    """Goal position with bit 15 as the sign (STS/SMS)."""
    ticks = int(ticks)
    if abs(ticks) > 0x7FFF:
        raise ValueError(f"position {ticks} does not fit 15 bits")
    return encode_u16(abs(ticks) | (0x8000 if ticks < 0 else 0))


def decode_position(data: bytes) -> int:
    raw = int.from_bytes(data[:2], "little")
    return -(raw & 0x7FFF) if raw & 0x8000 else raw


def decode_load(data: bytes) -> float:
    """Present load as a signed fraction of the maximum torque (bit 10 is the direction)."""
    raw = int.from_bytes(data[:2], "little")
    magnitude = (raw & 0x3FF) / 1000.0
    return -magnitude if raw & 0x400 else magnitude


# ----------------------------------------------------------------------------------- serial port
class SerialPort:
    """A raw 8N1 serial port through termios (no pyserial needed): a USB–RS485 adapter or a pty."""

    def __init__(self, path: str, baudrate: int = BAUDRATE):
        speed = getattr(termios, f"B{baudrate}", None)
        if speed is None:
            raise ValueError(f"baud rate {baudrate} is not supported by termios")
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError as e:
            raise FeetechError(f"cannot open serial port {path}: {e}") from e
        tty.setraw(self.fd)
        attrs = termios.tcgetattr(self.fd)
        attrs[2] |= termios.CLOCAL | termios.CREAD
        attrs[4] = attrs[5] = speed
        termios.tcsetattr(self.fd, termios.TCSANOW, attrs)
        termios.tcflush(self.fd, termios.TCIOFLUSH)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            select.select([], [self.fd], [], 0.1)
            n = os.write(self.fd, view)
            view = view[n:]

    def read_available(self, timeout_s: float) -> bytes:
        """Whatever arrives within ``timeout_s`` (empty on timeout)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if not ready:
            return b""
        try:
            return os.read(self.fd, 4096)
        except BlockingIOError:
            return b""

    def flush_input(self) -> None:
        termios.tcflush(self.fd, termios.TCIFLUSH)

    def close(self) -> None:
        os.close(self.fd)


STATUS_TIMEOUT_S = 0.05  # a servo's status packet must arrive within this of the request


class FeetechBus:
    """Request/status transactions with the servos on one serial port."""

    def __init__(self, port: SerialPort, timeout_s: float = STATUS_TIMEOUT_S, retries: int = 1):
        self.port, self.timeout_s, self.retries = port, timeout_s, retries

    def transact(self, servo_id: int, instruction: int, params: bytes, what: str) -> bytes:
        """Send one instruction and return the status parameters (none for broadcasts)."""
        packet = instruction_packet(servo_id, instruction, params)
        last: FeetechError | None = None
        for _ in range(self.retries + 1):
            self.port.flush_input()
            self.port.write(packet)
            if servo_id == BROADCAST_ID:
                return b""
            try:
                return self._read_status(servo_id, what, echo=packet)
            except (FeetechTimeoutError, FeetechChecksumError) as e:
                last = e
        assert last is not None
        raise last

    def _read_status(self, servo_id: int, what: str, echo: bytes = b"") -> bytes:
        """The parameters of ``servo_id``'s status packet. A half-duplex adapter echoes what was
        sent: the first packet equal to ``echo`` (the instruction, same ID) is skipped, not read as
        error bits. (A PING status with error bit 0 alone is byte-identical to the PING echo.)"""
        echoed = parse_packet(echo)[0] if echo else None
        buf = bytearray()
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                packet, used = parse_packet(buf)
            except FeetechChecksumError as e:
                raise FeetechChecksumError(f"servo {servo_id}: {what}: {e.args[0]}") from None
            del buf[:used]
            if packet is not None:
                if packet == echoed:
                    echoed = None
                    continue  # our own instruction, echoed
                if packet.servo_id != servo_id:
                    continue  # another servo's status
                if packet.code != 0:
                    raise FeetechStatusError(servo_id, what, packet.code)
                return packet.params
            left = deadline - time.monotonic()
            if left <= 0:
                raise FeetechTimeoutError(f"servo {servo_id}: {what}: no status packet within "
                                          f"{self.timeout_s * 1000:.0f} ms on {self.port.path}")
            buf += self.port.read_available(left)

    def ping(self, servo_id: int) -> None:
        self.transact(servo_id, PING, b"", "ping")

    def read(self, servo_id: int, register: tuple[int, int], name: str) -> bytes:
        addr, size = register
        data = self.transact(servo_id, READ, bytes([addr, size]), f"read {name} ({addr}, {size} bytes)")
        if len(data) != size:
            raise FeetechError(f"servo {servo_id}: read {name}: got {len(data)} bytes, expected {size}")
        return data

    def write(self, servo_id: int, address: int, data: bytes, name: str) -> None:
        self.transact(servo_id, WRITE, bytes([address]) + bytes(data), f"write {name} ({address})")


# ----------------------------------------------------------------------------------- gripper
@dataclass
class GripperCalibration:
    """One gripper unit: its servo ID and the measured open / closed positions (ticks)."""

    servo_id: int
    open_ticks: int
    closed_ticks: int
    torque_limit: int = DEFAULT_TORQUE_LIMIT  # 0.1 % units: 300 = 30 %
    speed: int = 0  # goal speed (0: the servo's maximum)
    acceleration: int = 0

    def __post_init__(self) -> None:
        if self.open_ticks == self.closed_ticks:
            raise ValueError(f"gripper {self.servo_id}: open and closed positions are both {self.open_ticks}")
        if not 0 <= self.torque_limit <= 1000:
            raise ValueError(f"gripper {self.servo_id}: torque limit {self.torque_limit} outside 0..1000")

    def ticks(self, opening: float) -> int:
        """Position for a gripper scalar (1 = open, 0 = closed), clipped to [0, 1]."""
        x = min(1.0, max(0.0, float(opening)))
        return round(self.closed_ticks + x * (self.open_ticks - self.closed_ticks))

    def opening(self, ticks: int) -> float:
        """Gripper scalar for a position (not clipped: slightly outside [0, 1] past the calibration)."""
        return (ticks - self.closed_ticks) / (self.open_ticks - self.closed_ticks)


DEFAULT_CALIBRATION = {arm: GripperCalibration(servo_id, open_ticks=2048, closed_ticks=3055)
                       for arm, servo_id in GRIPPER_IDS.items()}


def load_calibration(path: str | Path) -> dict[str, GripperCalibration]:
    """Read ``{"left": {...}, "right": {...}}`` written by :func:`save_calibration`."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise FeetechError(f"cannot read gripper calibration {path}: {e}") from e
    try:
        return {arm: GripperCalibration(**fields) for arm, fields in raw.items()}
    except TypeError as e:
        raise FeetechError(f"gripper calibration {path}: {e}") from e


def save_calibration(path: str | Path, calibration: dict[str, GripperCalibration]) -> None:
    Path(path).write_text(json.dumps({arm: asdict(c) for arm, c in calibration.items()}, indent=2) + "\n")


class Gripper:
    """One X-Trainer gripper: opening scalar in, measured opening and load out."""

    def __init__(self, bus: FeetechBus, calibration: GripperCalibration):
        self.bus, self.cal = bus, calibration

    @property
    def servo_id(self) -> int:
        return self.cal.servo_id

    def start(self) -> None:
        """Ping, set the torque limit (30 % by default) and enable torque."""
        self.bus.ping(self.servo_id)
        self.bus.write(self.servo_id, TORQUE_LIMIT[0], encode_u16(self.cal.torque_limit), "torque limit")
        self.bus.write(self.servo_id, TORQUE_ENABLE[0], b"\x01", "torque enable")

    def release(self) -> None:
        """Torque off (the fingers can be moved by hand, e.g. for calibration)."""
        self.bus.write(self.servo_id, TORQUE_ENABLE[0], b"\x00", "torque enable")

    def command(self, opening: float) -> int:
        """Move to a gripper scalar (1 = open); returns the goal position written."""
        ticks = self.cal.ticks(opening)
        block = bytes([self.cal.acceleration]) + encode_position(ticks) + encode_u16(0) + encode_u16(self.cal.speed)
        self.bus.write(self.servo_id, GOAL_BLOCK[0], block, "goal position")
        return ticks

    def position(self) -> int:
        return decode_position(self.bus.read(self.servo_id, PRESENT_POSITION, "present position"))

    def opening(self) -> float:
        return self.cal.opening(self.position())

    def load(self) -> float:
        return decode_load(self.bus.read(self.servo_id, PRESENT_LOAD, "present load"))


def calibrate(gripper: Gripper, prompt=input) -> GripperCalibration:
    """Record the open and closed positions by hand: torque off, the operator moves the fingers."""
    gripper.release()
    prompt(f"Gripper {gripper.servo_id}: open the fingers fully by hand, then press Enter")
    open_ticks = gripper.position()
    prompt(f"Gripper {gripper.servo_id}: close the fingers fully by hand, then press Enter")
    closed_ticks = gripper.position()
    cal = GripperCalibration(gripper.servo_id, open_ticks, closed_ticks, gripper.cal.torque_limit,
                             gripper.cal.speed, gripper.cal.acceleration)
    gripper.cal = cal
    return cal
