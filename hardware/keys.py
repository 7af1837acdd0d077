"""Key sources for the human operator at the real X-Trainer (issue 8 item 6).

A key source is polled, never waited on, so the control loop keeps its rate: :meth:`KeySource.poll`
returns the next pressed key or None. :class:`StdinKeys` reads the terminal (single keys without
Enter when stdin is a terminal) on a thread; keys given as ``immediate`` run their action on that
thread at once (the emergency stop must not wait for the next poll). :class:`ScriptedKeys` replays
a script for tests, where None means "nothing pressed at this poll".
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import IO, Protocol


class KeySource(Protocol):
    def poll(self) -> str | None:
        """The next pressed key, or None when none is waiting (never blocks)."""
        ...


class ScriptedKeys:
    """Replays ``script`` one entry per poll (None: nothing pressed then); None once exhausted."""

    def __init__(self, script: Iterable[str | None]):
        self.script = list(script)
        self.polls = 0

    def poll(self) -> str | None:
        self.polls += 1
        return self.script.pop(0) if self.script else None

    @property
    def exhausted(self) -> bool:
        return not self.script


class QueueKeys:
    """Keys pressed from any thread with :meth:`press` (buttons, pedals, a GUI)."""

    def __init__(self):
        self._queue: queue.SimpleQueue[str] = queue.SimpleQueue()

    def press(self, *keys: str) -> None:
        for k in keys:
            self._queue.put(k)

    def poll(self) -> str | None:
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            return None


class StdinKeys(QueueKeys):
    """Keys typed on a text stream (default stdin), read on a daemon thread.

    When the stream is a terminal it is switched to cbreak mode (keys arrive without Enter) and
    restored by :meth:`close`. ``immediate`` maps keys to actions run on the reader thread as soon
    as the key arrives (they are not queued), e.g. ``{" ": emergency_stop}``.
    """

    def __init__(self, stream: IO[str] | None = None, immediate: Mapping[str, Callable[[], None]] | None = None):
        super().__init__()
        self.stream = stream or sys.stdin
        self.immediate = dict(immediate or {})
        self._saved_tty = None
        try:
            fd = self.stream.fileno()
            if os.isatty(fd):
                import termios
                import tty

                self._saved_tty = (fd, termios.tcgetattr(fd))
                tty.setcbreak(fd)
        except (OSError, ValueError, AttributeError):
            pass
        self.thread = threading.Thread(target=self._run, daemon=True, name="operator-keys")
        self.thread.start()

    def _run(self) -> None:
        while True:
            ch = self.stream.read(1)
            if not ch:
                return
            action = self.immediate.get(ch)
            if action is not None:
                action()
            else:
                self.press(ch)

    def close(self) -> None:
        if self._saved_tty is not None:
            import termios

            fd, attrs = self._saved_tty
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
            self._saved_tty = None
