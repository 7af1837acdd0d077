"""Loopback emulator of the X-Trainer's two Dobot Nova controllers (docs/platform.md §Protocol).

``python -m hardware.emulator`` serves the Dobot TCP/IP protocol for both arms, by default the
left arm on 127.0.0.1 and the right arm on 127.0.0.2, each on the standard ports 29999 (dashboard),
30003 (motion, V3 firmware only) and 30004 (real-time feedback); addresses, ports and the firmware
flavour (V3 | V4) are configurable. V4 firmware takes dashboard *and* motion commands on 29999;
its feedback stays on 30004 as in Dobot's V4 SDK.

**Arm model**: the simulator's MuJoCo model of the bench (:mod:`hardware.bench_physics`), both
arms in one model stepped in real time. ``ServoJ(q, t=...)`` moves the servo target linearly from
the current target to ``q`` over ``t`` seconds (as the controller's servo interpolator does), under
a joint speed cap; that target is the ctrl of the arm's joint position servos at every physics
step. QActual, QDActual, ToolVectorActual and ActualQuaternion come from the model's joints, joint
velocities and flange pose (with the tool of ``SetTool``/``Tool``); QTarget is the servo target,
ToolVectorTarget its DH forward kinematics (:mod:`envs.kinematics`, from which the model is built).
The arm therefore lags, overshoots slightly and couples between joints exactly as the simulated
arm does, and sags ≈ 0.002° under the fingers' weight (the model's servos have no integral term).
Feedback packets are pushed every 8 ms; their TimeStamp is the time of the state they carry.
An :class:`ArmEmulator` made on its own gets a bench model of its own; :class:`XTrainerEmulator`
runs both arms (and, on request, both grippers) on one.

**Controller behaviour emulated**: RobotMode 4 (disabled) at power-on, ``EnableRobot`` → 5,
7 while moving (until the joints settle within :data:`SETTLED_DEG` of the target), 9 on an
alarm; ``ClearError`` → 4, so ``EnableRobot`` must follow. A ServoJ target jumping more than
``max_servo_jump_deg`` from the current target raises an alarm (the real controller's following
error); joint-limit violations are refused with −4000N. Commands are case-insensitive; unknown
ones get −10000, wrong parameter counts −20000.

**Fault injection** (:class:`Faults`, mutable while running, and :meth:`ArmEmulator.inject_error`,
:meth:`ArmEmulator.drop_feedback`): error mode (RobotMode 9), dropped feedback connections,
a paused (stale) feedback stream, packets with a wrong test value, delayed, malformed or split
replies, and feedback packets split across TCP segments.

The command line also emulates both Feetech grippers (IDs 21 / 22), each on its own
pseudo-terminal (:mod:`hardware.feetech_emulator`) and driving the fingers of the same model,
prints the paths to open and links them under stable names (``--gripper-links``, default
:data:`GRIPPER_LINK_DIR`: ``gripper_left``, ``gripper_right``), which is where
``hardware/xtrainer.example.json`` looks for them.
"""

from __future__ import annotations

import argparse
import collections
import math
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from envs.kinematics import ARM_SPECS, forward_kinematics
from envs.xtrainer import HOME_DEG
from hardware import dobot_protocol as dp
from hardware.bench_physics import BenchPhysics, emulator_bench
from hardware.feetech import GRIPPER_IDS
from hardware.feetech_emulator import FeetechServoEmulator

FEEDBACK_PERIOD_S = 0.008
# RobotMode 7 -> 5 once the joints are this close to a finished target and nearly still. The
# model's servos hold a static error of ~0.002 deg under the fingers' weight, so the bar sits above it.
SETTLED_DEG = 0.01
SETTLED_DEG_S = 1.0
DEFAULT_HOSTS = {"left": "127.0.0.1", "right": "127.0.0.2"}
STOP_COMMANDS = ("resetrobot", "stop", "emergencystop")  # what stops motion (V3 ResetRobot, V4 Stop)
GRIPPER_LINK_DIR = Path(tempfile.gettempdir()) / "xtrainer-emulator"  # <dir>/gripper_<arm> -> the gripper's pty


