"""Rotation helpers and the 20-dim end-effector action layout (docs/method.md §Action representation).

Per arm a pose row is ``[x, y, z, r6 (6), gripper]``: position in metres (world frame in
simulation), ``r6 = concat(R[:, 0], R[:, 1])`` (Zhou et al. 2019) and a gripper scalar
with 1 = open, 0 = closed. The left arm fills columns 0-9, the right arm 10-19.
"""

from __future__ import annotations

import math

import numpy as np

ARM_DIM = 10
ACTION_DIM = 2 * ARM_DIM
ARMS = ("left", "right")
POS = slice(0, 3)
ROT6 = slice(3, 9)
GRIP = 9


def arm_slice(arm: str) -> slice:
    """Columns of one arm inside a 20-dim pose row."""
    i = ARMS.index(arm)
    return slice(i * ARM_DIM, (i + 1) * ARM_DIM)


def matrix_to_r6(R: np.ndarray) -> np.ndarray:
    """First two columns of rotation matrices, ``(..., 3, 3) -> (..., 6)``."""
    R = np.asarray(R, dtype=np.float64)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def r6_to_matrix(r6: np.ndarray) -> np.ndarray:
    """Gram-Schmidt of the 6D representation back to a rotation matrix, ``(..., 6) -> (..., 3, 3)``.

    Raises ``ValueError`` when the two columns are (nearly) parallel or zero, since no rotation
    is defined then.
    """
    r6 = np.asarray(r6, dtype=np.float64)
    if r6.shape == (6,):
        return _r6_row_to_matrix(r6)
    a, b = r6[..., 0:3], r6[..., 3:6]
    na = np.linalg.norm(a, axis=-1, keepdims=True)
    if np.any(na < 1e-9):
        raise ValueError("6D rotation has a zero first column")
    x = a / na
    b = b - np.sum(x * b, axis=-1, keepdims=True) * x
    nb = np.linalg.norm(b, axis=-1, keepdims=True)
    if np.any(nb < 1e-9):
        raise ValueError("6D rotation columns are parallel")
    y = b / nb
    z = np.cross(x, y)
    return np.stack([x, y, z], axis=-1)


def _r6_row_to_matrix(r6: np.ndarray) -> np.ndarray:
    """One row of :func:`r6_to_matrix` in scalar arithmetic, ~20x faster and bitwise equal: every
    operation is the one NumPy does for a single row (a 3-element sum adds left to right, as
    ``np.add.reduce`` does; ``np.cross`` is two products and a difference), each rounded once."""
    a0, a1, a2, b0, b1, b2 = r6.tolist()
    na = math.sqrt((a0 * a0 + a1 * a1) + a2 * a2)
    if na < 1e-9:
        raise ValueError("6D rotation has a zero first column")
    x0, x1, x2 = a0 / na, a1 / na, a2 / na
    d = (x0 * b0 + x1 * b1) + x2 * b2
    b0, b1, b2 = b0 - d * x0, b1 - d * x1, b2 - d * x2
    nb = math.sqrt((b0 * b0 + b1 * b1) + b2 * b2)
    if nb < 1e-9:
        raise ValueError("6D rotation columns are parallel")
    y0, y1, y2 = b0 / nb, b1 / nb, b2 / nb
    return np.array([[x0, y0, x1 * y2 - x2 * y1],
                     [x1, y1, x2 * y0 - x0 * y2],
                     [x2, y2, x0 * y1 - x1 * y0]])


def geodesic_angle(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Rotation angle (rad) of ``R1^T R2``, batched over leading dims."""
    R = np.swapaxes(R1, -1, -2) @ R2
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.arccos(np.clip(c, -1.0, 1.0))


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def matrix_to_quat(R: np.ndarray) -> np.ndarray:
    """Rotation matrix to a unit quaternion ``(w, x, y, z)`` (MuJoCo order), w >= 0."""
    import mujoco

    q = np.empty(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R, dtype=np.float64).reshape(9))
    return q if q[0] >= 0 else -q


JOINT_DIM = 14  # X-Trainer joint format: [L j1..j6, L grip, R j1..j6, R grip]


def validate_action(action, action_mode: str = "ee") -> np.ndarray:
    """A checked float64 action row: 20-dim end-effector targets (``"ee"``) with invertible 6D
    rotations, or 14-dim joints (``"joint"``); raises ``ValueError`` naming the problem."""
    return checked_action(action, action_mode)[0]


def checked_action(action, action_mode: str = "ee") -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """:func:`validate_action`, also returning each arm's target rotation matrix (``"ee"``; None
    for joints), which the check computes anyway."""
    a = np.asarray(action, dtype=np.float64)
    expected = (ACTION_DIM,) if action_mode == "ee" else (JOINT_DIM,)
    if a.shape != expected:
        raise ValueError(f"action must have shape {expected} ({action_mode} mode), got {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"action contains NaN or inf at indices {np.flatnonzero(~np.isfinite(a)).tolist()}")
    if action_mode != "ee":
        return a, None
    rotations = {}
    for i, arm in enumerate(ARMS):
        try:
            rotations[arm] = _r6_row_to_matrix(a[i * ARM_DIM + 3: i * ARM_DIM + 9])
        except ValueError as e:
            raise ValueError(f"{arm} arm rotation is invalid: {e}") from None
    return a, rotations
