"""The project's episode format: a LeRobotDataset v3.0 with a few per-frame columns.

One format for every kind of episode the project records (SFT demonstrations now; preference
pairs from intervention-and-rollback later add ``pair_id``, ``round`` ...). Standard LeRobot
keys: ``observation.images.<camera>``, ``observation.state`` (the 20-dim measured
end-effector pose), ``action`` (20-dim absolute targets), ``task`` (instruction text). Ours:
``observation.joints`` (X-Trainer 14-D joints), ``observation.environment_state`` (privileged
object poses), ``episode_seed``, ``role`` (``sft``/``w``/``l``), ``intervention``.

Writing is crash-safe per episode: frames are buffered in memory and each finished episode is
written and finalized on its own (``create`` or ``resume``), so an interruption at any point
leaves a valid dataset of the episodes finished so far. ``meta/flowpro.json`` names the task
and layout; writing a different task into an existing dataset is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from collections.abc import Callable
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from envs.cli import EXIT_FAULT, EXIT_INTERRUPTED, run_command
from envs.xtrainer import CAMERAS

FORMAT_VERSION = 1
MARKER = "meta/flowpro.json"
STATE_NAMES = [f"{arm}_{n}" for arm in ("left", "right")
               for n in ("x", "y", "z", "r0", "r1", "r2", "r3", "r4", "r5", "gripper")]
JOINT_NAMES = [f"{arm}_{n}" for arm in ("left", "right") for n in ("j1", "j2", "j3", "j4", "j5", "j6", "gripper")]
# Per-frame columns beyond observation/action: name -> (LeRobot dtype, default value).
BASE_COLUMNS: dict[str, tuple[str, Any]] = {
    "episode_seed": ("int64", 0),
    "role": ("string", "sft"),
    "intervention": ("bool", False),
}


def dataset_features(image_size: tuple[int, int] | None, env_state_dim: int,
                     columns: dict[str, tuple[str, Any]] = BASE_COLUMNS, use_videos: bool = False) -> dict:
    """LeRobot feature spec; ``image_size=None`` records no images (state-only data)."""
    feats: dict[str, dict] = {
        "observation.state": {"dtype": "float32", "shape": (20,), "names": STATE_NAMES},
        "observation.joints": {"dtype": "float32", "shape": (14,), "names": JOINT_NAMES},
        "observation.environment_state": {"dtype": "float32", "shape": (env_state_dim,), "names": None},
        "action": {"dtype": "float32", "shape": (20,), "names": STATE_NAMES},
    }
    if image_size is not None:
        h, w = image_size
        for cam in CAMERAS:
            feats[f"observation.images.{cam}"] = {"dtype": "video" if use_videos else "image", "shape": (h, w, 3),
                                                  "names": ["height", "width", "channels"]}
    for name, (dtype, _) in columns.items():
        feats[name] = {"dtype": dtype, "shape": (1,), "names": None}
    return feats


def make_frame(obs: dict[str, Any], action: np.ndarray, env_state: np.ndarray, task: str,
               columns: dict[str, Any]) -> dict[str, Any]:
    """One LeRobot frame from an observation (taken *before* ``action`` was executed)."""
    frame = {
        "observation.state": np.asarray(obs["agent_pos"], dtype=np.float32),
        "observation.joints": np.asarray(obs["joint_pos"], dtype=np.float32),
        "observation.environment_state": np.asarray(env_state, dtype=np.float32),
        "action": np.asarray(action, dtype=np.float32),
        "task": task,
    }
    for cam, img in obs.get("pixels", {}).items():
        frame[f"observation.images.{cam}"] = img
    for name, value in columns.items():
        frame[name] = value if isinstance(value, str) else np.asarray([value])
    return frame


def finished_episodes(root: str | Path) -> int:
    """Episodes a dataset directory holds (0 when there is none yet)."""
    info = Path(root) / "meta/info.json"
    return json.loads(info.read_text())["total_episodes"] if info.exists() else 0


def read_marker(root: str | Path) -> dict[str, Any]:
    """A dataset's FlowPRO marker (task, kind, layout, the model that recorded it); ``{}`` for a
    directory without one."""
    marker = Path(root) / MARKER
    return json.loads(marker.read_text()) if marker.exists() else {}


class DatasetMismatch(ValueError):
    """The directory holds a dataset of another task or layout."""


def run_recording_command(record_fn: Callable[[], dict], root: str | Path, what: str,
                          faults: tuple[type[BaseException], ...] = ()) -> int:
    """The exit path of a resumable recording command (:func:`envs.cli.run_command`): its JSON
    summary (exit 0), a clear error for bad input (exit 2; a DatasetMismatch is a ValueError), for
    one of ``faults`` (a robot's errors: exit 3), or after Ctrl-C (exit 130), the last two saying
    how many finished ``what`` are on disk."""
    def hint(code: int) -> str | None:
        if code == EXIT_FAULT:
            return (f"{finished_episodes(root)} finished {what} are in {root}; check the robot and run the same "
                    "command again to continue")
        if code == EXIT_INTERRUPTED:
            return f"{finished_episodes(root)} {what} are in {root}; run the same command again to continue"
        return None

    return run_command(record_fn, faults=faults, fault_message=lambda e: f"error on the robot: {type(e).__name__}: {e}",
                       hint=hint)


class EpisodeWriter:
    """Appends whole episodes to a LeRobotDataset at ``root``, one finalized write per episode."""

    def __init__(self, root: str | Path, repo_id: str, *, task: str, fps: int, features: dict,
                 robot_type: str = "dobot_xtrainer", use_videos: bool = False, layout: dict | None = None):
        self.root, self.repo_id, self.fps = Path(root), repo_id, fps
        self.features, self.robot_type, self.use_videos = features, robot_type, use_videos
        self.marker = {"format_version": FORMAT_VERSION, "task": task, "fps": fps, **(layout or {}),
                       "features": sorted(features)}
        self._check_target()

    def _check_target(self) -> None:
        if (self.root / MARKER).exists():
            found = read_marker(self.root)
            diffs = {k: (found.get(k), self.marker.get(k)) for k in sorted(set(found) | set(self.marker))
                     if found.get(k) != self.marker.get(k)}
            if diffs:
                detail = ", ".join(f"{k}: has {a!r}, asked {b!r}" for k, (a, b) in diffs.items())
                raise DatasetMismatch(f"{self.root} holds a different dataset ({detail}); refusing to write into it")
        elif self.root.exists() and any(self.root.iterdir()):
            raise DatasetMismatch(f"{self.root} exists, is not empty and is not a FlowPRO dataset; refusing to write into it")

    @property
    def num_episodes(self) -> int:
        return finished_episodes(self.root)

    def last_value(self, column: str) -> Any:
        """Last recorded value of a per-frame column (None for an empty dataset)."""
        import pyarrow.parquet as pq

        files = sorted((self.root / "data").glob("chunk-*/file-*.parquet"))
        if not files:
            return None
        col = pq.read_table(files[-1], columns=[column]).column(column)
        value = col[len(col) - 1].as_py()
        return value[0] if isinstance(value, list) else value

    def write_episode(self, frames: list[dict[str, Any]]) -> None:
        """Write one finished episode and finalize the dataset on disk.

        Ctrl-C during the write is deferred until the episode is on disk; the very first episode
        is written to a sibling directory and moved into place, so no half-created dataset remains.
        """
        if not frames:
            raise ValueError("refusing to write an empty episode")
        with _defer_sigint():
            if self.num_episodes == 0:
                tmp = self.root.with_name(self.root.name + ".partial")
                shutil.rmtree(tmp, ignore_errors=True)
                self._append(tmp, frames, create=True)
                (tmp / MARKER).write_text(json.dumps(self.marker, indent=2))
                if self.root.exists():
                    self.root.rmdir()  # empty (checked in __init__)
                os.replace(tmp, self.root)
            else:
                self._append(self.root, frames, create=False)

    def _append(self, root: Path, frames: list[dict[str, Any]], create: bool) -> None:
        import datasets
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        # pyav named explicitly: probing torchcodec (no FFmpeg libraries here) only prints a long warning.
        if create:
            ds = LeRobotDataset.create(self.repo_id, fps=self.fps, features=self.features, root=root,
                                       robot_type=self.robot_type, use_videos=self.use_videos, video_backend="pyav")
        else:
            ds = LeRobotDataset.resume(self.repo_id, root=root, video_backend="pyav")
        try:
            for frame in frames:
                ds.add_frame(dict(frame))
            datasets.disable_progress_bars()  # LeRobot re-enables them on resume
            ds.save_episode()
        except BaseException:
            with suppress(Exception):
                ds.clear_episode_buffer()
            raise
        finally:
            ds.finalize()


@contextmanager
def _defer_sigint():
    """Hold back SIGINT (Ctrl-C) for the duration of a short critical write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *a: caught.append(a))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught:
            raise KeyboardInterrupt
