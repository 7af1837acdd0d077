"""USB: the left arm lifts a power strip to a holding pose; the right arm picks a USB lamp
standing in a pen holder and inserts its plug into the strip's socket (docs/platform.md §USB, paper App. H).

Plug and socket are box primitives with sub-millimetre clearance (default 0.5 mm per side),
stiff contacts and ``margin = 0`` (docs/platform.md §Tight insertion). By default the socket
mouth has a 3 mm, 45-degree lead-in, as real receptacles flare: its slopes guide a plug 1.5 mm
off-axis in. The tighter flat-bezel socket, ``UsbTask(clearance_m=0.0003, lead_m=0.0)`` (the task
variant ``usb:clearance_m=0.0003,lead_m=0.0`` on a ``--task``, :class:`~envs.tasks.base.TaskSpec`),
stops such a plug on the bezel; no policy trained here has mastered it (results/usb/explore).
Everything the expert, the success predicate and the failure predicates use is privileged simulator state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mujoco
import numpy as np

from envs.geometry import geodesic_angle
from envs.tasks.base import Task, check_split, register_task
from envs.xtrainer import SceneFragment

# --- geometry (metres) -----------------------------------------------------------------
PLUG_HALF = np.array([0.00225, 0.006, 0.006])  # USB-A: 4.5 x 12 mm section, 12 mm long
SOCKET_DEPTH = 0.012
STRIP_HALF = np.array([0.10, 0.025, 0.0175])
SOCKET_X = 0.06  # socket centre along the strip, in the strip frame
PAD_HALF = np.array([0.11, 0.04, 0.0125])  # raised marker region the strip rests on
LAMP_BODY_HALF = np.array([0.009, 0.009, 0.045])
LAMP_TOP = 2 * PLUG_HALF[2] + 2 * LAMP_BODY_HALF[2]  # lamp frame origin = plug tip
CUP_INNER_HALF = 0.0125
CUP_WALL = 0.004
CUP_HEIGHT = 0.05
CUP_FLOOR = 0.006
STIFF = 'solref="0.004 1" solimp="0.99 0.999 0.0001" margin="0" gap="0"'

# --- predicates --------------------------------------------------------------------------
SEATED_TOL = 0.001  # seated: depth >= SOCKET_DEPTH - 1 mm
AXIS_TOL_RAD = np.deg2rad(5.0)
TILTED_ENTRY_RAD = np.deg2rad(2.0)
STALL_WINDOW_S = 2.0
STALL_PROGRESS_M = 0.0005
FINE_SCALE_M, APPROACH_SCALE_M = 0.002, 0.02  # radii of the clipped insertion offsets (privileged_state)

# --- initial-state distributions (world frame; table top at z = 0.75) -------------------
_ID = {"strip_x": (-0.26, -0.16), "strip_y": (-0.22, -0.10), "strip_yaw": (-0.35, 0.35),
       "holder_x": (0.16, 0.26), "holder_y": (-0.22, -0.10), "holder_yaw": (-0.6, 0.6)}
_OOD = {"strip_x": (-0.32, -0.10), "strip_y": (-0.28, -0.04), "strip_yaw": (-0.7, 0.7),
        "holder_x": (0.10, 0.32), "holder_y": (-0.28, -0.04), "holder_yaw": (-1.2, 1.2)}


def _box(name: str, half, pos, extra: str = "") -> str:
    return (f'<geom name="{name}" type="box" size="{half[0]:.6g} {half[1]:.6g} {half[2]:.6g}" '
            f'pos="{pos[0]:.6g} {pos[1]:.6g} {pos[2]:.6g}" {extra}/>')


def _walls(sx: float, hx: float, hy: float, shx: float, shy: float, z0: float, z1: float, back: float,
           extra: str) -> list[str]:
    """The strip's walls around the socket opening (half sizes ``shx`` x ``shy`` at ``sx``) between
    heights ``z0`` and ``z1``, set back from the opening by ``back``."""
    c, h = (z0 + z1) / 2, (z1 - z0) / 2
    left_len, right_len = (sx - shx - back) + hx, hx - (sx + shx + back)
    side_len = hy - shy - back
    return [_box("strip_left", (left_len / 2, hy, h), (-hx + left_len / 2, 0, c), extra),
            _box("strip_right", (right_len / 2, hy, h), (hx - right_len / 2, 0, c), extra),
            _box("strip_front", (shx + back, side_len / 2, h), (sx, -hy + side_len / 2, c), extra),
            _box("strip_back", (shx + back, side_len / 2, h), (sx, hy - side_len / 2, c), extra)]


def _socket_ring(sx: float, shx: float, shy: float, width: float, z0: float, z1: float, extra: str) -> list[str]:
    """Four boxes ``width`` wide around the opening (half sizes ``shx`` x ``shy`` at ``sx``) between
    heights ``z0`` and ``z1``: the socket's sides below a lead-in."""
    if width <= 0:
        return []
    c, h, w = (z0 + z1) / 2, (z1 - z0) / 2, width / 2
    return [_box("socket_side_nx", (w, shy + width, h), (sx - shx - w, 0, c), extra),
            _box("socket_side_px", (w, shy + width, h), (sx + shx + w, 0, c), extra),
            _box("socket_side_ny", (shx, w, h), (sx, -shy - w, c), extra),
            _box("socket_side_py", (shx, w, h), (sx, shy + w, c), extra)]


