"""A Feetech STS/SMS gripper servo emulated on a pseudo-terminal (docs/platform.md §Grippers).

:class:`FeetechServoEmulator` opens a pty pair and answers the STS/SMS protocol on its master side
from a 256-byte memory table; clients open :attr:`FeetechServoEmulator.path` like the real
USB–RS485 adapter. Instruction packets with a bad checksum are ignored, as a real servo does.

**The fingers are those of the simulator's MuJoCo model** (:mod:`hardware.bench_physics`): the
goal position (ticks) becomes the finger servos' target through the emulated unit's calibration
(its open and closed ticks are the fingers' two ends of travel), torque enable and the torque
limit set the servos' force limit, and the present position and load are read back from the
fingers' opening and servo force. The model's finger force limit (``BenchConfig.finger_force_n``)
is the gripper at its 30 % start-up torque limit, so the load reads 0.3 while the fingers press on
an object. An object between the fingers is part of the bench scene
(:func:`hardware.bench_physics.held_object`); :meth:`FeetechServoEmulator.move_by_hand` moves the
unpowered fingers as a person calibrating the gripper does.

Faults: :attr:`silent` (the next N requests get no status), :attr:`corrupt` (the next N status
packets carry a wrong checksum) and :attr:`error_bits` (status error byte, e.g. overload).
"""

from __future__ import annotations

import collections
import os
import select
import threading
import time
import tty

from envs.xtrainer import FINGER_TRAVEL_M
from hardware import feetech as ft
from hardware.bench_physics import BenchPhysics


