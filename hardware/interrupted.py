"""What a fault leaves on disk when it interrupts a real-bench session (issue 8, "Bad input and faults").

Malformed or truncated replies, a wrong test value, a dropped connection, ErrorID ≠ 0, a command
outside the limits, a stale feedback stream, Ctrl-C: whatever ends a rollout early on the real
X-Trainer goes through :func:`stop_then_flush`, in this order:

1. **safe stop**: both arms are stopped (latched, :meth:`hardware.backend.RealXTrainer.emergency_stop`)
   before anything else, so no arm is left moving while files are written;
2. **flush**: the finished part of the record in progress is written (below);
3. **clear error**: the original exception propagates, with a note saying where the record went
   (the command lines print it: ``python -m hardware.run``, ``flowpro.collect --backend real``).

On disk, the main outputs hold finished items only, so training, ``load_pairs`` and resuming never
see an interrupted one; the interrupted record sits next to them:

- **collect** (``<root>``: the round's pair dataset, one finished pair per episode)::

      <root>_interrupted/log.jsonl   one JSON line per interrupted rollout: seed, round, fault,
                                     finished pairs written from it, frames flushed and where
      <root>_interrupted/frames/     LeRobotDataset (marker kind "interrupted_pairs"), one episode
                                     per interrupted rollout that had unpaired frames: the pair in
                                     progress (tau^l, role "l", then the correction so far, role "w",
                                     intervention True), or without one the policy steps since the
                                     last pair (role "l", rollback_index -1); pair_id is -1 and the
                                     ``fault`` column names the fault on every frame

  Finished pairs of the interrupted rollout go to ``<root>`` as usual. The next run resumes after
  the last finished pair (``<root>`` is untouched by the fault).
- **evaluate** (``--out`` results, one JSON line per finished rollout)::

      <out stem>.interrupted.jsonl   one line per interrupted rollout: rollout index, seed, steps
                                     and time done, terminated_by "fault", the fault

  The results file does not count the interrupted rollout, so a rerun repeats it (same index and
  seed) and a bench fault is never scored as a policy failure.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from envs.dataset import EpisodeWriter, dataset_features, make_frame
from envs.rollout import StepRecord
from flowpro.collect import PAIR_COLUMNS, RolloutProgress

INTERRUPTED_KIND = "interrupted_pairs"  # meta/flowpro.json "kind" of the interrupted frames
INTERRUPTED_COLUMNS: dict[str, tuple[str, Any]] = {**PAIR_COLUMNS, "fault": ("string", "")}
NO_PAIR = -1  # pair_id (and rollback_index when there was no intervention) of interrupted frames
Log = Callable[[str], None]


def fault_text(e: BaseException) -> str:
    """``"<ExceptionType>: <message>"``, the fault as the records and the logs name it."""
    if isinstance(e, KeyboardInterrupt):
        return "KeyboardInterrupt: interrupted by the operator (Ctrl-C)"
    return f"{type(e).__name__}: {e}"


def stop_report(backend: Any) -> str:
    """Whether each arm's stop request went through (a failed one needs the hardware e-stop)."""
    parts = []
    for arm, safe in getattr(backend, "safe", {}).items():
        if safe.stop_error is not None:
            parts.append(f"{arm} arm: the stop request FAILED ({safe.stop_error}); use the emergency stop button")
        else:
            parts.append(f"{arm} arm stopped")
    return ", ".join(parts) or "no arm connected"


@contextmanager
def stop_then_flush(backend: Any, flush: Callable[[str], str], log: Log) -> Iterator[None]:
    """Around one rollout on the real bench: on any exception (Ctrl-C too) stop both arms first,
    then ``flush(fault)`` (it writes what was recorded and returns where), then re-raise the
    exception with that as a note. A flush that fails adds its own note; the fault still propagates."""
    try:
        yield
    except BaseException as e:
        fault = fault_text(e)
        try:
            backend.emergency_stop(f"session interrupted by {fault}")  # first: never an arm left moving
        except Exception as stop_error:  # (a failed stop request is kept by the safety layer, not raised)
            e.add_note(f"stopping the arms failed: {type(stop_error).__name__}: {stop_error}; "
                       "use the emergency stop button")
        log(f"[session] {fault}\n[session] {stop_report(backend)}; saving what was recorded")
        try:
            e.add_note(flush(fault))
        except Exception as flush_error:
            e.add_note(f"saving the interrupted record failed too: {type(flush_error).__name__}: {flush_error}")
        raise


# ---------------------------------------------------------------------------------------------- evaluate
def interrupted_results_path(out: str | Path) -> Path:
    """Where the interrupted rollouts of an evaluation results file ``out`` are logged."""
    out = Path(out)
    return out.with_name(out.stem + ".interrupted.jsonl")


def record_interrupted_rollout(out: str | Path, rollout: int, seed: int, backend: Any, fault: str) -> str:
    """Append the interrupted rollout's line next to the results file ``out``; returns a note."""
    steps = int(round(backend.time_s / backend.control_dt))
    line = {"rollout": rollout, "seed": seed, "success": False, "steps": steps, "time_s": round(backend.time_s, 3),
            "terminated_by": "fault", "fault": fault, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path = interrupted_results_path(out)
    append_jsonl(path, line)
    return (f"rollout {rollout + 1} (seed {seed}) was interrupted after {steps} steps and is logged in {path}, "
            f"not in {out}: running the same command again repeats it")


# ---------------------------------------------------------------------------------------------- collect
def interrupted_dir(root: str | Path) -> Path:
    """The directory of a pair dataset's interrupted records (next to it, never inside it)."""
    root = Path(root)
    return root.with_name(root.name + "_interrupted")


def interrupted_writer(root: str | Path, task: str, round_k: int, image_size: tuple[int, int] | None, fps: int,
                       env_state_dim: int, split: str) -> EpisodeWriter:
    """The writer of ``<root>_interrupted/frames`` (a different marker kind than the pairs, so
    neither dataset can be appended to the other)."""
    return EpisodeWriter(interrupted_dir(root) / "frames", f"flowpro/{task}_interrupted_round{round_k}", task=task,
                         fps=fps, features=dataset_features(image_size, env_state_dim, INTERRUPTED_COLUMNS),
                         layout={"kind": INTERRUPTED_KIND, "round": round_k, "split": split,
                                 "obs_mode": "rgb" if image_size else "state",
                                 "image_size": list(image_size) if image_size else None})


def interrupted_frames(progress: RolloutProgress, seed: int, task_text: str, round_k: int, fault: str,
                       env_state: np.ndarray) -> list[dict[str, Any]]:
    """The frames of the record in progress (:meth:`RolloutProgress.unfinished`): tau^l then the
    correction so far, each with the fault; ``env_state`` replaces the observation's (the real
    bench's placeholder)."""
    iv, loser, winner = progress.unfinished()
    common = {"episode_seed": seed, "pair_id": NO_PAIR, "round": round_k, "fault": fault,
              "rollback_index": iv.rollback_index if iv is not None else NO_PAIR,
              "failure": iv.reason if iv is not None else ""}

    def frames(steps: list[StepRecord], role: str) -> list[dict[str, Any]]:
        cols = {**common, "role": role, "intervention": role == "w"}
        return [make_frame(s.obs, s.action, env_state, task_text, cols) for s in steps]

    return frames(loser, "l") + frames(winner, "w")


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
