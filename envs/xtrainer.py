"""MJCF model of the Dobot X-Trainer bench, authored from primitives (docs/platform.md §Arms, §Bench layout,
§Cameras, §MuJoCo).

Two Nova arms are built link by link from the DH table of :mod:`envs.kinematics`, so the
model's tool site matches the DH chain by construction (and a test checks it). Every link
body sits at the previous DH frame rotated by the joint offset, the hinge turns about its
local z axis, and the next body is placed at ``Tz(d) Tx(a) Rx(alpha)``: MuJoCo's joint
value is the controller's joint reading ``q``.

Tasks add objects through a :class:`SceneFragment`; the bench itself is shared.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from envs.geometry import ARMS, matrix_to_quat, rot_x, rot_z
from envs.kinematics import ARM_SPECS, TOOL_OFFSET_M, ArmSpec

FINGER_TRAVEL_M = 0.04  # per finger; gripper scalar 1 = fully open
CAMERAS = ("top", "left_wrist", "right_wrist")
HOME_DEG = {"left": (-90, 0, -90, 0, 90, 90), "right": (90, 0, 90, 0, -90, -90)}
# The X-Trainer software only accepts elbow-up solutions: left J3 < 0, right J3 > 0.
J3_SIGN = {"left": -1.0, "right": 1.0}
# Contact groups: arm links hit the table and objects but not each other.
_ARM_CONTACT = 'contype="2" conaffinity="0"'
_OBJECT_CONTACT = 'contype="1" conaffinity="3"'


@dataclass(frozen=True)
class BenchConfig:
    """Plain-data description of the simulated bench."""

    arm: str = "nova2"
    base_separation_m: float = 1.06
    table_size_m: tuple[float, float] = (1.40, 0.96)
    table_height_m: float = 0.75
    table_center_y_m: float = -0.12
    control_hz: float = 30.0
    max_timestep_s: float = 0.002
    camera_hfov_deg: float = 69.0
    max_render_size: tuple[int, int] = (640, 480)
    # Finger position servo. The default is a soft servo that holds a grasped part with the spring
    # force of its position error. A force-clamped stiff servo (e.g. finger_kp=3000,
    # finger_force_n=12), closer to the Feetech at its 30 % torque limit (docs/platform.md §Grippers), also lets the
    # scripted expert succeed (100/100 ID, 99/100 OOD), but a base trained on its demonstrations
    # scored no better (results/usb/explore/README.md), so the default stays where the committed
    # results were made.
    finger_kp: float = 400.0
    finger_force_n: float = 25.0

    @property
    def arm_spec(self) -> ArmSpec:
        if self.arm not in ARM_SPECS:
            raise ValueError(f"unknown arm model {self.arm!r}; valid: {sorted(ARM_SPECS)}")
        return ARM_SPECS[self.arm]

    @property
    def substeps(self) -> int:
        """Physics steps per control step, so that the timestep is <= ``max_timestep_s``."""
        return int(np.ceil(1.0 / (self.control_hz * self.max_timestep_s) - 1e-9))

    @property
    def timestep(self) -> float:
        return 1.0 / (self.control_hz * self.substeps)

    def base_pose(self, arm: str) -> tuple[np.ndarray, np.ndarray]:
        """World position and rotation of an arm's base frame (bases face each other across x)."""
        sign = -1.0 if arm == "left" else 1.0
        pos = np.array([sign * self.base_separation_m / 2, 0.0, self.table_height_m])
        yaw = np.pi / 2 if arm == "left" else -np.pi / 2
        return pos, rot_z(yaw)


@dataclass
class SceneFragment:
    """MJCF pieces a task adds to the bench (strings are inserted verbatim)."""

    assets: str = ""
    worldbody: str = ""
    contact: str = ""
    equality: str = ""
    option: dict[str, str] = field(default_factory=dict)


def _f(x) -> str:
    return " ".join(f"{v:.10g}" for v in np.ravel(x))


def _segment_geoms(prefix: str, i: int, d: float, a: float, radius: float) -> str:
    """Capsules along the DH link: ``(0,0,0) -> (0,0,d) -> (a,0,d)`` in the post-joint frame."""
    out = []
    if abs(d) > 1e-6:
        out.append(f'<geom name="{prefix}link{i}_d" type="capsule" fromto="0 0 0 0 0 {d:.6g}" size="{radius}" {_ARM_CONTACT} class="arm"/>')
    if abs(a) > 1e-6:
        out.append(f'<geom name="{prefix}link{i}_a" type="capsule" fromto="0 0 {d:.6g} {a:.6g} 0 {d:.6g}" size="{radius}" {_ARM_CONTACT} class="arm"/>')
    if not out:  # keep a joint housing so the link has mass and is visible
        out.append(f'<geom name="{prefix}link{i}_h" type="sphere" size="{radius}" {_ARM_CONTACT} class="arm"/>')
    return "\n".join(out)


