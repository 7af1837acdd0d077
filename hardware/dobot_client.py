"""Client for one Dobot Nova controller over TCP/IP: dashboard, motion and feedback (docs/platform.md §Protocol).

- **Ports**: V3 firmware takes dashboard commands on 29999 and motion commands (``ServoJ``...)
  on 30003; V4 takes both on 29999. Feedback is read from 30004 in both. ``firmware="auto"``
  picks V3 when the motion port accepts a connection, V4 otherwise.
- **Replies** are parsed by :class:`hardware.dobot_protocol.ReplyParser` on a reader thread per
  command connection and matched to the waiting request by the echoed command name, so replies
  to streamed commands (``ServoJ`` gets one on some firmware, none on V3) never confuse a request.
  A non-zero ErrorID raises the :class:`~hardware.dobot_protocol.DobotError` subclass naming the
  command; a malformed reply fails the oldest waiting request with a ``ProtocolError``.
- **Feedback**: a reader thread assembles exact 1440-byte packets, rejects those without the test
  value (resynchronising on a misaligned stream), and keeps only the newest; it reconnects when the
  connection drops. :meth:`DobotClient.feedback` refuses data older than ``max_age_s``.
- **Start-up** (:meth:`DobotClient.start_up`): ``EnableRobot()``, ``SpeedFactor(20)``, ``AccJ(20)``,
  ``SpeedJ(20)``, ``SetTool(1,{0,0,197,0,0,0})``, ``Tool(1)``; a controller in error mode
  (RobotMode 9) is first recovered with ``ClearError()`` + ``EnableRobot()`` when allowed.
- **Streaming**: :meth:`DobotClient.servo_j` sends without waiting for a reply; an error reply that
  arrives later is raised by the next call.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from hardware import dobot_protocol as dp
from hardware.dobot_protocol import DobotConnectionError, DobotError, DobotTimeoutError, ProtocolError

TOOL_1 = (0, 0, 197, 0, 0, 0)  # SetTool(1,{0,0,197,0,0,0}): tool point 197 mm along flange z


class StaleFeedbackError(DobotError):
    description = "feedback is stale"


class RobotErrorModeError(DobotError):
    description = "robot is in error mode (RobotMode 9)"


@dataclass
class DobotConfig:
    """Where and how to reach one controller."""

    host: str
    firmware: str = "auto"  # "V3", "V4" or "auto"
    dashboard_port: int = dp.DASHBOARD_PORT
    motion_port: int = dp.MOTION_PORT
    feedback_port: int = dp.FEEDBACK_PORT
    timeout_s: float = 2.0  # per request
    connect_timeout_s: float = 2.0
    speed_percent: int = 20  # SpeedFactor / AccJ / SpeedJ at start-up
    tool: tuple[float, ...] = TOOL_1
    auto_clear_errors: bool = True  # allow ClearError + EnableRobot on RobotMode 9
    max_feedback_age_s: float = 0.1


@dataclass
class _Pending:
    command: str
    name: str
    done: threading.Event = field(default_factory=threading.Event)
    reply: dp.Reply | None = None
    error: DobotError | None = None


def _connect(host: str, port: int, timeout: float, what: str) -> socket.socket:
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise DobotConnectionError(f"{what} {host}:{port}", detail=str(e)) from e
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)
    return sock


class CommandChannel:
    """One command connection (dashboard, or the V3 motion port) with its reply reader thread."""

    def __init__(self, host: str, port: int, name: str, timeout_s: float, connect_timeout_s: float = 2.0):
        self.host, self.port, self.name, self.timeout_s = host, port, name, timeout_s
        self.sock = _connect(host, port, connect_timeout_s, f"{name} port")
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._pending: list[_Pending] = []
        self.stream_error: DobotError | None = None  # an error reply to a streamed command
        self.unmatched_replies = 0
        self.malformed_replies = 0
        self.closed_error: DobotConnectionError | None = None
        self._thread = threading.Thread(target=self._read_loop, daemon=True, name=f"dobot-{name}-{host}")
        self._thread.start()

    def request(self, command: str, timeout_s: float | None = None) -> dp.Reply:
        """Send ``command`` and wait for its reply; raises the DobotError for a non-zero ErrorID."""
        pending = _Pending(command, command.split("(", 1)[0].lower())
        with self._lock:
            if self.closed_error:
                raise DobotConnectionError(command, detail=f"{self.name} connection is closed")
            self._pending.append(pending)
        try:
            self._send(command)
            if not pending.done.wait(self.timeout_s if timeout_s is None else timeout_s):
                raise DobotTimeoutError(command, detail=f"after {self.timeout_s if timeout_s is None else timeout_s:.3g} s "
                                                        f"on the {self.name} port")
        finally:
            with self._lock:
                if pending in self._pending:
                    self._pending.remove(pending)
        if pending.error is not None:
            raise pending.error
        assert pending.reply is not None
        return pending.reply.raise_for_error()

    def send(self, command: str) -> None:
        """Send without waiting (streamed commands); raises an error reply received since the last call."""
        err, self.stream_error = self.stream_error, None
        if err is not None:
            raise err
        self._send(command)

    def _send(self, command: str) -> None:
        if self.closed_error:
            raise DobotConnectionError(command, detail=f"{self.name} connection is closed")
        try:
            with self._send_lock:
                self.sock.sendall(command.encode("ascii"))
        except OSError as e:
            raise DobotConnectionError(command, detail=f"{self.name} port: {e}") from e

    def _read_loop(self) -> None:
        parser = dp.ReplyParser()
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                for item in parser.feed(data):
                    self._dispatch(item)
        except OSError:
            pass
        self._fail_all(DobotConnectionError(f"{self.name} port {self.host}:{self.port}", detail="connection closed"))

    def _dispatch(self, item: dp.Reply | ProtocolError) -> None:
        with self._lock:
            if isinstance(item, ProtocolError):
                self.malformed_replies += 1
                if self._pending:  # the garbled bytes were the oldest request's reply
                    p = self._pending.pop(0)
                    p.error = ProtocolError(p.command, detail=item.detail + f" (got {item.command!r})")
                    p.done.set()
                return
            name = item.name.lower()
            for p in self._pending:
                if p.name == name:
                    self._pending.remove(p)
                    p.reply = item
                    p.done.set()
                    return
            self.unmatched_replies += 1  # a reply to a streamed command, or a late one
            if not item.ok:
                self.stream_error = dp.error_for(item.error_id, item.command)

    def _fail_all(self, err: DobotConnectionError) -> None:
        with self._lock:
            self.closed_error = err
            for p in self._pending:
                p.error = DobotConnectionError(p.command, detail=f"{self.name} connection closed before the reply")
                p.done.set()
            self._pending.clear()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(timeout=2.0)


class FeedbackReader:
    """Reads the 8 ms feedback stream on a thread and keeps only the newest valid packet."""

    def __init__(self, host: str, port: int, connect_timeout_s: float = 2.0, reconnect: bool = True):
        self.host, self.port, self.connect_timeout_s, self.reconnect = host, port, connect_timeout_s, reconnect
        self._cond = threading.Condition()
        self._latest: dp.Feedback | None = None
        self.packets = 0  # valid packets received
        self.rejected = 0  # packets without the test value (or otherwise invalid)
        self.resyncs = 0
        self.reconnects = 0
        self.last_error: Exception | None = None
        self.connected = False
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"dobot-feedback-{host}")
        self._thread.start()

    @property
    def latest(self) -> dp.Feedback | None:
        return self._latest

    def age_s(self) -> float:
        """Seconds since the newest valid packet arrived (inf before the first)."""
        fb = self._latest
        return float("inf") if fb is None else time.monotonic() - fb.received_s

    def wait(self, predicate: Callable[[dp.Feedback], bool] = lambda fb: True, timeout_s: float = 1.0,
             newer_than: float = -1.0) -> dp.Feedback | None:
        """The first packet received after ``newer_than`` (monotonic s) satisfying ``predicate``, or None."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                fb = self._latest
                if fb is not None and fb.received_s > newer_than and predicate(fb):
                    return fb
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def _run(self) -> None:
        backoff = 0.02
        first = True
        while not self._stop.is_set():
            try:
                self._sock = _connect(self.host, self.port, self.connect_timeout_s, "feedback port")
            except DobotConnectionError as e:
                self.last_error = e
                if not self.reconnect and first:
                    return
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 0.5)
                continue
            if not first:
                self.reconnects += 1
            first, backoff = False, 0.02
            self.connected = True
            try:
                self._read(self._sock)
            except OSError as e:
                self.last_error = e
            finally:
                self.connected = False
                try:
                    self._sock.close()
                except OSError:
                    pass
            if not self.reconnect:
                return
            self._stop.wait(backoff)

    def _read(self, sock: socket.socket) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            data = sock.recv(65536)
            if not data:
                self.last_error = DobotConnectionError(f"feedback port {self.host}:{self.port}", detail="connection closed")
                return
            buf += data
            batch = dp.take_feedback(buf, received_s=time.monotonic())
            self.packets += len(batch.packets)
            self.rejected += len(batch.rejected)
            self.resyncs += batch.resyncs
            if batch.rejected:
                self.last_error = batch.rejected[-1]
            if batch.packets:
                with self._cond:
                    self._latest = batch.packets[-1]
                    self._cond.notify_all()

    def close(self) -> None:
        self._stop.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=2.0)


