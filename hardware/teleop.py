"""Teleoperators: where a human's correction comes from on the real X-Trainer (docs/platform.md
§Recordings, issue 8 item 6).

A teleoperator reports the joints the follower arms should take, in the X-Trainer's 14-D format
``[L j1..j6, L grip, R j1..j6, R grip]`` (rad, gripper 1 = open, docs/platform.md §Recordings). The human operator
(:mod:`hardware.human_operator`) turns them into the backend's actions; in end-effector mode that is
the tool pose of those joints through the same DH chain the simulator uses.

- :class:`LeaderArms`: the X-Trainer's leader arms, **read-only**: only the feedback streams of
  their controllers are opened (port 30004, the 1440-byte packets of
  docs/platform.md §Feedback packet), never a command port, so nothing can be sent to them;
  optional gripper readers supply the openings.
- :class:`ScriptedTeleoperator`: fixed joint rows (absolute, or offsets from the follower's joints
  when the correction starts) for tests and demos.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from envs.geometry import ARMS, JOINT_DIM
from hardware.dobot_client import DobotConfig, FeedbackReader, StaleFeedbackError
from hardware.dobot_protocol import DobotConnectionError


@runtime_checkable
class JointTeleoperator(Protocol):
    """The source of a correction's joint targets."""

    def start(self, follower_joints: np.ndarray) -> None:
        """A correction is about to start with the follower at ``follower_joints`` (14-D); the
        operator then reads the teleoperator to check its alignment, and once per step after that."""
        ...

    def read_joints(self) -> np.ndarray:
        """The current 14-D joint target ``[L j1..j6, L grip, R j1..j6, R grip]``."""
        ...


class ScriptedTeleoperator:
    """Replays ``rows`` (14-D), one per read (from the first after :meth:`start`), then holds the
    last; with ``relative=True`` the rows are offsets added to the follower's joints at
    :meth:`start` (gripper entries are absolute)."""

    def __init__(self, rows: Sequence[np.ndarray] | np.ndarray, *, relative: bool = False):
        self.rows = np.asarray(rows, dtype=np.float64)
        if self.rows.ndim != 2 or self.rows.shape[1] != JOINT_DIM or not len(self.rows):
            raise ValueError(f"rows must have shape (n >= 1, {JOINT_DIM}), got {self.rows.shape}")
        self.relative = relative
        self._base: np.ndarray | None = None
        self.reads = 0

    def start(self, follower_joints: np.ndarray) -> None:
        self._base, self.reads = np.asarray(follower_joints, dtype=np.float64).copy(), 0

    def read_joints(self) -> np.ndarray:
        row = self.rows[min(self.reads, len(self.rows) - 1)].copy()
        self.reads += 1
        if self.relative:
            if self._base is None:
                raise RuntimeError("a relative ScriptedTeleoperator needs start() before read_joints()")
            grips = row[[6, 13]]
            row = self._base + row
            row[[6, 13]] = grips
        return row


class LeaderArms:
    """The X-Trainer's leader arms through their controllers' feedback streams only (read-only).

    ``feeds`` gives each arm's controller (``host`` and ``feedback_port`` of a
    :class:`~hardware.dobot_client.DobotConfig`); ``grippers`` maps an arm to a callable returning
    its opening in [0, 1] (e.g. a :class:`hardware.feetech.Gripper`'s ``opening``); arms without
    one report ``default_grip``.
    """

    def __init__(self, feeds: Mapping[str, DobotConfig], grippers: Mapping[str, Callable[[], float]] | None = None,
                 *, max_age_s: float = 0.1, default_grip: float = 1.0, connect_timeout_s: float = 2.0):
        if set(feeds) != set(ARMS):
            raise ValueError(f"need a feed for each leader arm {ARMS}, got {sorted(feeds)}")
        self.feeds, self.grippers = dict(feeds), dict(grippers or {})
        self.max_age_s, self.default_grip, self.connect_timeout_s = max_age_s, default_grip, connect_timeout_s
        self.readers: dict[str, FeedbackReader] = {}

    @property
    def is_connected(self) -> bool:
        return bool(self.readers)

    def connect(self) -> LeaderArms:
        """Open the feedback streams and wait for a first packet from each leader arm."""
        try:
            for arm in ARMS:
                c = self.feeds[arm]
                reader = self.readers[arm] = FeedbackReader(c.host, c.feedback_port, self.connect_timeout_s)
                if reader.wait(timeout_s=self.connect_timeout_s) is None:
                    raise DobotConnectionError(f"{arm} leader arm feedback {c.host}:{c.feedback_port}",
                                               detail=f"no valid packet within {self.connect_timeout_s} s "
                                                      f"({reader.last_error})")
        except Exception:
            self.close()
            raise
        return self

    def start(self, follower_joints: np.ndarray) -> None:
        """Nothing to do: the human aligns the leader arms (the operator checks the alignment)."""

    def read_joints(self) -> np.ndarray:
        if not self.readers:
            raise DobotConnectionError("leader arms", detail="not connected: call connect() first")
        row = np.empty(JOINT_DIM)
        for i, arm in enumerate(ARMS):
            reader = self.readers[arm]
            fb, age = reader.latest, reader.age_s()
            if fb is None or age > self.max_age_s:
                raise StaleFeedbackError(f"{arm} leader arm", detail=f"newest packet is {age * 1000:.0f} ms old "
                                                                     f"(limit {self.max_age_s * 1000:.0f} ms)")
            grip = self.grippers.get(arm)
            row[7 * i:7 * i + 6] = fb.q_actual_rad
            row[7 * i + 6] = float(np.clip(grip(), 0.0, 1.0)) if grip is not None else self.default_grip
        return row

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()
        self.readers.clear()

    def __enter__(self) -> LeaderArms:
        return self.connect()

    def __exit__(self, *exc) -> None:
        self.close()
