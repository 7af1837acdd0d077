"""Bridge-length and speed statistics of preference tuples (flowpro.bridges)."""

import numpy as np
from trajectories import random_trajectory

from flowpro.bridges import bridge_statistics, demonstration_speeds, summarize_values
from flowpro.tuples import PairTrajectories


def test_a_correction_offset_by_one_centimetre_gives_one_centimetre_gaps_and_bridges():
    rng = np.random.default_rng(0)
    w = random_trajectory(rng, 80)
    a_w = np.vstack([w[1:], w[-1:]])
    s_l = w[:60].copy()
    s_l[:, 0] += 0.01  # the left arm 1 cm off in x, the right arm on the correction
    a_l = np.vstack([s_l[1:], s_l[-1:]])
    pair = PairTrajectories(0, s_l, a_l, w, a_w, np.arange(60), np.arange(60, 140))
    stats = bridge_statistics([pair], h=30)
    left, right = stats["left"], stats["right"]
    assert left["gap_m"]["n"] == 60 - 30 - 1
    assert 0.0 < left["gap_m"]["q50"] <= 0.01 + 1e-9 < left["bridge_m"]["q100"]  # J is the nearest point
    assert right["gap_m"]["q100"] < 1e-9
    # a bridge covering L in m + 1 moves has a move of at least L / (m + 1)
    assert left["bridge_speed_m_per_step"]["q100"] >= left["bridge_m"]["q100"] / 16 - 1e-9
    moves = np.linalg.norm(np.diff(a_w[:, :3], axis=0), axis=1)
    assert abs(left["correction_speed_m_per_step"]["q100"] - moves.max()) < 1e-6  # rounded to micrometres


def test_demonstration_speeds_stay_inside_episodes():
    actions = np.zeros((6, 20))
    actions[3:, 0] = 1.0  # a jump of 1 m between two episodes, never inside one
    actions[4, 10] = 0.002
    end = np.array([3, 3, 3, 6, 6, 6])
    speeds = demonstration_speeds(actions, end)
    assert speeds["left"]["speed_m_per_step"]["q100"] == 0.0
    assert np.isclose(speeds["right"]["speed_m_per_step"]["q100"], 0.002)
    assert summarize_values([]) == {"n": 0}
