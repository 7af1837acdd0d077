"""Keep a held target streaming while the policy thinks (docs/platform.md §Rates; issue 8 watchdog).

The safety layer's command watchdog stops an arm whose ServoJ stream goes silent for
``command_timeout_s`` (0.5 s) while it is engaged. The rollout loop sends nothing while a policy
computes its next chunk, and a large policy needs longer than that. :class:`CommandHolder` is a
thread that, once the real commands have paused for 1.5 control periods, re-sends the **last safe
target** (already checked by the safety layer; a zero-length step) at the control rate. The arm
therefore stands still, feedback age and error mode are still checked on every re-send, and a
policy that stays silent for longer than ``max_hold_s`` is still caught: the holder gives up and
the watchdog trips ``command_timeout_s`` later.

Every sender (the control loop and the holder) takes :attr:`CommandHolder.lock` around one send to
all arms, so a re-send can never interleave with, or overtake, a new target.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

HOLD_AFTER_PERIODS = 1.5  # a real command stream sends every period; hold only once it has paused
DEFAULT_MAX_HOLD_S = 10.0


class CommandHolder:
    """Calls ``resend()`` every ``period_s`` while no real command has been sent for
    ``HOLD_AFTER_PERIODS`` periods, for at most ``max_hold_s`` after the last real one.

    ``resend`` runs with :attr:`lock` held and returns False when there was nothing to hold (no
    arm engaged); an exception from it disarms the holder and is passed
    to ``on_error`` (the backend stops both arms there). ``max_hold_s <= 0`` disables holding.
    """

    def __init__(self, resend: Callable[[], bool | None], period_s: float, *, max_hold_s: float = DEFAULT_MAX_HOLD_S,
                 on_error: Callable[[BaseException], None] | None = None):
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self._resend, self.period_s, self.max_hold_s = resend, period_s, max_hold_s
        self._on_error = on_error
        self.lock = threading.RLock()
        self._last_real = self._last_any = time.monotonic()
        self.resends = 0  # targets re-sent so far
        self.expired = 0  # holds given up after max_hold_s (the watchdog then trips)
        self.error: BaseException | None = None
        self._expired_now = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="command-holder")
        self._thread.start()

    def commanded(self) -> None:
        """A real command was just sent (call with :attr:`lock` held)."""
        self._last_real = self._last_any = time.monotonic()
        self._expired_now = False

    @property
    def holding(self) -> bool:
        """Whether the holder is re-sending now (the real stream has paused)."""
        return time.monotonic() - self._last_real >= HOLD_AFTER_PERIODS * self.period_s and not self._expired_now

    def _run(self) -> None:
        while not self._stop.wait(self.period_s / 4):
            with self.lock:
                now = time.monotonic()
                if now - self._last_real < HOLD_AFTER_PERIODS * self.period_s or now - self._last_any < self.period_s:
                    continue
                if now - self._last_real > self.max_hold_s:
                    if not self._expired_now:
                        self._expired_now = True
                        self.expired += 1
                    continue
                try:
                    sent = self._resend()
                except BaseException as e:  # noqa: BLE001 -- reported to the owner, who stops the arms
                    self.error = e
                    self._last_real = self._last_any = float("inf")  # disarmed until the next real command
                    if self._on_error is not None:
                        self._on_error(e)
                    continue
                self._last_any = now
                if sent is not False:
                    self.resends += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
