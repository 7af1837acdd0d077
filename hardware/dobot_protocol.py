"""Dobot TCP/IP protocol (V3 firmware >= 3.5, and V4): commands, replies, errors, feedback (docs/platform.md §Protocol,
§Feedback packet).

Wire format (docs/platform.md §Protocol, §Feedback packet):

- A command is ASCII ``Name(p1,p2,...)`` with **no terminator**: a message ends at its closing
  parenthesis, several may share one TCP segment and one may be split across segments, so both
  directions are parsed by parentheses, never by ``recv`` boundaries. Names are case-insensitive.
- A reply is ``ErrorID,{v1,...},Name(args);`` with ErrorID 0 on success.
- The real-time feedback port pushes a 1440-byte little-endian packet every 8 ms whose TestValue
  (offset 48) is ``0x0123456789ABCDEF``; packets without it are rejected.

Everything here is pure (no sockets): :mod:`hardware.dobot_client` and :mod:`hardware.emulator`
both build on it, so the emulator cannot drift from the client's idea of the protocol.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from hardware.errors import HardwareError

# ----------------------------------------------------------------------------------- constants
DASHBOARD_PORT = 29999
MOTION_PORT = 30003  # V3 only; V4 carries motion commands on the dashboard port
FEEDBACK_PORT = 30004
FIRMWARES = ("V3", "V4")

PACKET_SIZE = 1440
TEST_VALUE = 0x0123456789ABCDEF
TEST_VALUE_OFFSET = 48
TEST_VALUE_BYTES = TEST_VALUE.to_bytes(8, "little")

# RobotMode values (docs/platform.md §Protocol).
MODE_INIT, MODE_BRAKE_OPEN, MODE_DISABLED, MODE_ENABLED = 1, 2, 4, 5
MODE_DRAG, MODE_RUNNING, MODE_ERROR, MODE_PAUSE = 6, 7, 9, 10
ROBOT_MODES = {1: "init", 2: "brake open", 4: "disabled", 5: "enabled", 6: "drag", 7: "running",
               9: "error", 10: "pause"}

# Commands that V3 firmware accepts only on the motion port (30003); everything else is a
# dashboard command. V4 accepts both kinds on the dashboard port.
MOTION_COMMANDS = frozenset({"servoj", "servop", "movj", "movl", "jointmovj", "movlio", "movjio",
                             "arc", "circle", "relmovj", "relmovl", "sync", "movjext"})


def is_motion_command(name: str) -> bool:
    """True for commands that V3 firmware takes on port 30003 (docs/platform.md §Protocol)."""
    return name.lower() in MOTION_COMMANDS


# ----------------------------------------------------------------------------------- errors
class DobotError(HardwareError):
    """A command the controller refused; ``command`` is the command text, ``error_id`` its ErrorID."""

    description = "error"

    def __init__(self, command: str, error_id: int | None = None, detail: str = ""):
        self.command, self.error_id, self.detail = command, error_id, detail
        text = f"{command}: {self.description}"
        if error_id is not None:
            text += f" (ErrorID {error_id})"
        if detail:
            text += f": {detail}"
        super().__init__(text)


class CommandFailedError(DobotError):
    description = "command failed"


class AlarmError(DobotError):
    description = "robot is in an alarm state"


class EmergencyStopError(DobotError):
    description = "emergency stop is pressed"


class PowerOffError(DobotError):
    description = "robot is powered off"


class UnknownCommandError(DobotError):
    description = "unknown command"


class ParameterCountError(DobotError):
    description = "wrong number of parameters"


class ParameterError(DobotError):
    """A parameter of the wrong type or out of range; ``parameter`` is its 1-based index."""

    def __init__(self, command: str, error_id: int, parameter: int):
        self.parameter = parameter
        super().__init__(command, error_id, f"parameter {parameter}")


class ParameterTypeError(ParameterError):
    description = "wrong type of parameter"


class ParameterRangeError(ParameterError):
    description = "parameter out of range"


class ProtocolError(DobotError):
    """Bytes that are not a valid reply or feedback packet (malformed, truncated, wrong test value)."""

    description = "protocol error"


class DobotConnectionError(DobotError):
    """A connection to the controller is missing, refused or dropped."""

    description = "connection error"


class DobotTimeoutError(DobotError):
    description = "no reply in time"


_FIXED_ERRORS: dict[int, type[DobotError]] = {
    -1: CommandFailedError, -2: AlarmError, -3: EmergencyStopError, -4: PowerOffError,
    -10000: UnknownCommandError, -20000: ParameterCountError,
}


def error_for(error_id: int, command: str) -> DobotError:
    """The exception for a non-zero ErrorID of ``command`` (docs/platform.md §Protocol: −3000N type,
    −4000N range)."""
    if error_id in _FIXED_ERRORS:
        return _FIXED_ERRORS[error_id](command, error_id)
    if -39999 <= error_id <= -30001:
        return ParameterTypeError(command, error_id, -30000 - error_id)
    if -49999 <= error_id <= -40001:
        return ParameterRangeError(command, error_id, -40000 - error_id)
    return DobotError(command, error_id, "undocumented error id")


# ----------------------------------------------------------------------------------- commands
def _format_value(v: object) -> str:
    if isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            raise ValueError(f"cannot send a non-finite number ({v})")
        text = f"{float(v):.6f}".rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    if isinstance(v, str):
        return v
    if isinstance(v, (Sequence, np.ndarray)):
        return "{" + ",".join(_format_value(x) for x in v) + "}"
    raise TypeError(f"cannot format a {type(v).__name__} as a Dobot parameter")


def format_command(name: str, *args: object, **kwargs: object) -> str:
    """``Name(p1,p2,...,key=value)``: numbers in plain decimal, sequences as ``{a,b,c}``.

    >>> format_command("SetTool", 1, (0, 0, 197, 0, 0, 0))
    'SetTool(1,{0,0,197,0,0,0})'
    """
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
        raise ValueError(f"invalid command name {name!r}")
    params = [_format_value(a) for a in args] + [f"{k}={_format_value(v)}" for k, v in kwargs.items()]
    return f"{name}({','.join(params)})"


def servoj_command(q_deg: Sequence[float], t: float = 0.03, lookahead_time: float = 50,
                   gain: float = 500) -> str:
    """``ServoJ(j1..j6 deg, t=..., lookahead_time=..., gain=...)`` (docs/platform.md §Protocol)."""
    q = [float(x) for x in q_deg]
    if len(q) != 6:
        raise ValueError(f"ServoJ needs 6 joint values, got {len(q)}")
    return format_command("ServoJ", *q, t=t, lookahead_time=lookahead_time, gain=gain)


@dataclass(frozen=True)
class Command:
    """One parsed command: ``name`` as sent, positional ``args`` and ``kwargs`` as raw strings."""

    text: str
    name: str
    args: tuple[str, ...]
    kwargs: dict[str, str] = field(default_factory=dict)


def split_params(inner: str) -> list[str]:
    """Split a parameter list on top-level commas (commas inside ``{}`` or ``()`` stay)."""
    out, depth, start = [], 0, 0
    for i, c in enumerate(inner):
        if c in "{([":
            depth += 1
        elif c in "})]":
            depth -= 1
        elif c == "," and depth == 0:
            out.append(inner[start:i].strip())
            start = i + 1
    last = inner[start:].strip()
    if last or out:
        out.append(last)
    return out


def parse_command(text: str) -> Command:
    """Parse one complete ``Name(...)`` command; ``ProtocolError`` when it is not one."""
    m = re.fullmatch(r"\s*([A-Za-z][A-Za-z0-9_]*)\((.*)\)\s*", text, flags=re.DOTALL)
    if not m:
        raise ProtocolError(text[:60], detail="not a Name(...) command")
    args, kwargs = [], {}
    for p in split_params(m.group(2)):
        key, eq, value = p.partition("=")
        if eq and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            kwargs[key.strip()] = value.strip()
        else:
            args.append(p)
    return Command(text=text.strip(), name=m.group(1), args=tuple(args), kwargs=kwargs)


class CommandSplitter:
    """Server side: cut a byte stream into complete commands at their closing parenthesis.

    Bytes between commands (whitespace, ``;`` or newlines some clients add) are skipped. Text
    that cannot start a command is returned as a :class:`ProtocolError` item so that a server can
    answer it without losing the commands around it.
    """

    MAX_COMMAND = 4096

    def __init__(self) -> None:
        self._buf = ""

    def feed(self, data: bytes) -> list[Command | ProtocolError]:
        self._buf += data.decode("ascii", errors="replace")
        out: list[Command | ProtocolError] = []
        while True:
            self._buf = self._buf.lstrip(" \t\r\n;")
            if not self._buf:
                return out
            m = re.match(r"[A-Za-z][A-Za-z0-9_]*\(", self._buf)
            if not m:
                if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self._buf) and len(self._buf) < 64:
                    return out  # a name still arriving
                nxt = re.compile(r"[A-Za-z][A-Za-z0-9_]*\(").search(self._buf, 1)
                if nxt is None:  # keep a name that may still be arriving after the garbage
                    nxt = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}$").search(self._buf, 1)
                cut = nxt.start() if nxt else len(self._buf)
                bad, self._buf = self._buf[:cut], self._buf[cut:]
                out.append(ProtocolError(bad[:60], detail="not a Name(...) command"))
                continue
            end = _closing(self._buf, m.end() - 1)
            if end is None:
                if len(self._buf) > self.MAX_COMMAND:
                    bad, self._buf = self._buf, ""
                    out.append(ProtocolError(bad[:60], detail="unterminated command"))
                return out
            text, self._buf = self._buf[:end + 1], self._buf[end + 1:]
            try:
                out.append(parse_command(text))
            except ProtocolError as e:  # e.g. ``Name(}``: closed by a brace, not a parenthesis
                out.append(e)


def _closing(buf: str, open_idx: int) -> int | None:
    """Index of the parenthesis closing ``buf[open_idx]`` (braces nest inside), or None if not yet."""
    depth = 0
    for i in range(open_idx, len(buf)):
        c = buf[i]
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
            if depth == 0:
                return i
    return None


def _cut_garbage(buf: str) -> tuple[str, str]:
    """Split a malformed reply prefix off, up to and including the next ``;``."""
    semi = buf.find(";")
    if semi >= 0:
        return buf[:semi + 1], buf[semi + 1:]
    return buf, ""


# ----------------------------------------------------------------------------------- replies
@dataclass(frozen=True)
class Reply:
    """``ErrorID,{values},Name(args);`` parsed: ``values`` are the raw strings inside the braces."""

    error_id: int
    values: tuple[str, ...]
    name: str
    command: str  # the echoed ``Name(args)``
    text: str

    @property
    def ok(self) -> bool:
        return self.error_id == 0

    def raise_for_error(self) -> Reply:
        if self.error_id != 0:
            raise error_for(self.error_id, self.command)
        return self

    def floats(self) -> list[float]:
        """The reply values as numbers (``{-90.0,0.0,...}`` of GetAngle, ``{5}`` of RobotMode)."""
        try:
            return [float(v) for v in self.values if v != ""]
        except ValueError:
            raise ProtocolError(self.command, detail=f"non-numeric reply values {self.values!r}") from None


def format_reply(error_id: int, values: Iterable[object], command_text: str) -> str:
    """``ErrorID,{v1,...},Name(args);`` (emulator side)."""
    inner = ",".join(_format_value(v) for v in values)
    return f"{int(error_id)},{{{inner}}},{command_text};"


_REPLY_HEAD = re.compile(r"(-?\d{1,9}),\{")  # ErrorIDs have at most 6 digits; int() refuses > 4300


class ReplyParser:
    """Client side: a streaming parser for replies that survives several replies in one segment,
    replies split across segments, and garbage in between.

    :meth:`feed` returns complete :class:`Reply` objects and, for bytes that are not a reply,
    :class:`ProtocolError` items (the parser resynchronises after the next ``;``). A reply holds no
    ``;``, so one still open at a ``;`` (truncated, or garbage) is reported there and the replies
    after it are parsed.
    """

    MAX_REPLY = 4096  # each feed rescans the pending reply: this bounds a peer that drips one forever

    def __init__(self) -> None:
        self._buf = ""

    @property
    def pending(self) -> str:
        """Bytes of an incomplete reply waiting for the rest."""
        return self._buf

    def feed(self, data: bytes) -> list[Reply | ProtocolError]:
        self._buf += data.decode("ascii", errors="replace")
        out: list[Reply | ProtocolError] = []
        while True:
            self._buf = self._buf.lstrip(" \t\r\n;")
            if not self._buf:
                return out
            item = self._parse_one()
            if item is None:
                if len(self._buf) > self.MAX_REPLY:
                    bad, self._buf = self._buf, ""
                    out.append(ProtocolError(bad[:60], detail="reply too long without an end"))
                return out
            out.append(item)

    def _parse_one(self) -> Reply | ProtocolError | None:
        buf = self._buf
        m = _REPLY_HEAD.match(buf)
        if not m:
            if re.fullmatch(r"-?\d{0,9},?", buf):
                return None  # the head is still arriving
            return self._malformed("reply does not start with ErrorID,{")
        close = _closing(buf, m.end() - 1)
        if close is None:
            return self._malformed("';' inside the reply values") if ";" in buf else None
        rest = close + 1
        if rest >= len(buf):
            return None
        if buf[rest] != ",":
            return self._malformed("expected ',' after the reply values")
        nm = re.compile(r"\s*([A-Za-z][A-Za-z0-9_]*)\(").match(buf, rest + 1)
        if not nm:
            if re.fullmatch(r"\s*[A-Za-z0-9_]*", buf[rest + 1:]):
                return None
            return self._malformed("expected the echoed Name(args)")
        end = _closing(buf, nm.end() - 1)
        if end is None:
            return self._malformed("';' inside the echoed command") if ";" in buf else None
        text = buf[:end + 1]
        self._buf = buf[end + 1:]
        if self._buf.startswith(";"):
            text += ";"
        return Reply(error_id=int(m.group(1)), values=tuple(split_params(buf[m.end():close])),
                     name=nm.group(1), command=buf[rest + 1:end + 1].strip(), text=text)

    def _malformed(self, why: str) -> ProtocolError:
        bad, self._buf = _cut_garbage(self._buf)
        return ProtocolError(bad[:60].strip(), detail=f"malformed reply: {why}")


# ----------------------------------------------------------------------------------- feedback
# (name, numpy format, byte offset) at the offsets of docs/platform.md §Feedback packet; the rest of
# the 1440 bytes is padding.
_FEEDBACK_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("message_size", "<u2", 0),
    ("digital_inputs", "<u8", 8),
    ("digital_outputs", "<u8", 16),
    ("robot_mode", "<u8", 24),
    ("timestamp_ms", "<u8", 32),
    ("test_value", "<u8", 48),
    ("speed_scaling", "<f8", 64),
    ("q_target", "(6,)<f8", 192),
    ("q_actual", "(6,)<f8", 432),
    ("qd_actual", "(6,)<f8", 480),
    ("tool_vector_actual", "(6,)<f8", 624),
    ("tool_vector_target", "(6,)<f8", 768),
    ("motor_temperatures", "(6,)<f8", 864),
    ("enable_status", "u1", 1026),
    ("drag_status", "u1", 1027),
    ("running_status", "u1", 1028),
    ("error_status", "u1", 1029),
    ("robot_type", "u1", 1031),
    ("target_quaternion", "(4,)<f8", 1352),
    ("actual_quaternion", "(4,)<f8", 1384),
)
FEEDBACK_DTYPE = np.dtype({"names": [f[0] for f in _FEEDBACK_FIELDS],
                           "formats": [f[1] for f in _FEEDBACK_FIELDS],
                           "offsets": [f[2] for f in _FEEDBACK_FIELDS],
                           "itemsize": PACKET_SIZE})


@dataclass(frozen=True)
class Feedback:
    """One decoded feedback packet (angles in degrees, tool vector in mm / deg, as on the wire).

    ``received_s`` is the reader's ``time.monotonic()`` when the packet was complete (0 when
    decoded outside a reader).
    """

    robot_mode: int
    timestamp_ms: int
    q_actual_deg: np.ndarray
    q_target_deg: np.ndarray
    qd_actual_deg_s: np.ndarray
    tool_vector_actual: np.ndarray
    tool_vector_target: np.ndarray
    speed_scaling: float
    enable_status: int
    error_status: int
    running_status: int
    robot_type: int
    received_s: float = 0.0

    @property
    def in_error(self) -> bool:
        return self.robot_mode == MODE_ERROR or self.error_status != 0

    @property
    def q_actual_rad(self) -> np.ndarray:
        return np.deg2rad(self.q_actual_deg)


def decode_feedback(buf: bytes | bytearray | memoryview, received_s: float = 0.0) -> Feedback:
    """Decode exactly one 1440-byte packet; ``ProtocolError`` on a wrong size or test value."""
    if len(buf) != PACKET_SIZE:
        raise ProtocolError("feedback", detail=f"packet is {len(buf)} bytes, expected {PACKET_SIZE}")
    rec = np.frombuffer(buf, dtype=FEEDBACK_DTYPE, count=1)[0]
    if int(rec["test_value"]) != TEST_VALUE:
        raise ProtocolError("feedback", detail=f"wrong test value 0x{int(rec['test_value']):016X} "
                                               f"at offset {TEST_VALUE_OFFSET} (expected 0x{TEST_VALUE:016X})")
    if int(rec["message_size"]) != PACKET_SIZE:
        raise ProtocolError("feedback", detail=f"MessageSize field is {int(rec['message_size'])}, expected {PACKET_SIZE}")
    return Feedback(
        robot_mode=int(rec["robot_mode"]), timestamp_ms=int(rec["timestamp_ms"]),
        q_actual_deg=rec["q_actual"].copy(), q_target_deg=rec["q_target"].copy(),
        qd_actual_deg_s=rec["qd_actual"].copy(),
        tool_vector_actual=rec["tool_vector_actual"].copy(), tool_vector_target=rec["tool_vector_target"].copy(),
        speed_scaling=float(rec["speed_scaling"]), enable_status=int(rec["enable_status"]),
        error_status=int(rec["error_status"]), running_status=int(rec["running_status"]),
        robot_type=int(rec["robot_type"]), received_s=received_s)


def encode_feedback(values: Mapping[str, object] | None = None, **fields: object) -> bytes:
    """A 1440-byte packet with MessageSize and TestValue filled in; other fields from ``values``
    / keyword arguments named as in :data:`FEEDBACK_DTYPE` (e.g. ``q_actual=[...]`` in degrees)."""
    rec = np.zeros(1, dtype=FEEDBACK_DTYPE)
    rec["message_size"] = PACKET_SIZE
    rec["test_value"] = TEST_VALUE
    for name, value in {**(values or {}), **fields}.items():
        if name not in FEEDBACK_DTYPE.names:
            raise KeyError(f"unknown feedback field {name!r}; known: {', '.join(FEEDBACK_DTYPE.names)}")
        rec[name] = value
    return rec.tobytes()


@dataclass
class FeedbackBatch:
    """What :func:`take_feedback` cut off a stream buffer: the valid packets in order, a
    :class:`ProtocolError` per rejected one, and how many times it had to resynchronise."""

    packets: list[Feedback] = field(default_factory=list)
    rejected: list[ProtocolError] = field(default_factory=list)
    resyncs: int = 0


def take_feedback(buf: bytearray, received_s: float = 0.0) -> FeedbackBatch:
    """Consume every complete 1440-byte packet at the front of a feedback stream buffer (in place).

    A packet without the test value (or a wrong MessageSize) is rejected: 1440 bytes are skipped
    when it looks aligned (MessageSize 1440 at its start), else the buffer resynchronises on the
    next :func:`find_packet_start`, or keeps only the last 1439 bytes (the start of a packet still
    arriving) when there is none. Fewer than 1440 bytes stay in ``buf`` for the next call.
    """
    out = FeedbackBatch()
    while len(buf) >= PACKET_SIZE:
        try:
            out.packets.append(decode_feedback(bytes(buf[:PACKET_SIZE]), received_s=received_s))
            del buf[:PACKET_SIZE]
        except ProtocolError as e:
            out.rejected.append(e)
            if buf[:2] == PACKET_SIZE.to_bytes(2, "little"):
                del buf[:PACKET_SIZE]
                continue
            out.resyncs += 1
            start = find_packet_start(buf)
            del buf[:len(buf) - (PACKET_SIZE - 1) if start is None else start]
    return out


def find_packet_start(buf: bytes | bytearray) -> int | None:
    """Offset of the first plausible packet start (MessageSize 1440 and the test value 48 bytes
    later) in a misaligned stream, or None. Used to resynchronise after corrupt bytes."""
    size = PACKET_SIZE.to_bytes(2, "little")
    pos = TEST_VALUE_OFFSET
    while True:
        pos = buf.find(TEST_VALUE_BYTES, pos)
        if pos < 0:
            return None
        start = pos - TEST_VALUE_OFFSET
        if buf[start:start + 2] == size:
            return start
        pos += 1