@dataclass
class Faults:
    """Faults to inject; tests flip these while the emulator runs."""

    reply_delay_s: float = 0.0  # every reply is held back this long
    malformed_replies: int = 0  # the next N replies are replaced by garbage
    split_replies: int = 0  # send replies in chunks of this many bytes (separate segments)
    split_feedback: int = 0  # send feedback packets in chunks of this many bytes
    feedback_paused: bool = False  # keep the feedback connection open but send nothing
    bad_test_value: int = 0  # the next N feedback packets carry a wrong test value
    sticky_error: bool = False  # ClearError does not clear the alarm (a persisting fault)


@dataclass
class ArmState:
    """The emulated controller's state (angles in degrees); the measured joints live in the model."""

    q_target: np.ndarray  # the servo target: the ctrl of the arm's joint servos
    seg_from: np.ndarray | None = None
    seg_to: np.ndarray | None = None
    seg_start_s: float = 0.0
    seg_duration_s: float = 0.0
    mode: int = dp.MODE_DISABLED
    error_code: int = 0
    speed_factor: int = 100
    acc_j: int = 100
    speed_j: int = 100
    tool_index: int = 0
    tools: dict[int, tuple[float, ...]] = field(default_factory=lambda: {0: (0.0,) * 6})


def tool_vector(T: np.ndarray) -> np.ndarray:
    """Dobot tool vector ``(x, y, z mm, rx, ry, rz deg)`` of a 4x4 pose, ``R = Rz(rz) Ry(ry) Rx(rx)``."""
    R = T[:3, :3]
    ry = math.asin(max(-1.0, min(1.0, -R[2, 0])))
    rx = math.atan2(R[2, 1], R[2, 2])
    rz = math.atan2(R[1, 0], R[0, 0])
    return np.r_[T[:3, 3] * 1000.0, np.rad2deg([rx, ry, rz])]