class FeetechServoEmulator:
    """One gripper servo on a pty, driving ``arm``'s fingers in ``physics`` (a bench model of its
    own if none is given). ``arm`` defaults from the X-Trainer's IDs (21 left, 22 right);
    ``calibration`` (the unit's open / closed ticks) from :data:`hardware.feetech.DEFAULT_CALIBRATION`;
    ``position`` (ticks), if given, is where someone left the fingers at power-on."""

    def __init__(self, servo_id: int = 21, position: int | None = None, *, arm: str | None = None,
                 physics: BenchPhysics | None = None, calibration: ft.GripperCalibration | None = None):
        arms_by_id = {sid: a for a, sid in ft.GRIPPER_IDS.items()}
        if arm is None and servo_id not in arms_by_id:
            raise ValueError(f"servo {servo_id} is no X-Trainer gripper ID {ft.GRIPPER_IDS}: say which arm it is on")
        self.servo_id, self.arm = servo_id, arm or arms_by_id[servo_id]
        if self.arm not in ft.GRIPPER_IDS:
            raise ValueError(f"unknown arm {self.arm!r} for servo {servo_id}; valid: {', '.join(ft.GRIPPER_IDS)}")
        self.cal = calibration or ft.DEFAULT_CALIBRATION[self.arm]
        self.physics = physics or BenchPhysics()
        # Force at 100 % torque: the model's finger force limit is the gripper at 30 % (docs/platform.md §Grippers).
        self.full_force_n = self.physics.cfg.finger_force_n * 1000 / ft.DEFAULT_TORQUE_LIMIT
        self.memory = bytearray(256)
        self.memory[5] = servo_id
        self._set(ft.TORQUE_LIMIT, ft.encode_u16(1000))  # power-on default: 100 %
        if position is not None:
            self.physics.place_fingers(self.arm, self._opening_m(position))
        self._set(ft.GOAL_POSITION, ft.encode_position(self.position))
        self._apply()  # torque off at power-on: the fingers are unpowered
        self.silent = 0
        self.silent_times: collections.deque[float] = collections.deque(maxlen=10_000)  # requests left unanswered
        self.corrupt = 0
        self.error_bits = 0
        self.requests: list[ft.Packet] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"feetech-{servo_id}")

    def start(self) -> FeetechServoEmulator:
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        os.close(self._master)
        os.close(self._slave)

    def __enter__(self) -> FeetechServoEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def _set(self, register: tuple[int, int], data: bytes) -> None:
        addr, size = register
        self.memory[addr:addr + size] = data[:size]

    def _get(self, register: tuple[int, int]) -> bytes:
        addr, size = register
        return bytes(self.memory[addr:addr + size])

    @property
    def torque_on(self) -> bool:
        return self.memory[ft.TORQUE_ENABLE[0]] == 1

    @property
    def torque_limit(self) -> int:
        return int.from_bytes(self._get(ft.TORQUE_LIMIT), "little")

    @property
    def position(self) -> int:
        """Present position (ticks) of the fingers now."""
        self.physics.sync()
        return self._ticks(self.physics.fingers(self.arm)[0])

    def move_by_hand(self, ticks: int) -> None:
        """Someone moves the fingers to ``ticks`` (the servo target follows, so they stay there)."""
        with self._lock:
            self.physics.place_fingers(self.arm, self._opening_m(ticks))

    def _opening_m(self, ticks: int) -> float:
        return self.cal.opening(ticks) * FINGER_TRAVEL_M

    def _ticks(self, opening_m: float) -> int:
        cal = self.cal
        return round(cal.closed_ticks + opening_m / FINGER_TRAVEL_M * (cal.open_ticks - cal.closed_ticks))

    def _update(self) -> None:
        """Present position and load from the model, stepped up to now."""
        self.physics.sync()
        opening_m, force_n = self.physics.fingers(self.arm)
        self._set(ft.PRESENT_POSITION, ft.encode_position(self._ticks(opening_m)))
        magnitude = min(1000, round(abs(force_n) / self.full_force_n * 1000))
        # Bit 10 marks a load toward lower ticks; a positive finger force opens the gripper.
        toward_lower = (force_n > 0) == (self.cal.open_ticks < self.cal.closed_ticks)
        self._set(ft.PRESENT_LOAD, ft.encode_u16(magnitude | (0x400 if toward_lower and magnitude else 0)))

    def _apply(self) -> None:
        """Goal position, torque enable and torque limit to the finger servos."""
        force = self.full_force_n * self.torque_limit / 1000 if self.torque_on else 0.0
        goal = ft.decode_position(self._get(ft.GOAL_POSITION))
        self.physics.set_fingers(self.arm, self._opening_m(goal), force)

    # ------------------------------------------------------------------ protocol
    def _run(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                buf += os.read(self._master, 4096)
            except OSError:
                continue
            while True:
                try:
                    packet, used = ft.parse_packet(buf)
                except ft.FeetechChecksumError as e:
                    del buf[:e.args[1]]  # a real servo ignores a corrupted instruction
                    continue
                del buf[:used]
                if packet is None:
                    break
                reply = self.handle(packet)
                if reply:
                    os.write(self._master, reply)

    def handle(self, packet: ft.Packet) -> bytes | None:
        """The status packet answering one instruction (None: no answer)."""
        if packet.servo_id not in (self.servo_id, ft.BROADCAST_ID):
            return None
        with self._lock:
            self.requests.append(packet)
            self._update()
            params = b""
            if packet.code == ft.READ and len(packet.params) == 2:
                addr, size = packet.params
                params = bytes(self.memory[addr:addr + size])
            elif packet.code == ft.WRITE and packet.params:
                addr = packet.params[0]
                self.memory[addr:addr + len(packet.params) - 1] = packet.params[1:]
                self._apply()
            if packet.servo_id == ft.BROADCAST_ID:
                return None
            if self.silent > 0:
                self.silent -= 1
                self.silent_times.append(time.monotonic())
                return None
            reply = ft.status_packet(self.servo_id, self.error_bits, params)
            if self.corrupt > 0:
                self.corrupt -= 1
                reply = reply[:-1] + bytes([(reply[-1] + 1) & 0xFF])
            return reply
