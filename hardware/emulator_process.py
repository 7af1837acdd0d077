"""An emulator in a process of its own, driven from this one.

On the real bench the Dobot controllers and the Feetech servos are other machines: a stall of the
process that runs the policy (a garbage collection, a long torch call, a busy core) cannot age
their feedback or hold back their replies. Emulator threads inside that process would share its
interpreter lock and its stalls, so the real-time limits (100 ms feedback, 50 ms servo replies)
would trip on the rig rather than on the system under test. :class:`EmulatorProcess` runs any
emulator class (:class:`~hardware.emulator.XTrainerEmulator`, :class:`~hardware.emulator.ArmEmulator`,
:class:`~hardware.feetech_emulator.FeetechServoEmulator`) in a process of its own, as
``python -m hardware.emulator`` does for users, and drives it through :class:`Remote` handles:
attribute reads and writes and method calls travel over a pipe, so a caller injects faults and
reads what the controller saw as it would in process.

What comes back by value: numbers, strings, bytes, arrays and containers of them (a copy: mutate
the emulator through its attributes and methods, not through a returned list). Anything else
(a controller, its :class:`~hardware.emulator.Faults`, the bench model) comes back as a handle.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

_PLAIN = (type(None), bool, int, float, complex, str, bytes, np.ndarray, np.generic)
_SEQUENCES = (list, tuple, set, frozenset, collections.deque)
START_TIMEOUT_S = 60.0


class EmulatorProcessError(RuntimeError):
    """The emulator process failed to start, died, or sent back an error that cannot travel."""


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    if isinstance(value, _SEQUENCES):
        return all(_plain(v) for v in value)
    if isinstance(value, dict):
        return all(_plain(k) and _plain(v) for k, v in value.items())
    return False


class _Server:
    """The emulator's side: resolves paths of attribute/item steps from the emulator (or from a
    stored call result) and answers each request."""

    def __init__(self, root: Any) -> None:
        self.root, self.results = root, []

    def resolve(self, path: tuple) -> Any:
        obj = self.root
        for kind, key in path:
            obj = self.results[key] if kind == "result" else obj[key] if kind == "item" else getattr(obj, key)
        return obj

    def encode(self, value: Any, path: tuple | None) -> tuple:
        if _plain(value):
            return ("value", value)
        if callable(value) and path is not None:
            return ("callable", path)
        if path is None:  # a call's result: keep it here, hand out a handle
            self.results.append(value)
            path = (("result", len(self.results) - 1),)
        if isinstance(value, dict) and all(_plain(k) for k in value):
            return ("dict", {k: self.encode(v, path + (("item", k),)) for k, v in value.items()})
        return ("ref", path)

    def answer(self, request: tuple) -> tuple:
        op, path, *rest = request
        try:
            obj = self.resolve(path)
            if op == "get":
                return self.encode(getattr(obj, rest[0]), path + (("attr", rest[0]),))
            if op == "item":
                return self.encode(obj[rest[0]], path + (("item", rest[0]),))
            if op == "set":
                setattr(obj, rest[0], rest[1])
                return ("value", None)
            return self.encode(obj(*rest[0], **rest[1]), None)  # "call"
        except Exception as e:  # noqa: BLE001 (the caller gets the emulator's own error)
            return ("error", e)


def _serve(conn: Connection) -> None:
    try:
        sys.path[:] = conn.recv()  # the caller's import path first, so a factory of its own unpickles
        factory, args, kwargs = conn.recv()
        emulator = factory(*args, **kwargs).start()
    except Exception as e:  # noqa: BLE001
        conn.send(("error", e))
        return
    server = _Server(emulator)
    conn.send(("ready", None))
    try:
        while (request := conn.recv()) != "close":
            reply = server.answer(request)
            try:
                conn.send(reply)
            except Exception as e:  # noqa: BLE001 (an error or value that does not pickle)
                conn.send(("error", EmulatorProcessError(f"{request[0]} {request[1:]}: {e!r}")))
    except (EOFError, OSError, KeyboardInterrupt):  # the driving process is gone or interrupted
        return
    finally:
        emulator.close()
    conn.send(("closed", None))


class Remote:
    """A handle on an object inside the emulator process: ``remote.faults.feedback_paused = True``,
    ``remote.arms["left"].inject_error()`` and ``remote.commands_seen`` work as in process."""

    __slots__ = ("_process", "_path")

    def __init__(self, process: EmulatorProcess, path: tuple) -> None:
        object.__setattr__(self, "_process", process)
        object.__setattr__(self, "_path", path)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self._process.request(("get", self._path, name))

    def __setattr__(self, name: str, value: Any) -> None:
        self._process.request(("set", self._path, name, value))

    def __getitem__(self, key: Any) -> Any:
        return self._process.request(("item", self._path, key))

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._process.request(("call", self._path, args, kwargs))

    def __repr__(self) -> str:
        return f"<Remote {'.'.join(str(k) for _, k in self._path) or 'emulator'} in pid {self._process.pid}>"


class EmulatorProcess:
    """``factory(*args, **kwargs).start()`` in its own process (``factory``: an emulator class or any
    module-level function that builds one); :meth:`start` returns this object,
    whose attributes are the emulator's (through :class:`Remote`); :meth:`close` closes the
    emulator and ends the process."""

    def __init__(self, factory: Callable, *args: Any, **kwargs: Any) -> None:
        self._factory, self._args, self._kwargs = factory, args, kwargs
        self._lock = threading.Lock()
        self._conn = self._proc = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmulatorProcess:
        ours, theirs = socket.socketpair()
        with ours, theirs:
            # A fresh interpreter (`python -m hardware.emulator_process FD`) rather than a fork of this
            # process: nothing of the caller's threads, locks or heap comes along.
            self._proc = subprocess.Popen([sys.executable, "-m", "hardware.emulator_process", str(theirs.fileno())],
                                          pass_fds=[theirs.fileno()])
            self._conn = Connection(os.dup(ours.fileno()))
        self._conn.send(sys.path)
        self._conn.send((self._factory, self._args, self._kwargs))
        if not self._conn.poll(START_TIMEOUT_S):
            self._proc.kill()
            raise EmulatorProcessError(f"{self._factory.__name__} did not start within {START_TIMEOUT_S:.0f} s")
        self._decode(self._receive())
        return self

    def request(self, request: tuple) -> Any:
        if self._conn is None:
            raise EmulatorProcessError(f"{self._factory.__name__}: the emulator process is not running")
        with self._lock:
            try:
                self._conn.send(request)
            except OSError as e:  # the process is gone (a broken pipe); same error as a lost reply
                raise self._exited() from e
            return self._decode(self._receive())

    def _receive(self) -> tuple:
        try:
            return self._conn.recv()
        except (EOFError, OSError) as e:
            raise self._exited() from e

    def _exited(self) -> EmulatorProcessError:
        return EmulatorProcessError(f"{self._factory.__name__}: the emulator process (pid {self.pid}) "
                                    f"exited with code {self._proc.poll()}")

    def _decode(self, reply: tuple) -> Any:
        kind, payload = reply
        if kind == "error":
            raise payload
        if kind in ("ref", "callable"):
            return Remote(self, payload)
        if kind == "dict":
            return {k: self._decode(v) for k, v in payload.items()}
        return payload

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self.request(("get", (), name))

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            object.__setattr__(self, name, value)
        else:
            self.request(("set", (), name, value))

    def close(self, timeout_s: float = 10.0) -> None:
        """Close the emulator (its sockets and ptys) and end the process; idempotent."""
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        try:
            with self._lock:
                conn.send("close")
                if conn.poll(timeout_s):
                    conn.recv()
        except (EOFError, OSError):
            pass
        try:
            self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        conn.close()

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    _serve(Connection(int(sys.argv[1])))
