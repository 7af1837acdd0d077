"""Shared test data: smooth random 20-dim pose trajectories."""

import numpy as np
from scipy.spatial.transform import Rotation

from envs.geometry import GRIP, POS, ROT6, arm_slice, matrix_to_r6


def random_trajectory(rng: np.random.Generator, n: int = 40) -> np.ndarray:
    """A smooth random correction: positions on a curve, rotations slerped, gripper ramp."""
    t = np.linspace(0, 1, n)
    rows = np.empty((n, 20))
    for arm in ("left", "right"):
        s = arm_slice(arm)
        c = rng.normal(0, 0.1, (3, 3))
        rows[:, s][:, POS] = c[0] + np.outer(t, c[1]) + np.outer(t ** 2, c[2])
        r0, r1 = Rotation.random(2, random_state=rng.integers(1 << 30))
        rots = Rotation.from_rotvec(np.outer(t, (r0.inv() * r1).as_rotvec()))
        rows[:, s][:, ROT6] = matrix_to_r6((r0 * rots).as_matrix())
        rows[:, s][:, GRIP] = t
    return rows
