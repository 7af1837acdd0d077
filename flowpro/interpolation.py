"""Smooth Interpolation (paper §3.4, App. C-E; docs/method.md §Preference tuples): synthetic
positive chunks that bridge from a state on the policy's failing segment to the human correction.

Rows are 20-dim poses (docs/method.md §Action representation): per arm ``[x, y, z, r6, gripper]``.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from envs.geometry import ARMS, GRIP, POS, ROT6, arm_slice, geodesic_angle, matrix_to_r6, r6_to_matrix

W_ROT = 0.5  # weight of the geodesic angle (rad) against metres
W_GRIP = 0.2  # weight of the normalised gripper difference


def pose_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The distance of paper App. C (Eq. 22), ``||p - p'|| + 0.5 d_geo(R, R') + 0.2 |g - g'|``, summed over
    both arms (docs/method.md §Distance).

    Broadcasts over leading dimensions: ``a`` [..., 20] against ``b`` [..., 20].
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    total = 0.0
    for arm in ARMS:
        sa, sb = a[..., arm_slice(arm)], b[..., arm_slice(arm)]
        total = total + np.linalg.norm(sa[..., POS] - sb[..., POS], axis=-1)
        total = total + W_ROT * geodesic_angle(r6_to_matrix(sa[..., ROT6]), r6_to_matrix(sb[..., ROT6]))
        total = total + W_GRIP * np.abs(sa[..., GRIP] - sb[..., GRIP])
    return total


def closest_index(pose: np.ndarray, trajectory: np.ndarray) -> int:
    """Index of the point of ``trajectory`` [T, 20] closest to ``pose`` under :func:`pose_distance`."""
    return int(np.argmin(pose_distance(pose[None], trajectory)))


def bezier_controls(p0: np.ndarray, p3: np.ndarray, arrival_tangent: np.ndarray) -> np.ndarray:
    """Cubic Bézier control points: ``P1`` at the midpoint of ``P0``-``P3`` (the bridge must not
    inherit the failing segment's direction at ``M``), ``P2 = P3 - t_hat * L / 3`` so the bridge
    arrives along the correction's tangent with a speed set by the bridge length ``L``."""
    length = float(np.linalg.norm(p3 - p0))
    norm = float(np.linalg.norm(arrival_tangent))
    t_hat = arrival_tangent / norm if norm > 1e-12 else np.zeros(3)
    return np.stack([p0, (p0 + p3) / 2, p3 - t_hat * length / 3, p3])


def bezier(controls: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Points of a cubic Bézier at parameters ``s`` [N] -> [N, 3]."""
    s = np.asarray(s, dtype=np.float64)[:, None]
    p0, p1, p2, p3 = controls
    return (1 - s) ** 3 * p0 + 3 * (1 - s) ** 2 * s * p1 + 3 * (1 - s) * s ** 2 * p2 + s ** 3 * p3


def smooth_interpolate(start: np.ndarray, target_chunk: np.ndarray, m: int) -> np.ndarray:
    """The synthetic positive chunk ``a^w`` (paper App. D; docs/method.md §Case 1, steps 3-4).

    ``start`` is the pose at ``M`` (one 20-dim row), ``target_chunk`` the next ``H`` rows of
    ``tau^w`` from the closest point ``J``. Rows ``m .. H-1`` are the target's rows (so the
    chunk meets ``J_m = target_chunk[m]`` exactly and follows the correction from there);
    rows ``0 .. m-1`` bridge from ``M`` to ``J_m`` at evenly spaced parameters
    ``s = (k + 1) / (m + 1)``: cubic Bézier for position, Slerp for orientation, linear gripper.
    """
    start = np.asarray(start, dtype=np.float64)
    target = np.asarray(target_chunk, dtype=np.float64)
    h = target.shape[0]
    if start.shape != (20,) or target.ndim != 2 or target.shape[1] != 20:
        raise ValueError(f"start must be (20,) and target_chunk (H, 20); got {start.shape} and {target.shape}")
    if not 1 <= m < h:
        raise ValueError(f"m must satisfy 1 <= m < H={h}, got {m}")
    out = target.copy()
    s = np.arange(1, m + 1) / (m + 1)
    for arm in ARMS:
        sl = arm_slice(arm)
        a, j = start[sl], target[m, sl]
        # Arrival tangent of tau^w at J_m (backward difference: the motion that arrives there).
        tangent = target[m, sl][POS] - target[m - 1, sl][POS]
        out[:m, sl][:, POS] = bezier(bezier_controls(a[POS], j[POS], tangent), s)
        rots = Rotation.from_matrix(np.stack([r6_to_matrix(a[ROT6]), r6_to_matrix(j[ROT6])]))
        out[:m, sl][:, ROT6] = matrix_to_r6(Slerp([0.0, 1.0], rots)(s).as_matrix())
        out[:m, sl][:, GRIP] = (1 - s) * a[GRIP] + s * j[GRIP]
    return out