def _gripper(prefix: str) -> str:
    """Parallel two-finger gripper on the flange; fingers slide along flange x, the wrist camera sits on -y."""
    cam_q = matrix_to_quat(rot_x(np.pi - np.deg2rad(15.0)))  # looks along +z, tilted toward the fingers
    tip = TOOL_OFFSET_M
    return f"""
      <body name="{prefix}hand" gravcomp="1">
        <geom name="{prefix}palm" type="box" size="0.035 0.02 0.025" pos="0 0 0.045" {_OBJECT_CONTACT} class="grip"/>
        <geom name="{prefix}rail" type="box" size="0.058 0.012 0.008" pos="0 0 0.078" {_OBJECT_CONTACT} class="grip"/>
        <site name="{prefix}tool" pos="0 0 {tip}" size="0.006" rgba="1 0.2 0.2 1" group="3"/>
        <camera name="{prefix}wrist" pos="0 -0.065 0.03" quat="{_f(cam_q)}" fovy="69"/>
        <body name="{prefix}finger_a" pos="0.006 0 0">
          <joint name="{prefix}finger_a" type="slide" axis="1 0 0" range="0 {FINGER_TRAVEL_M}" class="finger"/>
          <geom name="{prefix}finger_a" type="box" size="0.006 0.011 0.055" pos="0 0 {tip - 0.047:.4f}" class="pad"/>
        </body>
        <body name="{prefix}finger_b" pos="-0.006 0 0">
          <joint name="{prefix}finger_b" type="slide" axis="-1 0 0" range="0 {FINGER_TRAVEL_M}" class="finger"/>
          <geom name="{prefix}finger_b" type="box" size="0.006 0.011 0.055" pos="0 0 {tip - 0.047:.4f}" class="pad"/>
        </body>
      </body>"""


def _arm(cfg: BenchConfig, arm: str) -> str:
    spec = cfg.arm_spec
    p = f"{arm}/"
    pos, R = cfg.base_pose(arm)
    radii = (0.05, 0.045, 0.04, 0.035, 0.035, 0.032)
    lo_hi = [np.deg2rad(lim) for lim in spec.limits_deg]
    # J3 sign rule of the X-Trainer software, kept 1 degree away from the singular stretch.
    eps = np.deg2rad(1.0)
    lo_hi[2] = np.array([-lo_hi[2][1], -eps]) if J3_SIGN[arm] < 0 else np.array([eps, lo_hi[2][1]])

    xml = [f'<body name="{p}base" pos="{_f(pos)}" quat="{_f(matrix_to_quat(R))}">',
           f'<geom name="{p}pedestal" type="cylinder" size="0.065 0.03" pos="0 0 0.03" contype="0" conaffinity="0" class="arm"/>']
    prev_quat = rot_z(spec.offset[0])
    prev_pos = np.zeros(3)
    for i in range(6):
        xml.append(f'<body name="{p}link{i + 1}" pos="{_f(prev_pos)}" quat="{_f(matrix_to_quat(prev_quat))}" gravcomp="1">')
        xml.append(f'<joint name="{p}j{i + 1}" range="{_f(lo_hi[i])}" class="arm_joint"/>')
        xml.append(_segment_geoms(p, i + 1, spec.d[i], spec.a[i], radii[i]))
        if i < 5:
            prev_pos = np.array([spec.a[i], 0.0, spec.d[i]])
            prev_quat = rot_x(spec.alpha[i]) @ rot_z(spec.offset[i + 1])
    # Flange frame: Tz(d6) Tx(a6) Rx(alpha6) of the last link.
    xml.append(f'<body name="{p}flange" pos="{spec.a[5]:.6g} 0 {spec.d[5]:.6g}" quat="{_f(matrix_to_quat(rot_x(spec.alpha[5])))}">')
    xml.append(_gripper(p))
    xml.append("</body>")
    xml.append("</body>" * 6)
    xml.append("</body>")
    return "\n".join(xml)


