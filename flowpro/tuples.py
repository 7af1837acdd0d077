"""Per-state preference tuples ``(s, a^w, a^l)`` from one intervention pair (paper §3.4, App. C-E;
docs/method.md §Preference tuples).

Inputs are one pair's trajectories as arrays: the measured 20-dim poses at each frame
(``observation.state``) and the commanded 20-dim actions. ``tau^l`` is the policy's executed
segment from the rollback state to the intervention; ``tau^w`` the correction from the same
state. Outputs are plain arrays the trainer can stream: which trajectory and frame the state
comes from, ``a^w``, ``a^l`` and one padding mask shared by both chunks (docs/method.md §Shared draws).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.geometry import ARMS, POS, arm_slice
from flowpro.interpolation import closest_index, smooth_interpolate

SOURCE_L, SOURCE_W = "l", "w"  # SFT states (Case 3) come from flowpro.data.ChunkDataset


def chunk_at(actions, i: int, h: int, end: int | None = None):
    """``actions[i : i + h]``, padded past ``end`` (default: the trajectory's end) by holding the
    last action; returns ``(chunk, pad)`` with ``pad`` True on padded steps (docs/method.md §Padding). Works on
    numpy arrays and torch tensors alike."""
    n = len(actions) if end is None else end
    if not 0 <= i < n:
        raise IndexError(f"frame {i} is outside a trajectory ending at frame {n}")
    idx = np.arange(i, i + h)
    return actions[np.minimum(idx, n - 1)], idx >= n


@dataclass
class PairTuples:
    source: np.ndarray  # [N] "l" (Case 1) or "w" (Case 2)
    frame: np.ndarray  # [N] frame index inside tau^l or tau^w
    a_w: np.ndarray  # [N, H, 20]
    a_l: np.ndarray  # [N, H, 20]
    pad: np.ndarray  # [N, H] True = padded step (masked in the loss for both chunks)
    gap: np.ndarray  # [N] Case 1: bridge_gap from M to J (metres); Case 2: NaN

    def __len__(self) -> int:
        return len(self.frame)


def bridge_start(actions: np.ndarray, i: int) -> np.ndarray:
    """Where a Case-1 bridge from frame ``i`` of ``tau^l`` starts: the command in effect there.

    On a position-servo robot (the simulator's joint servos, the X-Trainer's ServoJ, the Feetech
    grippers) the measured pose is not the command. An arm lags its command by the tracking
    error, and a gripper closed on an object measures the object's width (USB: about 0.62 on
    the strip and 0.19 on the lamp, both commanded 0). A bridge from the measured pose would
    step the setpoint at its first row and, for a gripper, command it open on a held object:
    executed from restored grasp states of recorded USB pairs it lost a grasp in 19 of 132
    probes (0 of 132 from the command; docs/tuples.md). The last command ``actions[i - 1]`` is the
    controller's own state at ``M``: a bridge from it continues what the robot was doing, for the
    arms and the grippers alike, in the same representation (commands) as the chunk it joins.
    """
    if not 1 <= i < len(actions):
        raise IndexError(f"frame {i} has no command before it in a trajectory of {len(actions)} frames")
    return actions[i - 1]


def bridge_gap(state_m: np.ndarray, state_j: np.ndarray) -> float:
    """The larger of the two tools' position distances between the measured poses at ``M`` and
    ``J`` (metres): how far a bridge from ``M`` has to carry either arm to reach the correction."""
    return max(float(np.linalg.norm(state_m[arm_slice(arm)][POS] - state_j[arm_slice(arm)][POS])) for arm in ARMS)


def build_pair_tuples(states_l: np.ndarray, actions_l: np.ndarray, states_w: np.ndarray, actions_w: np.ndarray,
                      h: int, m: int | None = None, max_bridge_gap: float | None = None) -> PairTuples:
    """Case 1 (states on ``tau^l``) and Case 2 (states on ``tau^w``) tuples of one pair.

    Case 1 samples ``M`` only from the prefix ``tau^l[1 : len - h]`` so that ``a^l`` (the next
    ``h`` actions along ``tau^l``) lies inside ``tau^l`` and the contact-rich tail before the
    rollback never starts a bridge. The closest point ``J`` on ``tau^w`` is found between
    measured poses, and ``a^w`` bridges to it by :func:`smooth_interpolate` (transition index
    ``m``, default ``h // 2``) from the *command in effect at M*, ``actions_l[i - 1]``, not from
    the measured pose (see :func:`bridge_start`); frame 0 (the rollback state) has no recorded
    command before it and starts no bridge. Case 2 gives identical pairs ``a^w = a^l`` (their
    contrastive gradient cancels, paper Eq. 7-8).

    ``max_bridge_gap`` (metres, default none) keeps a Case-1 state only where both tools lie within it of
    their positions at ``J``: the paper's bridges span a few millimetres to a centimetre (App. E),
    because its operator rolls back to just before the error began; farther states would ask for
    bridges no demonstration shows (:func:`bridge_gap`, docs/tuples.md).
    """
    m = h // 2 if m is None else m
    if max_bridge_gap is not None and not max_bridge_gap > 0:
        raise ValueError(f"max_bridge_gap must be > 0 metres (or None: every state bridges), got {max_bridge_gap}")
    for name, s, a in (("tau^l", states_l, actions_l), ("tau^w", states_w, actions_w)):
        if s.ndim != 2 or a.shape != s.shape or s.shape[1] != 20:
            raise ValueError(f"{name}: states and actions must both be [T, 20], got {s.shape} and {a.shape}")
    if len(states_w) == 0:
        raise ValueError("tau^w is empty: a pair needs a correction")
    sources, frames, a_ws, a_ls, pads, gaps = [], [], [], [], [], []
    for i in range(1, max(0, len(states_l) - h)):  # Case 1: the prefix only
        j = closest_index(states_l[i], states_w)
        gap = bridge_gap(states_l[i], states_w[j])
        if max_bridge_gap is not None and gap > max_bridge_gap:
            continue
        target, pad = chunk_at(actions_w, j, h)
        a_ws.append(smooth_interpolate(bridge_start(actions_l, i), target, m))
        a_ls.append(actions_l[i:i + h])
        pads.append(pad & (np.arange(h) >= m))  # the bridge rows are real; a^l never needs padding
        sources.append(SOURCE_L)
        frames.append(i)
        gaps.append(gap)
    for i in range(len(states_w)):  # Case 2: identical pairs on the correction
        chunk, pad = chunk_at(actions_w, i, h)
        a_ws.append(chunk)
        a_ls.append(chunk)
        pads.append(pad)
        sources.append(SOURCE_W)
        frames.append(i)
        gaps.append(np.nan)
    return PairTuples(np.array(sources), np.array(frames), np.stack(a_ws), np.stack(a_ls), np.stack(pads),
                      np.array(gaps))


@dataclass
class PairTrajectories:
    """One recorded pair: measured poses and commanded actions of ``tau^l`` and ``tau^w``, and
    where their frames sit in the dataset (global frame indices)."""

    pair_id: int
    states_l: np.ndarray
    actions_l: np.ndarray
    states_w: np.ndarray
    actions_w: np.ndarray
    index_l: np.ndarray
    index_w: np.ndarray


class PairDataError(ValueError):
    """A pair dataset that cannot be trained on: a missing column, a pose that is not finite or
    not a rotation, a pair without its correction ``tau^w``; the message names which and where."""


def check_poses(rows: np.ndarray, what: str, tol: float = 1e-3) -> None:
    """Refuse non-finite pose rows and 6D rotations whose columns are not orthonormal within
    ``tol``, naming the first bad frame (:class:`PairDataError`)."""
    if rows.ndim != 2 or rows.shape[1] != 20:
        raise PairDataError(f"{what}: rows must be 20-dim poses, got shape {rows.shape}")
    bad = ~np.isfinite(rows).all(1)
    if bad.any():
        raise PairDataError(f"{what}: non-finite values at frame {int(np.flatnonzero(bad)[0])}")
    for arm, c in (("left", 3), ("right", 13)):
        a, b = rows[:, c:c + 3], rows[:, c + 3:c + 6]
        err = np.maximum.reduce([np.abs(np.linalg.norm(a, axis=1) - 1), np.abs(np.linalg.norm(b, axis=1) - 1),
                                 np.abs((a * b).sum(1))])
        if (err > tol).any():
            f = int(np.flatnonzero(err > tol)[0])
            raise PairDataError(f"{what}: the {arm} arm's 6D rotation is not orthonormal at frame {f} "
                             f"(error {err[f]:.2g} > {tol:g})")


def split_pairs(pair_id: np.ndarray, role: np.ndarray, states: np.ndarray, actions: np.ndarray) -> list[PairTrajectories]:
    """Cut the frames of a pair dataset (one episode per pair, ``tau^l`` frames before ``tau^w``)
    into pairs, validating every pose (:class:`PairDataError`)."""
    unknown = sorted(set(np.unique(role).tolist()) - {SOURCE_L, SOURCE_W})
    if unknown:
        raise PairDataError(f"frames with role {unknown!r}: a pair dataset holds only {SOURCE_L!r} and {SOURCE_W!r}")
    pairs = []
    ids, starts = np.unique(pair_id, return_index=True)
    for pid in ids[np.argsort(starts)]:
        idx = np.flatnonzero(pair_id == pid)
        il, iw = idx[role[idx] == SOURCE_L], idx[role[idx] == SOURCE_W]
        if len(iw) == 0:
            raise PairDataError(f"pair {int(pid)} has no tau^w frames")
        for name, ii in (("tau^l", il), ("tau^w", iw)):
            check_poses(states[ii], f"pair {int(pid)} {name} observation.state")
            # Commanded actions need only be finite: a policy's raw 6D output is orthonormalised
            # by the robot (Gram-Schmidt), and a^l must stay exactly what the policy produced.
            check_poses(actions[ii], f"pair {int(pid)} {name} action", tol=np.inf)
        pairs.append(PairTrajectories(int(pid), states[il], actions[il], states[iw], actions[iw], il, iw))
    return pairs


def load_pairs(root) -> list[PairTrajectories]:
    """The pairs of a dataset written by :mod:`flowpro.collect` (poses and actions only).

    A dataset that is not one raises :class:`PairDataError` (a ``ValueError``) naming what is
    wrong and where: a missing or unreadable column, poses that are not finite 20-dim rows with
    orthonormal rotations, a pair without ``tau^w``; no pairs are returned from it then."""
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from envs.dataset import read_marker

    kind = read_marker(root).get("kind")
    if kind not in (None, "preference_pairs"):  # e.g. the frames a fault interrupted (hardware.interrupted)
        raise PairDataError(f"{root} holds {kind!r}, not preference pairs; point at the round's pair dataset")
    files = sorted(Path(root).glob("data/chunk-*/file-*.parquet"))
    if not files:
        raise FileNotFoundError(f"{root} holds no pair data (no data/chunk-*/file-*.parquet)")
    cols = ["observation.state", "action", "pair_id", "role", "index"]
    tables = []
    for f in files:
        try:
            names = pq.read_schema(f).names
            missing = [c for c in cols if c not in names]
            if missing:
                raise PairDataError(f"{f}: no column {', '.join(map(repr, missing))} (a pair dataset needs {cols})")
            tables.append(pq.read_table(f, columns=cols).to_pydict())
        except (OSError, pa.ArrowException) as e:  # not a parquet file, or a corrupt one
            raise PairDataError(f"{f}: unreadable: {e}") from e
    get = lambda k: [v for t in tables for v in t[k]]  # noqa: E731
    if not get("index"):
        raise PairDataError(f"{root}: the pair data holds no frames")

    def column(k: str, dtype, width: int | None = None) -> np.ndarray:
        values = [v[0] if isinstance(v, list) and len(v) == 1 and width is None else v for v in get(k)]
        try:
            a = np.asarray(values, dtype=dtype)
        except (TypeError, ValueError) as e:  # ragged rows, nulls, text where numbers belong
            raise PairDataError(f"{root}: column {k!r}: {e}") from e
        if a.shape != ((len(values),) if width is None else (len(values), width)):
            raise PairDataError(f"{root}: column {k!r} has shape {a.shape}, expected "
                                f"{'one value' if width is None else f'{width} values'} per frame")
        return a

    order = np.argsort(column("index", np.int64), kind="stable")
    return split_pairs(column("pair_id", np.int64)[order], column("role", object)[order].astype(str),
                       column("observation.state", np.float64, 20)[order], column("action", np.float64, 20)[order])