def _lead_in(sx: float, hz: float, shx: float, shy: float, lead: float, extra: str) -> list[str]:
    """A 45-degree chamfer ``lead`` wide and deep around the socket mouth (strip frame), as a real
    socket's lead-in: a plug misaligned by less than ``lead`` meets a slope that guides it in
    instead of the flat bezel. Four plates; each one's inner face runs from its edge of the opening
    at depth ``lead`` up to the bezel, ``lead`` further out; the rest of each plate lies inside the
    walls, so the opening below the chamfer is unchanged."""
    if lead <= 0:
        return []
    face, t = lead * np.sqrt(2), 0.001  # plate length along the slope, thickness
    out = []
    for name, edge, u, n, half, euler in (
            ("px", (sx + shx, 0), (1, 0, 1), (1, 0, -1), (face / 2, shy + lead, t / 2), (0, -np.pi / 4, 0)),
            ("nx", (sx - shx, 0), (-1, 0, 1), (-1, 0, -1), (face / 2, shy + lead, t / 2), (0, np.pi / 4, 0)),
            ("py", (sx, shy), (0, 1, 1), (0, 1, -1), (shx + lead, face / 2, t / 2), (np.pi / 4, 0, 0)),
            ("ny", (sx, -shy), (0, -1, 1), (0, -1, -1), (shx + lead, face / 2, t / 2), (-np.pi / 4, 0, 0))):
        u, n = np.array(u) / np.sqrt(2), np.array(n) / np.sqrt(2)
        centre = np.array([edge[0], edge[1], hz - lead]) + u * face / 2 + n * t / 2
        out.append(_box(f"socket_lead_{name}", half, centre, f'euler="{euler[0]:.6g} {euler[1]:.6g} {euler[2]:.6g}" {extra}'))
    return out


def pose_of(data: mujoco.MjData, body_id: int) -> np.ndarray:
    """4x4 world pose of a body."""
    return _pose(data.xmat[body_id], data.xpos[body_id])


def site_pose(data: mujoco.MjData, site_id: int) -> np.ndarray:
    """4x4 world pose of a site."""
    return _pose(data.site_xmat[site_id], data.site_xpos[site_id])