def _actuators(cfg: BenchConfig) -> str:
    out = []
    for arm in ARMS:
        p = f"{arm}/"
        for i in range(6):
            cls = "servo_big" if i < 3 else "servo_small"
            out.append(f'<position name="{p}j{i + 1}" joint="{p}j{i + 1}" class="{cls}"/>')
        for f in ("a", "b"):
            out.append(f'<position name="{p}finger_{f}" joint="{p}finger_{f}" class="finger_servo"/>')
    return "\n".join(out)


def _top_camera(cfg: BenchConfig) -> str:
    """Top camera between the arms on the operator side (-y), looking down at the work area."""
    eye = np.array([0.0, cfg.table_center_y_m - 0.38, cfg.table_height_m + 0.78])
    target = np.array([0.0, cfg.table_center_y_m + 0.06, cfg.table_height_m])
    z = eye - target
    z /= np.linalg.norm(z)
    x = np.array([1.0, 0.0, 0.0])
    y = np.cross(z, x)
    return f'<camera name="top" pos="{_f(eye)}" xyaxes="{_f(x)} {_f(y)}" fovy="69"/>'


def build_xml(cfg: BenchConfig = BenchConfig(), scene: SceneFragment | None = None) -> str:
    """Complete MJCF for the bench plus an optional task scene."""
    scene = scene or SceneFragment()
    tx, ty = cfg.table_size_m
    th = cfg.table_height_m
    w, h = cfg.max_render_size
    option = {"timestep": f"{cfg.timestep:.10g}", "integrator": "implicitfast", "cone": "elliptic",
              "impratio": "10", **scene.option}
    option_attrs = " ".join(f'{k}="{v}"' for k, v in option.items())
    return f"""<mujoco model="xtrainer_{cfg.arm}">
  <compiler angle="radian" autolimits="true"/>
  <option {option_attrs}/>
  <visual>
    <global offwidth="{w}" offheight="{h}"/>
    <quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.5 0.5 0.5" specular="0 0 0"/>
  </visual>
  <default>
    <default class="arm"><geom rgba="0.85 0.86 0.88 1" density="600"/></default>
    <default class="grip"><geom rgba="0.2 0.2 0.22 1" density="400"/></default>
    <default class="pad"><geom rgba="0.1 0.1 0.1 1" condim="4" friction="1.5 0.02 0.002" density="400" {_OBJECT_CONTACT}/></default>
    <default class="arm_joint"><joint type="hinge" axis="0 0 1" damping="2" armature="0.05"/></default>
    <default class="finger"><joint damping="5" armature="0.01"/></default>
    <default class="servo_big"><position kp="2500" dampratio="1" forcerange="-200 200"/></default>
    <default class="servo_small"><position kp="800" dampratio="1" forcerange="-60 60"/></default>
    <default class="finger_servo"><position kp="{cfg.finger_kp:g}" dampratio="1" forcerange="{-cfg.finger_force_n:g} {cfg.finger_force_n:g}" ctrlrange="0 {FINGER_TRAVEL_M}"/></default>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1="0.32 0.34 0.36" rgb2="0.28 0.3 0.32" width="64" height="64"/>
    <material name="floor" texture="grid" texrepeat="8 8"/>
    {scene.assets}
  </asset>
  <worldbody>
    <light name="sun" directional="true" pos="0 -0.5 2.5" dir="0 0.2 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <geom name="floor" type="plane" size="3 3 0.05" material="floor" contype="0" conaffinity="0"/>
    <geom name="table" type="box" size="{tx / 2} {ty / 2} {th / 2}" pos="0 {cfg.table_center_y_m} {th / 2}" rgba="0.55 0.45 0.35 1" {_OBJECT_CONTACT}/>
    {_top_camera(cfg)}
    {_arm(cfg, "left")}
    {_arm(cfg, "right")}
    {scene.worldbody}
  </worldbody>
  <contact>
    <exclude body1="left/finger_a" body2="left/finger_b"/>
    <exclude body1="right/finger_a" body2="right/finger_b"/>
    {scene.contact}
  </contact>
  <equality>{scene.equality}</equality>
  <actuator>
{_actuators(cfg)}
  </actuator>
</mujoco>"""


def fingerprint(xml: str) -> str:
    """Identity of a model (its MJCF and the MuJoCo version); snapshots carry it."""
    import mujoco

    return hashlib.sha256(f"{mujoco.__version__}\n{xml}".encode()).hexdigest()[:16]


def home_qpos(arm: str) -> np.ndarray:
    return np.deg2rad(np.array(HOME_DEG[arm], dtype=np.float64))
