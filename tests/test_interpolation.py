"""Smooth Interpolation (paper App. C-D; docs/method.md §Preference tuples): distance, Bézier bridge,
Slerp, continuity."""

import numpy as np
import pytest
from scipy.optimize import linprog
from scipy.spatial.transform import Rotation
from trajectories import random_trajectory

from envs.geometry import GRIP, POS, ROT6, arm_slice, geodesic_angle, matrix_to_r6, r6_to_matrix
from flowpro.interpolation import bezier, bezier_controls, closest_index, pose_distance, smooth_interpolate


def _row(rng, scale=0.1):
    row = np.empty(20)
    for arm in ("left", "right"):
        s = arm_slice(arm)
        row[s][POS] = rng.normal(0, scale, 3)
        row[s][ROT6] = matrix_to_r6(Rotation.random(random_state=rng.integers(1 << 30)).as_matrix())
        row[s][GRIP] = rng.uniform()
    return row


def test_pose_distance_weights_and_sums_arms():
    rng = np.random.default_rng(0)
    a = _row(rng)
    assert pose_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    b = a.copy()
    b[arm_slice("left")][POS] += [0.1, 0.0, 0.0]
    assert pose_distance(a, b) == pytest.approx(0.1)
    c = a.copy()
    R = r6_to_matrix(a[arm_slice("right")][ROT6])
    c[arm_slice("right")][ROT6] = matrix_to_r6(R @ Rotation.from_euler("z", 90, degrees=True).as_matrix())
    c[arm_slice("right")][GRIP] = a[arm_slice("right")][GRIP] + 0.5
    assert pose_distance(a, c) == pytest.approx(0.5 * np.pi / 2 + 0.2 * 0.5)
    assert pose_distance(b, a) == pytest.approx(pose_distance(a, b))
    assert pose_distance(a, np.stack([a, b])).shape == (2,)


def test_closest_index():
    rng = np.random.default_rng(1)
    traj = random_trajectory(rng)
    probe = traj[17].copy()
    probe[0] += 1e-3
    assert closest_index(probe, traj) == 17


@pytest.mark.parametrize("m", [1, 5, 15, 29])
def test_chunk_follows_target_after_m_and_is_continuous(m):
    rng = np.random.default_rng(m)
    target = random_trajectory(rng, 30)
    start = target[0] + np.r_[rng.normal(0, 0.03, 3), np.zeros(7), rng.normal(0, 0.03, 3), np.zeros(7)]
    chunk = smooth_interpolate(start, target, m)
    assert chunk.shape == (30, 20)
    assert np.array_equal(chunk[m:], target[m:])  # the last H - m rows are the correction's
    for arm in ("left", "right"):
        s = arm_slice(arm)
        length = np.linalg.norm(target[m, s][POS] - start[s][POS])
        steps = np.linalg.norm(np.diff(np.vstack([start[s][POS], chunk[:m + 1, s][:, POS]]), axis=0), axis=1)
        assert steps.max() <= 3 * length / (m + 1) + 1e-9  # no jump: at most the Bézier's top speed
        R = r6_to_matrix(chunk[:, s][:, ROT6])
        assert np.allclose(R @ np.swapaxes(R, 1, 2), np.eye(3), atol=1e-9)  # valid rotations
        assert np.allclose(np.linalg.det(R), 1.0)
        g = chunk[:m + 1, s][:, GRIP]
        expected = np.linspace(start[s][GRIP], target[m, s][GRIP], m + 2)[1:]
        assert np.allclose(g, expected)  # linear gripper


def test_bezier_ends_and_arrival_tangent():
    rng = np.random.default_rng(3)
    p0, p3, tangent = rng.normal(size=3), rng.normal(size=3), rng.normal(size=3)
    ctrl = bezier_controls(p0, p3, tangent)
    assert np.allclose(bezier(ctrl, np.array([0.0, 1.0])), [p0, p3])
    assert np.allclose(ctrl[1], (p0 + p3) / 2)  # P1 at the midpoint: no inherited direction at M
    eps = 1e-6
    arrival = (bezier(ctrl, np.array([1.0])) - bezier(ctrl, np.array([1 - eps]))) / eps
    cos = arrival[0] @ tangent / np.linalg.norm(arrival) / np.linalg.norm(tangent)
    assert cos > 1 - 1e-6  # arrives along tau^w's tangent


def test_bridge_stays_in_convex_hull_of_controls():
    rng = np.random.default_rng(4)
    ctrl = bezier_controls(rng.normal(size=3), rng.normal(size=3), rng.normal(size=3))
    for point in bezier(ctrl, np.linspace(0, 1, 25)):
        # Feasible convex weights w >= 0, sum w = 1, ctrl^T w = point.
        res = linprog(np.zeros(4), A_eq=np.vstack([ctrl.T, np.ones(4)]), b_eq=np.r_[point, 1.0], bounds=[(0, None)] * 4)
        assert res.status == 0


def test_orientation_is_slerped_monotonically():
    rng = np.random.default_rng(5)
    target = random_trajectory(rng, 30)
    start = target[0].copy()
    R0 = r6_to_matrix(target[20, arm_slice("left")][ROT6]) @ Rotation.from_euler("x", 60, degrees=True).as_matrix()
    start[arm_slice("left")][ROT6] = matrix_to_r6(R0)
    chunk = smooth_interpolate(start, target, 20)
    R = r6_to_matrix(chunk[:21, arm_slice("left")][:, ROT6])
    to_start = geodesic_angle(R0[None], R)
    assert np.all(np.diff(to_start) > 0)  # steadily away from M's orientation ...
    assert geodesic_angle(R[-1], r6_to_matrix(target[20, arm_slice("left")][ROT6])) < 1e-9  # ... onto J_m


def test_bad_input_is_named():
    target = np.zeros((30, 20))
    target[:, 3] = target[:, 7] = target[:, 13] = target[:, 17] = 1.0
    with pytest.raises(ValueError, match="1 <= m < H=30"):
        smooth_interpolate(target[0], target, 30)
    with pytest.raises(ValueError, match=r"start must be \(20,\)"):
        smooth_interpolate(target[0, :10], target, 5)