def _pose(xmat: np.ndarray, xpos: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = xmat.reshape(3, 3)
    T[:3, 3] = xpos
    return T


@dataclass(frozen=True)
class PlugState:
    """The plug tip in the socket frame (z out of the socket, origin at the mouth centre)."""

    lateral: np.ndarray  # (x, y) offset of the tip from the socket axis
    depth: float  # how far the tip is below the mouth (negative: above)
    tilt: float  # angle between plug axis and socket axis


@dataclass(frozen=True)
class UsbView:
    """What the USB predicates read of one state, taken once per control step."""

    plug: PlugState
    fingers_on: dict[str, int]  # "strip": left fingers touching the strip; "lamp": right fingers on the lamp
    plug_on_strip: bool
    strip_lifted: bool
    lamp_out_of_holder: bool
    success: bool  # is_success's predicate on ``plug``

    def held(self, obj: str) -> bool:
        return self.fingers_on[obj] == 2


@register_task
class UsbTask(Task):
    name = "usb"
    title = "USB"
    instruction = "pick up the power strip and plug the USB lamp into it"
    time_limit_s = 40.0
    success_hold_s = 0.5
    terminal_failures = frozenset({"strip_dropped", "lamp_dropped"})
    stages = ("grasp", "lift", "align", "insert", "seated")

    def __init__(self, clearance_m: float = 0.0005, lead_m: float = 0.003):
        if not 0 < clearance_m < 0.003:
            raise ValueError(f"clearance_m must be in (0, 3 mm), got {clearance_m}")
        if not 0 <= lead_m <= 0.006:
            raise ValueError(f"lead_m must be in [0, 6 mm], got {lead_m}")
        self.clearance = clearance_m
        self.lead = lead_m  # > 0: a 45-degree lead-in this wide around the socket mouth (0: a flat bezel)

    # ------------------------------------------------------------------ scene
    def scene(self) -> SceneFragment:
        c = self.clearance
        shx, shy = PLUG_HALF[0] + c, PLUG_HALF[1] + c  # socket opening half sizes
        sx, hx, hy, hz = SOCKET_X, *STRIP_HALF
        floor_z = hz - SOCKET_DEPTH
        strip_rgba = 'rgba="0.93 0.93 0.9 1"'
        mate = f'{STIFF} {strip_rgba} contype="1" conaffinity="3" density="300" friction="0.3 0.005 0.0001"'
        lead = self.lead
        strip = "\n".join([
            _box("strip_base", (hx, hy, (floor_z + hz) / 2), (0, 0, (floor_z - hz) / 2), mate),
            # The walls around the opening. With a lead-in they stand back `lead` from it, a ring
            # `lead` wide fills the gap below the chamfer and the 45-degree plates of _lead_in
            # cover the chamfer. The walls stay whole boxes: a seam across the faces the left
            # gripper holds made the strip slip in the expert's hand (6/100 dropped).
            *_walls(sx, hx, hy, shx, shy, floor_z, hz, lead, mate),
            *_socket_ring(sx, shx, shy, lead, floor_z, hz - lead, mate),
            # decorative outlets and switch (no collision)
            *[_box(f"strip_outlet{i}", (0.008, 0.008, 0.0005), (x, 0, hz), 'rgba="0.2 0.2 0.2 1" contype="0" conaffinity="0" mass="0"')
              for i, x in enumerate((-0.055, -0.015))],
            _box("strip_switch", (0.006, 0.01, 0.001), (-0.085, 0, hz), 'rgba="0.85 0.1 0.1 1" contype="0" conaffinity="0" mass="0"'),
            f'<site name="socket" pos="{sx} 0 {hz}" size="0.002" rgba="0 0.6 1 1" group="3"/>',
            *_lead_in(sx, hz, shx, shy, lead, mate),
        ])
        cup_rgba = 'rgba="0.25 0.45 0.75 1"'
        ci, cw = CUP_INNER_HALF, CUP_WALL
        wall_h = CUP_HEIGHT / 2
        cup = "\n".join([
            _box("holder_floor", (ci + cw, ci + cw, CUP_FLOOR / 2), (0, 0, CUP_FLOOR / 2), cup_rgba),
            _box("holder_wall_px", (cw / 2, ci + cw, wall_h), (ci + cw / 2, 0, wall_h), cup_rgba),
            _box("holder_wall_nx", (cw / 2, ci + cw, wall_h), (-ci - cw / 2, 0, wall_h), cup_rgba),
            _box("holder_wall_py", (ci, cw / 2, wall_h), (0, ci + cw / 2, wall_h), cup_rgba),
            _box("holder_wall_ny", (ci, cw / 2, wall_h), (0, -ci - cw / 2, wall_h), cup_rgba),
        ])
        body_c = 2 * PLUG_HALF[2] + LAMP_BODY_HALF[2]
        lamp = "\n".join([
            _box("plug", PLUG_HALF, (0, 0, PLUG_HALF[2]), f'{STIFF} rgba="0.75 0.75 0.78 1" density="2000" friction="0.3 0.005 0.0001"'),
            _box("lamp_body", LAMP_BODY_HALF, (0, 0, body_c), 'rgba="0.95 0.85 0.2 1" density="400"'),
            _box("lamp_led", (0.0085, 0.0085, 0.003), (0, 0, LAMP_TOP - 0.003), 'rgba="1 1 0.85 1" contype="0" conaffinity="0" mass="0"'),
            '<site name="plug_tip" pos="0 0 0" size="0.002" group="3"/>',
        ])
        worldbody = f"""
    <body name="strip_pad" mocap="true" pos="-0.2 -0.15 {0.75 + PAD_HALF[2]}">
      {_box("strip_pad", PAD_HALF, (0, 0, 0), 'rgba="0.35 0.6 0.35 1"')}
    </body>
    <body name="holder" mocap="true" pos="0.2 -0.15 0.75">
      {cup}
    </body>
    <body name="strip" pos="-0.2 -0.15 {0.75 + 2 * PAD_HALF[2] + STRIP_HALF[2]}">
      <freejoint name="strip"/>
      {strip}
    </body>
    <body name="lamp" pos="0.2 -0.15 {0.75 + CUP_FLOOR}">
      <freejoint name="lamp"/>
      {lamp}
    </body>"""
        return SceneFragment(worldbody=worldbody)

    def bind(self, model: mujoco.MjModel, control_dt: float) -> None:
        self.control_dt = control_dt
        self.table_z = float(model.geom("table").size[2] * 2)
        self.strip_id, self.lamp_id = model.body("strip").id, model.body("lamp").id
        self.pad_mocap = model.body_mocapid[model.body("strip_pad").id]
        self.holder_mocap = model.body_mocapid[model.body("holder").id]
        self.strip_qadr = model.joint("strip").qposadr[0]
        self.lamp_qadr = model.joint("lamp").qposadr[0]
        self.socket_site, self.plug_site = model.site("socket").id, model.site("plug_tip").id
        self.plug_geom = model.geom("plug").id
        geoms_of = lambda body: {g for g in range(model.ngeom) if model.geom_bodyid[g] == body and model.geom_contype[g]}
        self.strip_geoms = geoms_of(self.strip_id)
        self.lamp_geoms = geoms_of(self.lamp_id)
        self.finger_geoms = {a: {model.geom(f"{a}/finger_{f}").id for f in "ab"} for a in ("left", "right")}
        self.finger_qadr = {a: [model.joint(f"{a}/finger_{f}").qposadr[0] for f in "ab"] for a in ("left", "right")}
        self.finger_dof = {a: [model.joint(f"{a}/finger_{f}").dofadr[0] for f in "ab"] for a in ("left", "right")}
        self.finger_act = {a: [model.actuator(f"{a}/finger_{f}").id for f in "ab"] for a in ("left", "right")}
        self.tool_site = {a: model.site(f"{a}/tool").id for a in ("left", "right")}
        self.strip_rest_z = self.table_z + 2 * PAD_HALF[2] + STRIP_HALF[2]

    # ------------------------------------------------------------------ initial states
    def sample_initial_state(self, rng: np.random.Generator, split: str) -> dict[str, float]:
        ranges = _ID if check_split(split) == "id" else _OOD
        for _ in range(1000):
            init = {k: float(rng.uniform(lo, hi)) for k, (lo, hi) in ranges.items()}
            init["lamp_yaw_offset"] = float(rng.uniform(-0.08, 0.08))
            inside_id = all(_ID[k][0] <= init[k] <= _ID[k][1] for k in ("strip_x", "strip_y", "holder_x", "holder_y"))
            if split == "id" or not inside_id:  # OOD excludes the ID box
                return init
        raise RuntimeError("could not sample an OOD initial state")

    def apply_initial_state(self, model, data, init) -> None:
        z = self.table_z
        data.mocap_pos[self.pad_mocap] = [init["strip_x"], init["strip_y"], z + PAD_HALF[2]]
        data.mocap_quat[self.pad_mocap] = _yaw_quat(init["strip_yaw"])
        data.mocap_pos[self.holder_mocap] = [init["holder_x"], init["holder_y"], z]
        data.mocap_quat[self.holder_mocap] = _yaw_quat(init["holder_yaw"])
        a = self.strip_qadr
        data.qpos[a:a + 3] = [init["strip_x"], init["strip_y"], self.strip_rest_z]
        data.qpos[a + 3:a + 7] = _yaw_quat(init["strip_yaw"])
        a = self.lamp_qadr
        data.qpos[a:a + 3] = [init["holder_x"], init["holder_y"], z + CUP_FLOOR]
        data.qpos[a + 3:a + 7] = _yaw_quat(init["holder_yaw"] + init["lamp_yaw_offset"])

    # ------------------------------------------------------------------ privileged queries
    def socket_pose(self, data: mujoco.MjData) -> np.ndarray:
        """Socket frame: origin at the mouth centre, z out of the socket."""
        return site_pose(data, self.socket_site)

    def plug_pose(self, data: mujoco.MjData) -> np.ndarray:
        """Plug frame: origin at the tip centre, z along the lamp."""
        return site_pose(data, self.plug_site)

    def plug_state(self, data: mujoco.MjData) -> PlugState:
        return plug_in_socket(self.socket_pose(data), self.plug_pose(data))

    def contacts(self, data: mujoco.MjData, geoms_a: set[int], geoms_b: set[int]) -> set[int]:
        """Geoms of ``geoms_a`` touching any geom of ``geoms_b``."""
        if data.ncon == 0:
            return set()
        pairs = data.contact.geom  # (ncon, 2), fetched once: per-contact attribute access is slow
        hit = set()
        for g1, g2 in pairs.tolist():
            if g1 in geoms_a and g2 in geoms_b:
                hit.add(g1)
            elif g2 in geoms_a and g1 in geoms_b:
                hit.add(g2)
        return hit

    def held(self, data: mujoco.MjData, arm: str, obj: str) -> bool:
        """Both fingers of ``arm`` touch the object."""
        geoms = self.strip_geoms if obj == "strip" else self.lamp_geoms
        return len(self.contacts(data, self.finger_geoms[arm], geoms)) == 2

    def gripper_opening(self, data: mujoco.MjData, arm: str) -> float:
        return float(np.mean(data.qpos[self.finger_qadr[arm]]))

    def object_pose(self, data: mujoco.MjData, obj: str) -> np.ndarray:
        return pose_of(data, self.strip_id if obj == "strip" else self.lamp_id)

    def tool_pose(self, data: mujoco.MjData, arm: str) -> np.ndarray:
        return site_pose(data, self.tool_site[arm])

    def strip_lifted(self, data: mujoco.MjData) -> bool:
        return data.xpos[self.strip_id][2] > self.strip_rest_z + 0.02

    def lamp_out_of_holder(self, data: mujoco.MjData) -> bool:
        return data.xpos[self.lamp_id][2] > self.table_z + CUP_HEIGHT + 0.005

    def _tilt(self, data, body_id) -> float:
        return float(np.arccos(np.clip(data.xmat[body_id][8], -1, 1)))

    # ------------------------------------------------------------------ task predicates
    def view(self, data: mujoco.MjData) -> UsbView:
        # One pass over the contacts for what three `contacts` calls would find: the left fingers on
        # the strip, the right fingers on the lamp, the plug on the strip.
        left_on_strip, right_on_lamp, plug_on_strip = set(), set(), False
        if data.ncon:
            fl, fr, sg, lg, pg = (self.finger_geoms["left"], self.finger_geoms["right"], self.strip_geoms,
                                  self.lamp_geoms, self.plug_geom)
            for g1, g2 in data.contact.geom.tolist():
                if g1 in fl and g2 in sg:
                    left_on_strip.add(g1)
                elif g2 in fl and g1 in sg:
                    left_on_strip.add(g2)
                if g1 in fr and g2 in lg:
                    right_on_lamp.add(g1)
                elif g2 in fr and g1 in lg:
                    right_on_lamp.add(g2)
                if (g1 == pg and g2 in sg) or (g2 == pg and g1 in sg):
                    plug_on_strip = True
        plug = self.plug_state(data)
        return UsbView(plug=plug, fingers_on={"strip": len(left_on_strip), "lamp": len(right_on_lamp)},
                       plug_on_strip=plug_on_strip, strip_lifted=self.strip_lifted(data),
                       lamp_out_of_holder=self.lamp_out_of_holder(data), success=self._seated(plug))

    def is_success(self, data, view: UsbView | None = None) -> bool:
        return view.success if view is not None else self._seated(self.plug_state(data))  # the plug only

    def _seated(self, ps: PlugState) -> bool:
        return (ps.depth >= SOCKET_DEPTH - SEATED_TOL and ps.tilt <= AXIS_TOL_RAD
                and bool(np.all(np.abs(ps.lateral) <= self.clearance + 2e-4)))

    def stage(self, data, memo, view: UsbView | None = None) -> str:
        v = view or self.view(data)
        ps = v.plug
        if self.is_success(data, v):
            return "seated"
        if ps.depth > 0 and bool(np.all(np.abs(ps.lateral) < 0.002)):
            return "insert"
        if v.held("strip") and v.strip_lifted and v.held("lamp") and v.lamp_out_of_holder:
            return "align"
        if v.held("strip") or v.held("lamp"):
            return "lift"
        return "grasp"

    def new_memo(self) -> dict[str, Any]:
        return {"step": 0, "grasp_rel": {}, "best_depth": -np.inf, "best_depth_step": 0}

    def failures(self, data, memo, view: UsbView | None = None) -> list[str]:
        v = view or self.view(data)
        memo["step"] += 1
        out: list[str] = []
        for arm, obj, lifted in (("left", "strip", v.strip_lifted), ("right", "lamp", v.lamp_out_of_holder)):
            held = v.held(obj)
            if self.gripper_opening(data, arm) < 0.004 and not v.fingers_on[obj] and not lifted:
                out.append(f"{obj}_grasp_missed")
            first_hold = held and lifted and obj not in memo["grasp_rel"]
            if not first_hold and obj not in memo["grasp_rel"]:
                continue  # nothing reads the grasp's relative pose
            rel = np.linalg.inv(self.tool_pose(data, arm)) @ self.object_pose(data, obj)
            if first_hold:
                memo["grasp_rel"][obj] = rel
            if obj in memo["grasp_rel"]:
                ref = memo["grasp_rel"][obj]
                moved = np.linalg.norm(rel[:3, 3] - ref[:3, 3]) > 0.01 or geodesic_angle(rel[:3, :3], ref[:3, :3]) > np.deg2rad(10)
                if moved or not held:
                    out.append(f"{obj}_slip")
        if self._strip_dropped(data):
            out.append("strip_dropped")
        if self._lamp_dropped(data):
            out.append("lamp_dropped")
        ps = v.plug
        if v.plug_on_strip and ps.depth <= 0.0005 and np.any(np.abs(ps.lateral) > self.clearance):
            out.append("bezel_contact")
        # At (or in) the socket mouth; a plug below the mouth's plane elsewhere is not entering.
        near_socket = ps.depth > -0.003 and bool(np.all(np.abs(ps.lateral) < 0.004))
        if near_socket and 0.0005 < ps.depth < SOCKET_DEPTH - SEATED_TOL and ps.tilt > TILTED_ENTRY_RAD:
            out.append("tilted_entry")
        # Stalled: the plug sits at the socket and its depth has not grown for a while.
        if not near_socket:
            memo["best_depth"], memo["best_depth_step"] = -np.inf, memo["step"]
        elif ps.depth > memo["best_depth"] + STALL_PROGRESS_M:
            memo["best_depth"], memo["best_depth_step"] = ps.depth, memo["step"]
        elif (not self.is_success(data, v)
              and (memo["step"] - memo["best_depth_step"]) * self.control_dt > STALL_WINDOW_S):
            out.append("stalled")
        return out

    def _strip_dropped(self, data) -> bool:
        z = data.xpos[self.strip_id][2]
        return bool(z < self.strip_rest_z - 0.01 or (self._tilt(data, self.strip_id) > np.deg2rad(45)))

    def _lamp_dropped(self, data) -> bool:
        lamp_xy = data.xpos[self.lamp_id][:2]
        in_holder = np.linalg.norm(lamp_xy - data.mocap_pos[self.holder_mocap][:2]) < CUP_INNER_HALF + 0.01
        low = data.xpos[self.lamp_id][2] < self.table_z + 0.03
        return bool((not in_holder and low) or self._tilt(data, self.lamp_id) > np.deg2rad(60))

    def privileged_state(self, data, view: UsbView | None = None) -> np.ndarray:
        """Object poses (strip and lamp free joints, holder) plus the insertion geometry a
        state-only policy would otherwise have to compose from quaternions: the socket mouth
        and axis, the plug tip and axis (world frame), the tip in the socket frame, and the
        tip's offsets once more at millimetre scale (48 values). ``view``: this state's, for its plug."""
        parts = []
        for qadr in (self.strip_qadr, self.lamp_qadr):
            parts.append(data.qpos[qadr:qadr + 7])
        parts.append(data.mocap_pos[self.holder_mocap])
        parts.append(data.mocap_quat[self.holder_mocap])
        S, P = self.socket_pose(data), self.plug_pose(data)
        ps = view.plug if view is not None else plug_in_socket(S, P)
        parts += [S[:3, 3], S[:3, 2], P[:3, 3], P[:3, 2], ps.lateral, [ps.depth]]
        # The same offsets at the insertion's own scale. A policy normalises each input by its
        # spread over the data set (centimetres to decimetres for these offsets), which leaves a
        # 0.1 mm misalignment a change of 1e-3 in its input; copies clipped to 2 mm and 20 mm keep
        # that resolution at the socket and on the approach. They clip the vector, not each
        # component: far away they are its direction, not components flipping sign at random.
        for offset in (np.array([*ps.lateral, ps.depth]), P[:3, 3] - S[:3, 3]):
            parts += [clip_to_ball(offset, FINE_SCALE_M), clip_to_ball(offset, APPROACH_SCALE_M)]
        return np.concatenate(parts)


def plug_in_socket(S: np.ndarray, P: np.ndarray) -> PlugState:
    """The plug tip frame ``P`` seen from the socket frame ``S`` (4x4 world poses)."""
    rel_p = S[:3, :3].T @ (P[:3, 3] - S[:3, 3])
    rel_R = S[:3, :3].T @ P[:3, :3]
    tilt = float(np.arccos(np.clip(rel_R[2, 2], -1, 1)))
    return PlugState(lateral=rel_p[:2].copy(), depth=float(-rel_p[2]), tilt=tilt)


def clip_to_ball(v: np.ndarray, radius: float) -> np.ndarray:
    """``v / radius`` inside the ball of that radius; the unit vector along ``v`` outside it."""
    return v / max(radius, float(np.linalg.norm(v)))


def _yaw_quat(yaw: float) -> np.ndarray:
    return np.array([np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