def quaternion_wxyz(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` of a rotation matrix, w >= 0."""
    w = math.sqrt(max(0.0, 1.0 + R[0, 0] + R[1, 1] + R[2, 2])) / 2
    x = math.copysign(math.sqrt(max(0.0, 1.0 + R[0, 0] - R[1, 1] - R[2, 2])) / 2, R[2, 1] - R[1, 2])
    y = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] + R[1, 1] - R[2, 2])) / 2, R[0, 2] - R[2, 0])
    z = math.copysign(math.sqrt(max(0.0, 1.0 - R[0, 0] - R[1, 1] + R[2, 2])) / 2, R[1, 0] - R[0, 1])
    return np.array([w, x, y, z])


class ArmEmulator:
    """One Dobot controller on loopback: dashboard, motion (V3) and feedback servers.

    Ports of 0 pick free ports; :attr:`ports` holds the bound ones after :meth:`start`. The arm
    moves in ``physics`` (shared with the other arm and the grippers); without one it gets a bench
    model of its own. ``max_speed_deg_s`` caps how fast the servo target moves (the controller's
    joint speed limit) and is the 100 % speed of ``JointMovJ``.
    """

    def __init__(self, arm: str = "left", host: str | None = None, *, firmware: str = "V3",
                 dashboard_port: int = dp.DASHBOARD_PORT, motion_port: int = dp.MOTION_PORT,
                 feedback_port: int = dp.FEEDBACK_PORT, model: str = "nova2",
                 q0_deg: np.ndarray | None = None, max_speed_deg_s: float = 180.0,
                 max_servo_jump_deg: float = 60.0, servoj_replies: bool = False,
                 feedback_period_s: float = FEEDBACK_PERIOD_S, faults: Faults | None = None,
                 physics: BenchPhysics | None = None):
        if firmware not in dp.FIRMWARES:
            raise ValueError(f"firmware must be one of {dp.FIRMWARES}, got {firmware!r}")
        if model not in ARM_SPECS:
            raise ValueError(f"unknown arm model {model!r}; valid: {sorted(ARM_SPECS)}")
        if arm not in HOME_DEG:
            raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(HOME_DEG)}")
        self.physics = physics or BenchPhysics(emulator_bench(model))
        if self.physics.cfg.arm != model:
            raise ValueError(f"{arm} arm emulates a {model} but the bench model holds {self.physics.cfg.arm} arms")
        self.arm, self.host, self.firmware = arm, host or DEFAULT_HOSTS.get(arm, "127.0.0.1"), firmware
        self.spec = ARM_SPECS[model]
        self.limits_deg = np.array(self.spec.limits_deg, dtype=float)
        q0 = np.array(HOME_DEG[arm] if q0_deg is None else q0_deg, dtype=float)
        self.state = ArmState(q_target=q0.copy())
        self.max_speed, self.max_jump = max_speed_deg_s, max_servo_jump_deg
        self.servoj_replies, self.period = servoj_replies, feedback_period_s
        self.faults = faults or Faults()
        self.lock = self.physics.lock  # one lock for the whole bench: the physics calls back into this arm
        self.physics.drive_arm(arm, self._servo_target)  # refused if the arm has a controller already
        self.physics.place_arm(arm, np.deg2rad(q0))
        self._want = {"dashboard": dashboard_port, "feedback": feedback_port}
        if firmware == "V3":
            self._want["motion"] = motion_port
        self.ports: dict[str, int] = {}
        self._listeners: dict[str, socket.socket] = {}
        self._conns: dict[str, list[socket.socket]] = {k: [] for k in ("dashboard", "motion", "feedback")}
        self._feedback_down_until = 0.0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.commands_seen: list[str] = []  # command texts received (the latest 50-100 k), for tests and demos
        self.servoj_times: collections.deque[float] = collections.deque(maxlen=100_000)  # monotonic receive times
        self.stop_times: collections.deque[float] = collections.deque(maxlen=100_000)  # ResetRobot/Stop/EmergencyStop
        self.malformed_times: collections.deque[float] = collections.deque(maxlen=10_000)  # garbled replies sent
        self.packets_sent = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> ArmEmulator:
        """Bind the servers and start streaming (idempotent)."""
        if self.ports:
            return self
        for kind, port in self._want.items():
            sock = socket.create_server((self.host, port), reuse_port=False)
            sock.settimeout(0.1)
            self._listeners[kind] = sock
            self.ports[kind] = sock.getsockname()[1]
            self._spawn(self._accept_loop, kind, sock)
        self._spawn(self._tick_loop)
        return self

    def close(self) -> None:
        self._stop.set()
        for sock in self._listeners.values():
            sock.close()
        with self.lock:
            for conns in self._conns.values():
                for c in conns:
                    _close(c)
        for t in self._threads:
            t.join(timeout=2.0)
        self.physics.drive_arm(self.arm, None)  # the servos hold their last target

    def __enter__(self) -> ArmEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True, name=f"emu-{self.arm}-{fn.__name__}")
        t.start()
        self._threads.append(t)

    # ------------------------------------------------------------------ faults
    def inject_error(self, code: int = 1) -> None:
        """Put the controller in error mode (RobotMode 9), stopping any motion."""
        with self.lock:
            self._advance()
            self.state.mode, self.state.error_code = dp.MODE_ERROR, code
            self._halt()

    def drop_feedback(self, down_s: float = 0.0) -> None:
        """Close every feedback connection; refuse new ones for ``down_s`` seconds."""
        with self.lock:
            self._feedback_down_until = time.monotonic() + down_s
            conns, self._conns["feedback"] = self._conns["feedback"], []
        for c in conns:
            _close(c)

    def place(self, q_deg: np.ndarray) -> None:
        """Put the arm at rest at joints ``q_deg`` with its servo target there (a person moved it,
        e.g. a leader arm; or a test starts elsewhere); a motion in progress is dropped."""
        with self.lock:
            q = np.array(q_deg, dtype=float)
            self.physics.place_arm(self.arm, np.deg2rad(q))
            self.state.seg_from = self.state.seg_to = None
            self.state.q_target = q.copy()

    def joints_deg(self) -> np.ndarray:
        """The measured joints now (degrees)."""
        with self.lock:
            self._advance()
            return self._measured()[0]

    def drop_commands(self) -> None:
        """Close every dashboard and motion connection."""
        with self.lock:
            conns = self._conns["dashboard"] + self._conns["motion"]
            self._conns["dashboard"], self._conns["motion"] = [], []
        for c in conns:
            _close(c)

    # ------------------------------------------------------------------ servers
    def _accept_loop(self, kind: str, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(None)
            with self.lock:
                if kind == "feedback" and time.monotonic() < self._feedback_down_until:
                    _close(conn)
                    continue
                self._conns[kind].append(conn)
            if kind != "feedback":
                self._spawn(self._serve_commands, kind, conn)

    def _serve_commands(self, kind: str, conn: socket.socket) -> None:
        splitter = dp.CommandSplitter()
        try:
            while not self._stop.is_set():
                data = conn.recv(4096)
                if not data:
                    return
                for item in splitter.feed(data):
                    reply = self._handle(kind, item)
                    if reply is not None:
                        self._send_reply(conn, reply)
        except OSError:
            return
        finally:
            with self.lock:
                if conn in self._conns[kind]:
                    self._conns[kind].remove(conn)
            _close(conn)

    def _send_reply(self, conn: socket.socket, reply: str) -> None:
        f = self.faults
        if f.reply_delay_s > 0:
            time.sleep(f.reply_delay_s)
        with self.lock:
            malformed = f.malformed_replies > 0
            if malformed:
                f.malformed_replies -= 1
                self.malformed_times.append(time.monotonic())
        data = (b"#%&garbled" + reply[len(reply) // 2:].encode().replace(b";", b"") + b";") if malformed \
            else reply.encode()
        if f.split_replies > 0:
            for i in range(0, len(data), f.split_replies):
                conn.sendall(data[i:i + f.split_replies])
                time.sleep(0.001)
        else:
            conn.sendall(data)

    # ------------------------------------------------------------------ commands
    def _handle(self, kind: str, item: dp.Command | dp.ProtocolError) -> str | None:
        if isinstance(item, dp.ProtocolError):
            return None  # bytes that are no command get no reply (there is no name to echo)
        self.commands_seen.append(item.text)
        if len(self.commands_seen) > 100_000:  # a long demo run: keep the recent half
            del self.commands_seen[:50_000]
        name = item.name.lower()
        if name == "servoj":
            self.servoj_times.append(time.monotonic())
        elif name in STOP_COMMANDS:
            self.stop_times.append(time.monotonic())
        motion = dp.is_motion_command(name)
        if self.firmware == "V3" and motion != (kind == "motion"):
            return dp.format_reply(-10000, [], item.text)  # wrong port for this firmware
        handler = getattr(self, f"_cmd_{name}", None)
        if handler is None:
            return dp.format_reply(-10000, [], item.text)
        with self.lock:
            self._advance()  # the state up to now belongs to the previous command
            error_id, values = handler(item)
        if name == "servoj" and not self.servoj_replies:
            return None
        return dp.format_reply(error_id, values, item.text)

    def _nargs(self, c: dp.Command, *allowed: int) -> int:
        return 0 if len(c.args) in allowed else -20000

    def _int_arg(self, c: dp.Command, i: int, lo: int, hi: int) -> tuple[int, int]:
        """(error id, value) of the i-th (0-based) integer parameter within [lo, hi]."""
        try:
            v = int(c.args[i])
        except ValueError:
            return -30001 - i, 0
        return (0, v) if lo <= v <= hi else (-40001 - i, v)

    def _cmd_enablerobot(self, c: dp.Command):
        if self.state.mode == dp.MODE_ERROR:
            return -2, []
        self.state.mode = dp.MODE_ENABLED
        return 0, []

    def _cmd_disablerobot(self, c: dp.Command):
        if self.state.mode != dp.MODE_ERROR:
            self.state.mode = dp.MODE_DISABLED
        self._halt()
        return 0, []

    def _cmd_clearerror(self, c: dp.Command):
        if self.state.mode == dp.MODE_ERROR and not self.faults.sticky_error:
            self.state.mode, self.state.error_code = dp.MODE_DISABLED, 0
        return 0, []

    def _cmd_resetrobot(self, c: dp.Command):
        self._halt()
        return 0, []

    _cmd_stop = _cmd_resetrobot

    def _cmd_emergencystop(self, c: dp.Command):
        self.inject_error(code=-3)
        return 0, []

    def _ratio(self, c: dp.Command, attr: str):
        if (e := self._nargs(c, 1)) != 0:
            return e, []
        e, v = self._int_arg(c, 0, 1, 100)
        if e == 0:
            setattr(self.state, attr, v)
        return e, []

    def _cmd_speedfactor(self, c):
        return self._ratio(c, "speed_factor")

    def _cmd_accj(self, c):
        return self._ratio(c, "acc_j")

    def _cmd_speedj(self, c):
        return self._ratio(c, "speed_j")

    def _cmd_settool(self, c: dp.Command):
        if (e := self._nargs(c, 2)) != 0:
            return e, []
        e, index = self._int_arg(c, 0, 0, 50)
        if e:
            return e, []
        try:
            values = tuple(float(v) for v in dp.split_params(c.args[1].strip()[1:-1]))
        except ValueError:
            return -30002, []
        if not c.args[1].strip().startswith("{") or len(values) != 6:
            return -30002, []
        self.state.tools[index] = values
        return 0, []

    def _cmd_tool(self, c: dp.Command):
        if (e := self._nargs(c, 1)) != 0:
            return e, []
        e, index = self._int_arg(c, 0, 0, 50)
        if e == 0 and index not in self.state.tools:
            e = -40001
        if e == 0:
            self.state.tool_index = index
        return e, []

    def _cmd_robotmode(self, c):
        return 0, [self.state.mode]

    def _cmd_getangle(self, c):
        return 0, [float(v) for v in self._measured()[0]]

    def _cmd_getpose(self, c):
        return 0, [float(v) for v in tool_vector(self._tool_pose())]

    def _cmd_geterrorid(self, c):
        return 0, [self.state.error_code]

    def _joint_args(self, c: dp.Command) -> tuple[int, np.ndarray]:
        if len(c.args) != 6:
            return -20000, np.zeros(6)
        try:
            q = np.array([float(a) for a in c.args])
        except ValueError:
            return -30001, np.zeros(6)
        for i, (lo, hi) in enumerate(self.limits_deg):
            if not lo <= q[i] <= hi:
                return -40001 - i, q
        return 0, q

    def _cmd_servoj(self, c: dp.Command):
        e, q = self._joint_args(c)
        if e:
            return e, []
        try:
            t = float(c.kwargs.get("t", 0.1))
        except ValueError:
            return -30007, []
        if not 0.004 <= t <= 3600:
            return -40007, []
        return self._start_segment(q, t)

    def _cmd_jointmovj(self, c: dp.Command):
        e, q = self._joint_args(c)
        if e:
            return e, []
        speed = self.max_speed * self.state.speed_j / 100 * self.state.speed_factor / 100
        duration = max(float(np.max(np.abs(q - self.state.q_target))) / max(speed, 1e-6), 0.008)
        return self._start_segment(q, duration, check_jump=False)

    def _start_segment(self, q: np.ndarray, duration: float, check_jump: bool = True):
        s = self.state
        if s.mode == dp.MODE_ERROR:
            return -2, []
        if s.mode not in (dp.MODE_ENABLED, dp.MODE_RUNNING):
            return -1, []
        now = self.physics.clock()
        current = self._segment_target(now)
        if check_jump and np.max(np.abs(q - current)) > self.max_jump:
            self.inject_error(code=22)  # the real controller alarms on a servo jump
            return -2, []
        s.seg_from, s.seg_to, s.seg_start_s, s.seg_duration_s = current, q, now, duration
        s.mode = dp.MODE_RUNNING
        return 0, []

    # ------------------------------------------------------------------ joint model
    def _halt(self) -> None:
        """Stop where the arm is: the servo target becomes the measured joints (bench synced by the caller)."""
        s = self.state
        s.seg_from = s.seg_to = None
        s.q_target = self._measured()[0]

    def _segment_target(self, now: float) -> np.ndarray:
        s = self.state
        if s.seg_to is None:
            return s.q_target.copy()
        alpha = (now - s.seg_start_s) / s.seg_duration_s
        if alpha >= 1.0:
            return s.seg_to.copy()  # exactly: the speed cap then lands the servo target on it
        return s.seg_from + max(0.0, alpha) * (s.seg_to - s.seg_from)

    def _servo_target(self, t: float) -> np.ndarray:
        """The servo ctrl (rad) for the physics step ending at ``t``: the interpolated segment,
        approached at most at the joint speed cap (called by the physics under the bench lock)."""
        s = self.state
        if s.mode in (dp.MODE_ENABLED, dp.MODE_RUNNING):
            cap = self.max_speed * self.physics.dt
            s.q_target = s.q_target + np.clip(self._segment_target(t) - s.q_target, -cap, cap)
        return np.deg2rad(s.q_target)

    def _advance(self) -> float:
        """Step the bench up to now and leave RobotMode 7 once the motion has settled; returns the
        time of the state."""
        t = self.physics.sync()
        s = self.state
        if s.mode == dp.MODE_RUNNING and (s.seg_to is None or t >= s.seg_start_s + s.seg_duration_s):
            q, qd = self._measured()
            done = s.seg_to is None or np.max(np.abs(s.q_target - s.seg_to)) < 1e-9
            if done and np.max(np.abs(s.q_target - q)) < SETTLED_DEG and np.max(np.abs(qd)) < SETTLED_DEG_S:
                s.mode = dp.MODE_ENABLED
        return t

    def _measured(self) -> tuple[np.ndarray, np.ndarray]:
        """Joints (deg) and joint velocities (deg/s) of the model's current state."""
        q, qd = self.physics.joints(self.arm)
        return np.rad2deg(q), np.rad2deg(qd)

    def _tool_offset(self) -> float:
        """The selected tool's offset along the flange z axis (m); the start-up sets {0,0,197,0,0,0}
        (docs/platform.md §Protocol)."""
        return self.state.tools.get(self.state.tool_index, (0.0,) * 6)[2] / 1000.0

    def _tool_pose(self) -> np.ndarray:
        """Measured 4x4 tool pose in the arm's base frame: the model's flange, then the tool."""
        tool = np.eye(4)
        tool[2, 3] = self._tool_offset()
        return self.physics.flange_pose(self.arm) @ tool

    def packet(self) -> bytes:
        """The feedback packet for the current state (the bench is first stepped up to now)."""
        with self.lock:
            t_state = self._advance()
            s = self.state
            q, qd = self._measured()
            T = self._tool_pose()
            target = forward_kinematics(np.deg2rad(s.q_target), self.spec, tool=self._tool_offset())
            # TimeStamp: wall-clock ms of the state carried (the physics runs on the monotonic clock).
            stamp_ms = int((time.time() - (time.monotonic() - t_state)) * 1000)
            fields = dict(
                robot_mode=s.mode, timestamp_ms=stamp_ms, speed_scaling=s.speed_factor / 100,
                q_target=s.q_target, q_actual=q, qd_actual=qd,
                tool_vector_actual=tool_vector(T), tool_vector_target=tool_vector(target),
                motor_temperatures=np.full(6, 35.0),
                enable_status=int(s.mode in (dp.MODE_ENABLED, dp.MODE_RUNNING)),
                running_status=int(s.mode == dp.MODE_RUNNING), error_status=int(s.mode == dp.MODE_ERROR),
                robot_type=self.spec.robot_type, actual_quaternion=quaternion_wxyz(T[:3, :3]))
            if self.faults.bad_test_value > 0:
                self.faults.bad_test_value -= 1
                fields["test_value"] = 0xDEADBEEF
            return dp.encode_feedback(fields)

    def _tick_loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            next_t += self.period
            delay = next_t - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_t = time.monotonic()  # fell behind: do not burst
            with self.lock:
                if self.faults.feedback_paused or not self._conns["feedback"]:
                    self._advance()  # keeps the physics' catch-up bursts short and the mode current
                    continue
                data = self.packet()
                conns = list(self._conns["feedback"])
            for conn in conns:
                self._push(conn, data)

    def _push(self, conn: socket.socket, data: bytes) -> None:
        chunk = self.faults.split_feedback
        try:
            if chunk > 0:
                for i in range(0, len(data), chunk):
                    conn.sendall(data[i:i + chunk])
                    time.sleep(0.0002)
            else:
                conn.sendall(data)
            self.packets_sent += 1
        except OSError:
            with self.lock:
                if conn in self._conns["feedback"]:
                    self._conns["feedback"].remove(conn)
            _close(conn)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class XTrainerEmulator:
    """The X-Trainer: both arms' controllers (each an :class:`ArmEmulator`) and, with ``grippers``,
    both Feetech grippers on pseudo-terminals, all moving in one bench model (:attr:`physics`).
    Further keyword arguments go to both :class:`ArmEmulator`."""

    def __init__(self, hosts: dict[str, str] | None = None, *, model: str = "nova2", grippers: bool = False,
                 **kwargs):
        hosts = {**DEFAULT_HOSTS, **(hosts or {})}
        self.physics = BenchPhysics(emulator_bench(model))
        self.arms = {arm: ArmEmulator(arm, hosts[arm], model=model, physics=self.physics, **kwargs)
                     for arm in ("left", "right")}
        self.grippers = {arm: FeetechServoEmulator(GRIPPER_IDS[arm], arm=arm, physics=self.physics)
                         for arm in GRIPPER_IDS} if grippers else {}

    def start(self) -> XTrainerEmulator:
        for a in self.arms.values():
            a.start()
        for g in self.grippers.values():
            g.start()
        return self

    def close(self) -> None:
        for a in self.arms.values():
            a.close()
        for g in self.grippers.values():
            g.close()

    def __enter__(self) -> XTrainerEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


def link_grippers(paths: dict[str, str], directory: str | Path) -> dict[Path, str]:
    """Symlink ``<directory>/gripper_<arm>`` to each gripper's pseudo-terminal (replacing old links);
    returns ``{link: target}``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    links = {}
    for arm, target in paths.items():
        link, tmp = directory / f"gripper_{arm}", directory / f".gripper_{arm}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(target)
        os.replace(tmp, link)
        links[link] = target
    return links


def unlink_grippers(links: dict[Path, str]) -> None:
    """Remove the links made by :func:`link_grippers`, unless another emulator has replaced them."""
    for link, target in links.items():
        try:
            if os.readlink(link) == target:
                link.unlink()
        except OSError:
            pass


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m hardware.emulator", description=__doc__.split("\n\n")[0])
    p.add_argument("--left", default=DEFAULT_HOSTS["left"], help="address of the left arm's controller")
    p.add_argument("--right", default=DEFAULT_HOSTS["right"], help="address of the right arm's controller")
    p.add_argument("--firmware", choices=dp.FIRMWARES, default="V3")
    p.add_argument("--dashboard-port", type=int, default=dp.DASHBOARD_PORT)
    p.add_argument("--motion-port", type=int, default=dp.MOTION_PORT)
    p.add_argument("--feedback-port", type=int, default=dp.FEEDBACK_PORT)
    p.add_argument("--model", choices=sorted(ARM_SPECS), default="nova2")
    p.add_argument("--servoj-replies", action="store_true", help="reply to ServoJ (older firmware)")
    p.add_argument("--reply-delay", type=float, default=0.0, help="hold every reply back this long (s)")
    p.add_argument("--split-replies", type=int, default=0, help="send replies in chunks of N bytes")
    p.add_argument("--split-feedback", type=int, default=0, help="send feedback packets in chunks of N bytes")
    p.add_argument("--error-after", type=float, default=None, help="enter error mode after this many seconds")
    p.add_argument("--no-grippers", action="store_true", help="do not emulate the Feetech grippers")
    p.add_argument("--gripper-links", default=str(GRIPPER_LINK_DIR), metavar="DIR",
                   help="link DIR/gripper_left and DIR/gripper_right to the grippers' pseudo-terminals "
                        "(what hardware/xtrainer.example.json opens); '' for no links")
    args = p.parse_args(argv)
    faults = Faults(reply_delay_s=args.reply_delay, split_replies=args.split_replies,
                    split_feedback=args.split_feedback)
    emu = XTrainerEmulator({"left": args.left, "right": args.right}, firmware=args.firmware,
                           dashboard_port=args.dashboard_port, motion_port=args.motion_port,
                           feedback_port=args.feedback_port, model=args.model,
                           servoj_replies=args.servoj_replies, faults=faults, grippers=not args.no_grippers)
    emu.start()
    links: dict[Path, str] = {}
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` cleans up like Ctrl-C (links, sockets, ptys)
    # Everything after start() runs inside the try: a Ctrl-C that arrives while the banner is still
    # being printed must clean up and exit 0 like one that arrives later.
    try:
        if emu.grippers and args.gripper_links:
            links = link_grippers({arm: g.path for arm, g in emu.grippers.items()}, args.gripper_links)
        for arm, a in emu.arms.items():
            print(f"{arm} arm ({args.firmware}, {args.model}) on {a.host}: {a.ports}", flush=True)
        for arm, g in emu.grippers.items():
            print(f"{arm} gripper (Feetech ID {g.servo_id}) on {g.path}", flush=True)
        if links:
            print("gripper links: " + ", ".join(str(link) for link in links), flush=True)
        print("ready", flush=True)
        t0 = time.monotonic()
        while True:
            time.sleep(0.1)
            if args.error_after is not None and time.monotonic() - t0 >= args.error_after:
                for a in emu.arms.values():
                    a.inject_error()
                print("injected error mode (RobotMode 9) on both arms", flush=True)
                args.error_after = None
    except KeyboardInterrupt:
        pass
    finally:
        unlink_grippers(links)
        emu.close()


if __name__ == "__main__":
    main()
