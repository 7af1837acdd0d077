"""Per-state preference tuples ``(s, a^w, a^l)`` from one intervention pair (SPEC §5).

Inputs are one pair's trajectories as arrays: the measured 20-dim poses at each frame
(``observation.state``) and the commanded 20-dim actions. ``tau^l`` is the policy's executed
segment from the rollback state to the intervention; ``tau^w`` the correction from the same
state. Outputs are plain arrays the trainer can stream: which trajectory and frame the state
comes from, ``a^w``, ``a^l`` and one padding mask shared by both chunks (shared draws, SPEC §3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flowpro.interpolation import closest_index, smooth_interpolate

SOURCE_L, SOURCE_W = "l", "w"  # SFT states (Case 3) come from flowpro.data.ChunkDataset


def chunk_at(actions, i: int, h: int, end: int | None = None):
    """``actions[i : i + h]``, padded past ``end`` (default: the trajectory's end) by holding the
    last action; returns ``(chunk, pad)`` with ``pad`` True on padded steps (SPEC §5). Works on
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

    def __len__(self) -> int:
        return len(self.frame)


def build_pair_tuples(states_l: np.ndarray, actions_l: np.ndarray, states_w: np.ndarray, actions_w: np.ndarray,
                      h: int, m: int | None = None) -> PairTuples:
    """Case 1 (states on ``tau^l``) and Case 2 (states on ``tau^w``) tuples of one pair.

    Case 1 samples ``M`` only from the prefix ``tau^l[0 : len - h]`` so that ``a^l`` (the next
    ``h`` actions along ``tau^l``) lies inside ``tau^l`` and the contact-rich tail before the
    rollback never starts a bridge; ``a^w`` bridges from ``M`` to the closest point of
    ``tau^w`` by :func:`smooth_interpolate` with transition index ``m`` (default ``h // 2``).
    Case 2 gives identical pairs ``a^w = a^l`` (their contrastive gradient cancels, SPEC §4).
    """
    m = h // 2 if m is None else m
    for name, s, a in (("tau^l", states_l, actions_l), ("tau^w", states_w, actions_w)):
        if s.ndim != 2 or a.shape != s.shape or s.shape[1] != 20:
            raise ValueError(f"{name}: states and actions must both be [T, 20], got {s.shape} and {a.shape}")
    if len(states_w) == 0:
        raise ValueError("tau^w is empty: a pair needs a correction")
    sources, frames, a_ws, a_ls, pads = [], [], [], [], []
    for i in range(max(0, len(states_l) - h)):  # Case 1: the prefix only
        j = closest_index(states_l[i], states_w)
        target, pad = chunk_at(actions_w, j, h)
        a_ws.append(smooth_interpolate(states_l[i], target, m))
        a_ls.append(actions_l[i:i + h])
        pads.append(pad & (np.arange(h) >= m))  # the bridge rows are real; a^l never needs padding
        sources.append(SOURCE_L)
        frames.append(i)
    for i in range(len(states_w)):  # Case 2: identical pairs on the correction
        chunk, pad = chunk_at(actions_w, i, h)
        a_ws.append(chunk)
        a_ls.append(chunk)
        pads.append(pad)
        sources.append(SOURCE_W)
        frames.append(i)
    return PairTuples(np.array(sources), np.array(frames), np.stack(a_ws), np.stack(a_ls), np.stack(pads))
