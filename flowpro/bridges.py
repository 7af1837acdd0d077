"""How far and how fast Smooth-Interpolation bridges move, beside the demonstrations (docs/tuples.md).

A Case-1 tuple's ``a^w`` bridges from the command in effect at ``M`` to ``J_m`` on the
correction in ``m`` steps (paper App. E). The paper assumes bridges of a few millimetres to a
centimetre, because its operator rolls back to just before the error began. If the rollback
lands far from the correction, the bridges ask the robot for motions no demonstration shows.
These statistics make that visible. Per arm they give:

- ``gap_m``: the distance from ``M`` to its closest point ``J`` on ``tau^w`` (measured poses);
- ``bridge_m``: the straight length of the bridge, from its start to ``J_m``;
- ``bridge_speed_m_per_step``: the largest per-step move of the bridge rows;
- for the demonstrations and the corrections, the per-step moves of their commands.

All positions are the tool positions of the 20-dim rows (``envs.geometry``), in metres.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from envs.geometry import ARMS, POS, arm_slice
from flowpro.interpolation import closest_index
from flowpro.tuples import SOURCE_L, PairTrajectories, bridge_start, build_pair_tuples

QUANTILES = (0.5, 0.9, 0.99, 1.0)


def arm_positions(rows: np.ndarray, arm: str) -> np.ndarray:
    """The tool positions of ``arm`` in rows [..., 20] -> [..., 3]."""
    return rows[..., arm_slice(arm)][..., POS]


def step_moves(rows: np.ndarray, arm: str) -> np.ndarray:
    """Per-step position moves of consecutive rows [T, 20] -> [T - 1] (metres per control step)."""
    return np.linalg.norm(np.diff(arm_positions(rows, arm), axis=0), axis=-1)


def summarize_values(values: Iterable[float]) -> dict[str, float | int]:
    """Count and quantiles (median, 90 %, 99 %, max) of ``values``."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0}
    return {"n": int(v.size), **{f"q{int(q * 100)}": round(float(np.quantile(v, q)), 6) for q in QUANTILES}}


def bridge_statistics(pairs: list[PairTrajectories], h: int, m: int | None = None) -> dict[str, dict]:
    """Per arm: the gaps, bridge lengths and bridge speeds of every Case-1 tuple of ``pairs``,
    and the per-step command moves of their corrections ``tau^w``."""
    m = h // 2 if m is None else m
    values: dict[str, dict[str, list[float]]] = {arm: {"gap_m": [], "bridge_m": [], "bridge_speed_m_per_step": [],
                                                       "correction_speed_m_per_step": []} for arm in ARMS}
    for p in pairs:
        t = build_pair_tuples(p.states_l, p.actions_l, p.states_w, p.actions_w, h, m)  # once per pair
        for k in np.flatnonzero(t.source == SOURCE_L):
            i = int(t.frame[k])
            j = closest_index(p.states_l[i], p.states_w)
            start = bridge_start(p.actions_l, i)
            for arm in ARMS:
                v = values[arm]
                v["gap_m"].append(np.linalg.norm(arm_positions(p.states_l[i] - p.states_w[j], arm)))
                v["bridge_m"].append(np.linalg.norm(arm_positions(t.a_w[k, m] - start, arm)))
                v["bridge_speed_m_per_step"].append(step_moves(np.vstack([start, t.a_w[k, :m + 1]]), arm).max())
        for arm in ARMS:
            values[arm]["correction_speed_m_per_step"].extend(step_moves(p.actions_w, arm))
    return {arm: {name: summarize_values(v) for name, v in by_name.items()} for arm, by_name in values.items()}


def demonstration_speeds(actions: np.ndarray, episode_end: np.ndarray) -> dict[str, dict]:
    """Per arm: the per-step command moves of demonstrations [N, 20], within episodes."""
    same_episode = episode_end[1:] == episode_end[:-1]
    return {arm: {"speed_m_per_step": summarize_values(step_moves(actions, arm)[same_episode])} for arm in ARMS}
