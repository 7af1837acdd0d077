"""Dobot Nova arm kinematics from the standard DH table (docs/platform.md §Arms).

The MuJoCo model in :mod:`envs.xtrainer` is *built* from these parameters; the forward
kinematics here is an independent reference used by tests and by the real-robot backend.
Joint values ``q`` are the controller's joint readings (radians); the DH angle of each joint
is ``q + offset`` (J2 and J4 carry a -pi/2 offset).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOOL_OFFSET_M = 0.197  # SetTool(1,{0,0,197,0,0,0}): tool point along the flange z axis


@dataclass(frozen=True)
class ArmSpec:
    """Standard DH parameters (metres, radians) and joint limits of one Dobot Nova model."""

    name: str
    d: tuple[float, ...]
    a: tuple[float, ...]
    alpha: tuple[float, ...]
    offset: tuple[float, ...]
    limits_deg: tuple[tuple[float, float], ...]
    robot_type: int  # RobotType byte of the feedback packet


_HALF_PI = np.pi / 2
_LIMITS = ((-360, 360), (-180, 180), (-160, 160), (-360, 360), (-360, 360), (-360, 360))

NOVA2 = ArmSpec(
    name="nova2",
    d=(0.2234, 0.0, 0.0, 0.1175, 0.120, 0.088),
    a=(0.0, -0.280, -0.225, 0.0, 0.0, 0.0),
    alpha=(_HALF_PI, 0.0, 0.0, _HALF_PI, -_HALF_PI, 0.0),
    offset=(0.0, -_HALF_PI, 0.0, -_HALF_PI, 0.0, 0.0),
    limits_deg=_LIMITS,
    robot_type=101,
)

# Nova 5 differs only in link lengths: a parameter change, not a second model file.
NOVA5 = ArmSpec(
    name="nova5",
    d=(0.240, 0.0, 0.0, 0.135, 0.120, 0.088),
    a=(0.0, -0.400, -0.330, 0.0, 0.0, 0.0),
    alpha=NOVA2.alpha,
    offset=NOVA2.offset,
    limits_deg=_LIMITS,
    robot_type=103,
)

ARM_SPECS = {"nova2": NOVA2, "nova5": NOVA5}


def dh_transform(theta: float, d: float, a: float, alpha: float) -> np.ndarray:
    """Standard DH link transform ``Rz(theta) Tz(d) Tx(a) Rx(alpha)``."""
    ct, st, ca, sa = np.cos(theta), np.sin(theta), np.cos(alpha), np.sin(alpha)
    return np.array(
        [
            [ct, -st * ca, st * sa, a * ct],
            [st, ct * ca, -ct * sa, a * st],
            [0.0, sa, ca, d],
            [0.0, 0.0, 0.0, 1.0],
        ]
    )


def forward_kinematics(q: np.ndarray, spec: ArmSpec = NOVA2, tool: float = TOOL_OFFSET_M) -> np.ndarray:
    """4x4 pose of the tool point in the arm's base frame for joint readings ``q`` (rad)."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape != (6,):
        raise ValueError(f"expected 6 joint values, got shape {q.shape}")
    T = np.eye(4)
    for i in range(6):
        T = T @ dh_transform(q[i] + spec.offset[i], spec.d[i], spec.a[i], spec.alpha[i])
    tool_T = np.eye(4)
    tool_T[2, 3] = tool
    return T @ tool_T