class DobotClient:
    """One arm's controller: requests, ServoJ streaming, feedback, start-up and recovery."""

    def __init__(self, config: DobotConfig):
        if config.firmware not in (*dp.FIRMWARES, "auto"):
            raise ValueError(f"firmware must be V3, V4 or auto, got {config.firmware!r}")
        self.config = config
        self.firmware: str | None = None
        self.dashboard: CommandChannel | None = None
        self.motion: CommandChannel | None = None
        self.feedback_reader: FeedbackReader | None = None

    # ------------------------------------------------------------------ connection
    def connect(self, wait_feedback_s: float = 2.0) -> DobotClient:
        """Open the command connections and the feedback stream; waits for a first packet."""
        c = self.config
        self.dashboard = CommandChannel(c.host, c.dashboard_port, "dashboard", c.timeout_s, c.connect_timeout_s)
        try:
            self.firmware = c.firmware
            if c.firmware in ("V3", "auto"):
                try:
                    self.motion = CommandChannel(c.host, c.motion_port, "motion", c.timeout_s, c.connect_timeout_s)
                    self.firmware = "V3"
                except DobotConnectionError:
                    if c.firmware == "V3":
                        raise
                    self.firmware = "V4"
            if self.firmware == "V4":
                self.motion = self.dashboard
            self.feedback_reader = FeedbackReader(c.host, c.feedback_port, c.connect_timeout_s)
            if self.feedback_reader.wait(timeout_s=wait_feedback_s) is None:
                raise DobotConnectionError(f"feedback port {c.host}:{c.feedback_port}",
                                           detail=f"no valid packet within {wait_feedback_s} s "
                                                  f"({self.feedback_reader.last_error})")
        except Exception:
            self.close()
            raise
        return self

    def close(self) -> None:
        for ch in {id(x): x for x in (self.motion, self.dashboard) if x is not None}.values():
            ch.close()
        if self.feedback_reader is not None:
            self.feedback_reader.close()
        self.dashboard = self.motion = self.feedback_reader = None

    def __enter__(self) -> DobotClient:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()

    def _channel(self, command: str) -> CommandChannel:
        ch = self.motion if dp.is_motion_command(command.split("(", 1)[0]) else self.dashboard
        if ch is None:
            raise DobotConnectionError(command, detail="not connected")
        return ch

    # ------------------------------------------------------------------ commands
    def request(self, name: str, *args: object, timeout_s: float | None = None, **kwargs: object) -> dp.Reply:
        """Send ``Name(args)`` on the right port and return its reply (DobotError on ErrorID != 0)."""
        command = dp.format_command(name, *args, **kwargs)
        return self._channel(command).request(command, timeout_s)

    def servo_j(self, q_deg: Sequence[float], t: float = 0.03, lookahead_time: float = 50, gain: float = 500) -> None:
        """Stream one ``ServoJ`` without waiting for a reply (docs/platform.md §Protocol)."""
        command = dp.servoj_command(q_deg, t, lookahead_time, gain)
        self._channel(command).send(command)

    def stop(self) -> None:
        """Stop motion now: ``ResetRobot()`` on V3, ``Stop()`` on V4."""
        self.request("ResetRobot" if self.firmware == "V3" else "Stop")

    # ------------------------------------------------------------------ feedback
    def feedback(self, max_age_s: float | None = None) -> dp.Feedback:
        """The newest packet; ``StaleFeedbackError`` when older than ``max_age_s`` (default from config)."""
        reader = self.feedback_reader
        if reader is None:
            raise DobotConnectionError("feedback", detail="not connected")
        max_age = self.config.max_feedback_age_s if max_age_s is None else max_age_s
        fb, age = reader.latest, reader.age_s()
        if fb is None or age > max_age:
            raise StaleFeedbackError("feedback", detail=f"newest packet is {age * 1000:.0f} ms old "
                                                        f"(limit {max_age * 1000:.0f} ms; last error: {reader.last_error})")
        return fb

    def wait_for(self, predicate: Callable[[dp.Feedback], bool], timeout_s: float, what: str) -> dp.Feedback:
        """Block until fresh feedback satisfies ``predicate``; ``DobotTimeoutError`` naming ``what`` otherwise."""
        assert self.feedback_reader is not None
        fb = self.feedback_reader.wait(predicate, timeout_s, newer_than=time.monotonic())
        if fb is None:
            latest = self.feedback_reader.latest
            mode = "no feedback" if latest is None else f"RobotMode {latest.robot_mode}"
            raise DobotTimeoutError(what, detail=f"not reached within {timeout_s} s ({mode})")
        return fb

    def joints_deg(self) -> np.ndarray:
        return self.feedback().q_actual_deg.copy()

    # ------------------------------------------------------------------ sequences
    def recover(self) -> None:
        """RobotMode 9 → ``ClearError()`` + ``EnableRobot()`` when allowed (docs/platform.md §Protocol)."""
        fb = self.feedback()
        if not fb.in_error:
            return
        if not self.config.auto_clear_errors:
            raise RobotErrorModeError(f"{self.config.host}", detail="automatic ClearError is not allowed")
        self.request("ClearError")
        self.request("EnableRobot")
        self.wait_for(lambda f: f.robot_mode in (dp.MODE_ENABLED, dp.MODE_RUNNING) and not f.in_error,
                      self.config.timeout_s, "EnableRobot() after ClearError()")

    def start_up(self) -> None:
        """The X-Trainer start-up sequence (docs/platform.md §Protocol), recovering from error mode first."""
        c = self.config
        self.recover()
        self.request("EnableRobot")
        self.wait_for(lambda f: f.robot_mode in (dp.MODE_ENABLED, dp.MODE_RUNNING), c.timeout_s, "EnableRobot()")
        self.request("SpeedFactor", c.speed_percent)
        self.request("AccJ", c.speed_percent)
        self.request("SpeedJ", c.speed_percent)
        self.request("SetTool", 1, c.tool)
        self.request("Tool", 1)
