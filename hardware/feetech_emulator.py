"""A Feetech STS/SMS gripper servo emulated on a pseudo-terminal (SPEC §8).

:class:`FeetechServoEmulator` opens a pty pair and answers the STS/SMS protocol on its master side
from a 256-byte memory table; clients open :attr:`FeetechServoEmulator.path` like the real
USB–RS485 adapter. The fingers move toward the goal position at a fixed speed while torque is on;
an optional obstacle (an object between the fingers) stops them, and the present load then reads
the torque limit. Instruction packets with a bad checksum are ignored, as a real servo does.

Faults: :attr:`silent` (the next N requests get no status), :attr:`corrupt` (the next N status
packets carry a wrong checksum) and :attr:`error_bits` (status error byte, e.g. overload).
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

from hardware import feetech as ft


class FeetechServoEmulator:
    def __init__(self, servo_id: int = 21, position: int = 2048, speed_ticks_s: float = 4000.0,
                 obstacle_ticks: int | None = None):
        self.servo_id, self.speed = servo_id, speed_ticks_s
        self.obstacle_ticks = obstacle_ticks
        self.memory = bytearray(256)
        self.memory[5] = servo_id
        self._set(ft.TORQUE_LIMIT, ft.encode_u16(1000))  # power-on default: 100 %
        self._set(ft.PRESENT_POSITION, ft.encode_position(position))
        self._set(ft.GOAL_POSITION, ft.encode_position(position))
        self._pos = float(position)
        self._last = time.monotonic()
        self.silent = 0
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
    def position(self) -> float:
        with self._lock:
            self._update()
            return self._pos

    def _update(self) -> None:
        now = time.monotonic()
        dt, self._last = now - self._last, now
        goal = ft.decode_position(self._get(ft.GOAL_POSITION))
        load = 0
        if self.torque_on:
            step = max(-self.speed * dt, min(self.speed * dt, goal - self._pos))
            new = self._pos + step
            ob = self.obstacle_ticks
            if ob is not None and min(self._pos, new) <= ob <= max(self._pos, new) and step != 0:
                new = float(ob)
            if ob is not None and abs(new - ob) < 0.5 and abs(goal - ob) >= 1:  # pressing on the object
                load = self.torque_limit | (0x400 if goal < ob else 0)
            self._pos = new
        self._set(ft.PRESENT_POSITION, ft.encode_position(round(self._pos)))
        self._set(ft.PRESENT_LOAD, ft.encode_u16(load))

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
            if packet.servo_id == ft.BROADCAST_ID:
                return None
            if self.silent > 0:
                self.silent -= 1
                return None
            reply = ft.status_packet(self.servo_id, self.error_bits, params)
            if self.corrupt > 0:
                self.corrupt -= 1
                reply = reply[:-1] + bytes([(reply[-1] + 1) & 0xFF])
            return reply
