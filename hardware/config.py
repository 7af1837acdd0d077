"""The robot configuration file of the real X-Trainer (``--backend real``; docs/platform.md, issue 8).

One JSON file says where every part of the bench is: both Dobot controllers (address, firmware
flavour, ports), both Feetech grippers (serial port, servo ID, calibration file), the three cameras,
optionally the leader arms (the human's teleoperator for corrections), the control rate and
safety overrides. :func:`load_robot_config` validates it and raises one :class:`ValueError` that
names every missing or invalid field and what to put there; :func:`make_backend` builds the
connected :class:`~hardware.backend.RealXTrainer`. ``hardware/xtrainer.example.json`` points at the
loopback emulator's defaults (``python -m hardware.emulator``), so the two work together as shipped.

Schema (keys starting with ``_`` are comments and ignored; any other unknown key is an error)::

    {
      "arms": {                                   # required: both arms
        "left":  {"host": "192.168.5.1",          # required: controller address
                  "firmware": "auto",             # "v3" | "v4" | "auto" (default: auto-detect)
                  "dashboard_port": 29999,        # defaults: the standard ports (docs/platform.md §Protocol);
                  "motion_port": 30003,           #   motion_port is V3 only (V4 moves on 29999)
                  "feedback_port": 30004,
                  "timeout_s": 2.0},              # per request (optional)
        "right": {"host": "192.168.5.2"}
      },
      "grippers": {                               # required: null when the bench has none
        "left":  {"port": "/dev/ttyUSB0",         # required: the USB-RS485 adapter
                  "servo_id": 21,                 # default: 21 left, 22 right
                  "calibration": "grippers.json"},# file of hardware.feetech.save_calibration
        "right": {"port": "/dev/ttyUSB1"}         #   (the entry of this arm); default: nominal
      },                                          #   calibration, calibrate real units!
      "cameras": {                                # required: null for none
        "top": "/dev/video0",                     # hardware.cameras.make_source specs: an index,
        "left_wrist": "realsense:123456789",      #   a /dev/video path, a file, realsense:<serial>
        "right_wrist": 4                          #   or "synthetic"
      },
      "leader": {                                 # optional: the leader arms for corrections
        "arms": {"left":  {"host": "192.168.5.3", "feedback_port": 30004},
                 "right": {"host": "192.168.5.4"}},  # read-only: only the feedback port is opened
        "grippers": null,                         # optional: their grippers (read only)
        "max_feedback_age_s": 0.1
      },
      "control_hz": 30,                           # the policy's control rate (1..125)
      "arm_model": "nova2",
      "action_mode": "ee",                        # "ee" (20-dim poses, IK) | "joint" (14-D)
      "task": "usb",                              # optional default task of the session
      "time_limit_s": 40,                         # optional episode length (default: the task's)
      "safety": {                                 # optional: overrides may only tighten the limits
        "speed_percent": 20,                      # SpeedFactor/AccJ/SpeedJ at start-up (1..100)
        "max_joint_step_rad": 0.9,                # per ServoJ (<= 0.9, larger moves are ramped)
        "command_timeout_s": 0.5,                 # watchdog: policy silent this long (<= 0.5)
        "home_speed_rad_s": 0.5,                  # homing (<= 1.0)
        "rollback_speed_rad_s": 0.5,              # rollback along the recorded path (<= 1.0)
        "max_hold_s": 10.0,                       # slow policy: hold the last target at most this long
        "auto_clear_errors": true                 # RobotMode 9 -> ClearError + EnableRobot
      }
    }

Relative paths (calibration files) are relative to the configuration file.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from envs.control import MAX_JOINT_STEP_RAD
from envs.geometry import ARMS
from envs.kinematics import ARM_SPECS
from envs.xtrainer import CAMERAS
from hardware import feetech as ft
from hardware.backend import RealXTrainer
from hardware.cameras import CameraRig, make_source
from hardware.dobot_client import DobotConfig
from hardware.dobot_protocol import DASHBOARD_PORT, FEEDBACK_PORT, MOTION_PORT
from hardware.holder import DEFAULT_MAX_HOLD_S
from hardware.safety import COMMAND_TIMEOUT_S, FEEDBACK_TIMEOUT_S
from hardware.teleop import LeaderArms

FIRMWARE = {"v3": "V3", "v4": "V4", "auto": "auto"}
EXAMPLE = Path(__file__).with_name("xtrainer.example.json")


@dataclass(frozen=True)
class GripperConfig:
    """One gripper: its serial port and its calibration (servo ID included)."""

    port: str
    calibration: ft.GripperCalibration
    calibration_file: Path | None = None


@dataclass(frozen=True)
class SafetyConfig:
    """Safety overrides (docs/platform.md §Safety limits); each may only tighten the safety layer's limits."""

    speed_percent: int = 20
    max_joint_step_rad: float = MAX_JOINT_STEP_RAD
    command_timeout_s: float = COMMAND_TIMEOUT_S
    home_speed_rad_s: float = 0.5
    rollback_speed_rad_s: float = 0.5
    max_hold_s: float = DEFAULT_MAX_HOLD_S
    auto_clear_errors: bool = True


@dataclass(frozen=True)
class LeaderConfig:
    """The leader arms (read-only feedback streams) and their optional gripper encoders."""

    arms: dict[str, DobotConfig]
    grippers: dict[str, GripperConfig] = field(default_factory=dict)
    max_feedback_age_s: float = FEEDBACK_TIMEOUT_S


@dataclass(frozen=True)
class RobotConfig:
    """A validated robot configuration (see the module docstring for the file format)."""

    arms: dict[str, DobotConfig]
    grippers: dict[str, GripperConfig]
    cameras: dict[str, str | int]
    leader: LeaderConfig | None = None
    control_hz: float = 30.0
    arm_model: str = "nova2"
    action_mode: str = "ee"
    task: str | None = None
    time_limit_s: float | None = None
    safety: SafetyConfig = field(default_factory=SafetyConfig)
    path: Path | None = None  # the file it was read from (None: built in code)


# ---------------------------------------------------------------------------------------------- validation
class _Fields:
    """Reads typed fields and collects every problem with its dotted field name."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def bad(self, name: str, message: str) -> None:
        self.problems.append(f"{name}: {message}")

    def obj(self, value: Any, name: str, what: str) -> dict | None:
        if not isinstance(value, dict):
            self.bad(name, f"must be an object ({what}), got {json.dumps(value)}")
            return None
        return value

    def keys(self, obj: dict, name: str, allowed: Collection[str], required: Collection[str] = (),
             hints: Mapping[str, str] | None = None) -> None:
        unknown = sorted(k for k in obj if k not in allowed and not str(k).startswith("_"))
        if unknown:
            self.bad(name or "(top level)", f"unknown key(s) {unknown}; valid keys: {sorted(allowed)}")
        for k in sorted(set(required) - set(obj)):
            hint = (hints or {}).get(k, "")
            self.bad(f"{name}.{k}" if name else k, "missing" + (f"; {hint}" if hint else ""))

    def number(self, obj: dict, key: str, name: str, default: float, lo: float, hi: float, *,
               integer: bool = False, lo_open: bool = False) -> float:
        value = obj.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            self.bad(f"{name}.{key}" if name else key, f"must be {'an integer' if integer else 'a number'}, "
                                                       f"got {json.dumps(value)}")
            return default
        if (value <= lo if lo_open else value < lo) or value > hi:
            left = "(" if lo_open else "["
            self.bad(f"{name}.{key}" if name else key, f"{value} is outside {left}{lo}, {hi}]")
            return default
        return value

    def string(self, obj: dict, key: str, name: str, default: str | None = None, *,
               choices: Mapping[str, Any] | None = None, hint: str = "") -> Any:
        value = obj.get(key, default)
        full = f"{name}.{key}" if name else key
        if value is None and default is None:
            self.bad(full, "missing" + (f"; {hint}" if hint else ""))
            return None
        if not isinstance(value, str) or not value.strip():
            self.bad(full, f"must be a non-empty string, got {json.dumps(value)}" + (f"; {hint}" if hint else ""))
            return default
        if choices is not None:
            if value.lower() not in choices:
                self.bad(full, f"{value!r} is not one of {sorted(choices)}")
                return choices.get(str(default).lower(), default) if default is not None else None
            return choices[value.lower()]
        return value


def _arm(f: _Fields, raw: Any, name: str, arm: str, *, leader: bool = False) -> DobotConfig | None:
    what = "the leader arm's controller" if leader else "the arm's Dobot controller"
    obj = f.obj(raw, name, what)
    if obj is None:
        return None
    allowed = {"host", "feedback_port"} if leader else \
        {"host", "firmware", "dashboard_port", "motion_port", "feedback_port", "timeout_s"}
    f.keys(obj, name, allowed)
    host = f.string(obj, "host", name, hint=f"set the IP address of the {arm} {'leader arm' if leader else 'arm'}'s "
                                            "controller, e.g. \"192.168.5.1\"")
    ports = {k: int(f.number(obj, k, name, d, 1, 65535, integer=True))
             for k, d in (("dashboard_port", DASHBOARD_PORT), ("motion_port", MOTION_PORT),
                          ("feedback_port", FEEDBACK_PORT))}
    if leader:
        return DobotConfig(host or "", "auto", feedback_port=ports["feedback_port"])
    firmware = f.string(obj, "firmware", name, "auto", choices=FIRMWARE)
    timeout = float(f.number(obj, "timeout_s", name, 2.0, 0.0, 60.0, lo_open=True))
    return DobotConfig(host or "", firmware, ports["dashboard_port"], ports["motion_port"], ports["feedback_port"],
                       timeout_s=timeout)


def _arms(f: _Fields, raw: Any, name: str, *, leader: bool = False) -> dict[str, DobotConfig]:
    obj = f.obj(raw, name, "one entry per arm: left, right")
    if obj is None:
        return {}
    f.keys(obj, name, set(ARMS), set(ARMS), {arm: f"add \"{arm}\": {{\"host\": ...}}" for arm in ARMS})
    out = {arm: _arm(f, obj[arm], f"{name}.{arm}", arm, leader=leader) for arm in ARMS if arm in obj}
    return {arm: c for arm, c in out.items() if c is not None}


def _gripper(f: _Fields, raw: Any, name: str, arm: str, base: Path) -> GripperConfig | None:
    obj = f.obj(raw, name, "the gripper's serial port, servo_id and calibration")
    if obj is None:
        return None
    f.keys(obj, name, {"port", "servo_id", "calibration"})
    port = f.string(obj, "port", name, hint="set the serial device of the gripper's USB-RS485 adapter, "
                                            "e.g. \"/dev/ttyUSB0\"")
    servo_id = int(f.number(obj, "servo_id", name, ft.GRIPPER_IDS[arm], 0, 253, integer=True))
    cal_raw = obj.get("calibration")
    nominal = ft.DEFAULT_CALIBRATION[arm]
    calibration = ft.GripperCalibration(servo_id, nominal.open_ticks, nominal.closed_ticks)
    cal_file = None
    if cal_raw is not None:
        if not isinstance(cal_raw, str) or not cal_raw:
            f.bad(f"{name}.calibration", f"must be a file path or null, got {json.dumps(cal_raw)}")
        else:
            cal_file = (base / cal_raw).resolve()
            try:
                units = ft.load_calibration(cal_file)
            except ft.FeetechError as e:
                f.bad(f"{name}.calibration", f"{e} (write one with hardware.feetech.calibrate + save_calibration)")
                units = None
            if units is not None and arm not in units:
                f.bad(f"{name}.calibration", f"{cal_file} has no entry for the {arm} gripper (has {sorted(units)})")
            elif units is not None:
                calibration = units[arm]
                if calibration.servo_id != servo_id:
                    f.bad(f"{name}.servo_id", f"is {servo_id} but the calibration in {cal_file} is for servo "
                                              f"{calibration.servo_id}; calibrate this unit or fix the ID")
    return None if port is None else GripperConfig(port, calibration, cal_file)


def _grippers(f: _Fields, raw: Any, name: str, base: Path) -> dict[str, GripperConfig]:
    if raw is None:
        return {}
    obj = f.obj(raw, name, "one entry per arm, or null for no grippers")
    if obj is None:
        return {}
    f.keys(obj, name, set(ARMS), set(ARMS),
           {arm: f"add \"{arm}\": {{\"port\": ...}}, or set \"{name}\" to null for no grippers" for arm in ARMS})
    out = {arm: _gripper(f, obj[arm], f"{name}.{arm}", arm, base) for arm in ARMS if arm in obj}
    return {arm: g for arm, g in out.items() if g is not None}


def _cameras(f: _Fields, raw: Any) -> dict[str, str | int]:
    if raw is None:
        return {}
    obj = f.obj(raw, "cameras", f"a device per camera ({', '.join(CAMERAS)}), or null for none")
    if obj is None:
        return {}
    f.keys(obj, "cameras", set(CAMERAS))
    out: dict[str, str | int] = {}
    for cam in CAMERAS:
        if cam not in obj:
            continue
        spec = obj[cam]
        ok = (isinstance(spec, int) and not isinstance(spec, bool) and spec >= 0) or (isinstance(spec, str) and spec.strip())
        if not ok:
            f.bad(f"cameras.{cam}", f"must be a device index, a path, \"realsense:<serial>\" or \"synthetic\", "
                                    f"got {json.dumps(spec)}")
        else:
            out[cam] = spec
    return out


def _leader(f: _Fields, raw: Any, base: Path) -> LeaderConfig | None:
    if raw is None:
        return None
    obj = f.obj(raw, "leader", "the leader arms' controllers")
    if obj is None:
        return None
    f.keys(obj, "leader", {"arms", "grippers", "max_feedback_age_s"}, {"arms"},
           {"arms": "add \"arms\": {\"left\": {\"host\": ...}, \"right\": {\"host\": ...}}"})
    arms = _arms(f, obj["arms"], "leader.arms", leader=True) if "arms" in obj else {}
    grippers = _grippers(f, obj.get("grippers"), "leader.grippers", base)
    age = float(f.number(obj, "max_feedback_age_s", "leader", FEEDBACK_TIMEOUT_S, 0.0, 1.0, lo_open=True))
    return LeaderConfig(arms, grippers, age)


def _safety(f: _Fields, raw: Any) -> SafetyConfig:
    if raw is None:
        return SafetyConfig()
    obj = f.obj(raw, "safety", "safety overrides")
    if obj is None:
        return SafetyConfig()
    d = SafetyConfig()
    f.keys(obj, "safety", set(d.__dataclass_fields__))
    flag = obj.get("auto_clear_errors", True)
    if not isinstance(flag, bool):
        f.bad("safety.auto_clear_errors", f"must be true or false, got {json.dumps(flag)}")
        flag = True
    return SafetyConfig(
        speed_percent=int(f.number(obj, "speed_percent", "safety", d.speed_percent, 1, 100, integer=True)),
        max_joint_step_rad=float(f.number(obj, "max_joint_step_rad", "safety", d.max_joint_step_rad, 0.0,
                                          MAX_JOINT_STEP_RAD, lo_open=True)),
        command_timeout_s=float(f.number(obj, "command_timeout_s", "safety", d.command_timeout_s, 0.0,
                                         COMMAND_TIMEOUT_S, lo_open=True)),
        home_speed_rad_s=float(f.number(obj, "home_speed_rad_s", "safety", d.home_speed_rad_s, 0.0, 1.0, lo_open=True)),
        rollback_speed_rad_s=float(f.number(obj, "rollback_speed_rad_s", "safety", d.rollback_speed_rad_s, 0.0, 1.0,
                                            lo_open=True)),
        max_hold_s=float(f.number(obj, "max_hold_s", "safety", d.max_hold_s, 0.0, 60.0, lo_open=True)),
        auto_clear_errors=flag)


TOP_LEVEL = {"arms", "grippers", "cameras", "leader", "control_hz", "arm_model", "action_mode", "task",
             "time_limit_s", "safety"}


def parse_robot_config(raw: Any, base_dir: str | Path = ".", source: str = "robot config") -> RobotConfig:
    """Validate a parsed configuration (see the module docstring); ``base_dir`` anchors relative paths.
    Raises one :class:`ValueError` listing every problem, each with its field name."""
    f = _Fields()
    base = Path(base_dir)
    obj = f.obj(raw, "(top level)", "the robot configuration") or {}
    f.keys(obj, "", TOP_LEVEL, {"arms", "grippers", "cameras"},
           {"arms": "add \"arms\": {\"left\": {\"host\": ...}, \"right\": {\"host\": ...}}",
            "grippers": "add each gripper's serial port, or \"grippers\": null when the bench has none",
            "cameras": "add a device per camera (top, left_wrist, right_wrist), or \"cameras\": null for none"})
    arms = _arms(f, obj["arms"], "arms") if "arms" in obj else {}
    grippers = _grippers(f, obj.get("grippers"), "grippers", base)
    cameras = _cameras(f, obj.get("cameras"))
    leader = _leader(f, obj.get("leader"), base)
    control_hz = float(f.number(obj, "control_hz", "", 30.0, 1.0, 125.0))
    arm_model = f.string(obj, "arm_model", "", "nova2", choices={m: m for m in ARM_SPECS})
    action_mode = f.string(obj, "action_mode", "", "ee", choices={"ee": "ee", "joint": "joint"})
    task = obj.get("task")
    if task is not None:
        from envs.tasks import TASKS

        if not isinstance(task, str) or task.lower() not in TASKS:
            f.bad("task", f"unknown task {json.dumps(task)}; valid tasks: {sorted(TASKS)}")
            task = None
        else:
            task = task.lower()
    time_limit = None
    if obj.get("time_limit_s") is not None:
        time_limit = float(f.number(obj, "time_limit_s", "", 60.0, 0.0, 3600.0, lo_open=True))
    safety = _safety(f, obj.get("safety"))
    if f.problems:
        lines = "\n".join(f"  - {p}" for p in f.problems)
        raise ValueError(f"{source} has {len(f.problems)} problem(s) (format: hardware/config.py, example: "
                         f"{EXAMPLE.name}):\n{lines}")
    arms = {arm: _with_safety(c, safety) for arm, c in arms.items()}
    return RobotConfig(arms, grippers, cameras, leader, control_hz, arm_model, action_mode, task, time_limit, safety)


def _with_safety(c: DobotConfig, safety: SafetyConfig) -> DobotConfig:
    return replace(c, speed_percent=safety.speed_percent, auto_clear_errors=safety.auto_clear_errors)


def load_robot_config(path: str | Path) -> RobotConfig:
    """Read and validate a robot configuration file; a :class:`ValueError` names every bad field."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"robot config {path} does not exist (start from {EXAMPLE})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"robot config {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}") from None
    config = parse_robot_config(raw, path.parent, f"robot config {path}")
    return replace(config, path=path)


# ---------------------------------------------------------------------------------------------- building
def _close_all(resources: list[Any]) -> None:
    """Close every resource, newest first; one that fails to close does not keep the others open."""
    while resources:
        with contextlib.suppress(Exception):
            resources.pop().close()


class _OwnsResources:
    """Mixin: the device also closes the serial ports and cameras it was built with."""

    def __init__(self, *args: Any, resources: list[Any], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.resources = resources

    def close(self) -> None:
        super().close()
        _close_all(self.resources)


class ConfiguredXTrainer(_OwnsResources, RealXTrainer):
    """A :class:`RealXTrainer` that also owns the serial ports and cameras it was built with."""


class ConfiguredLeader(_OwnsResources, LeaderArms):
    """:class:`hardware.teleop.LeaderArms` that also owns its grippers' serial ports."""


def _open_grippers(grippers: Mapping[str, GripperConfig], resources: list[Any]) -> dict[str, ft.Gripper]:
    out = {}
    for arm, g in grippers.items():
        try:
            port = ft.SerialPort(g.port)
        except ft.FeetechError as e:
            raise ft.FeetechError(f"{arm} gripper (grippers.{arm}.port): {e}") from e
        resources.append(port)
        out[arm] = ft.Gripper(ft.FeetechBus(port), g.calibration)
    return out


def make_backend(config: RobotConfig, image_size: tuple[int, int] | None = None, *, task_description: str = "",
                 time_limit_s: float | None = None) -> RealXTrainer:
    """The connected real backend of ``config`` (docs/platform.md §Protocol): both arms started up,
    grippers at their torque limit, cameras open and resized to ``image_size`` = (h, w) (native size
    when None). ``close()`` releases everything, serial ports and cameras included."""
    resources: list[Any] = []
    try:
        grippers = _open_grippers(config.grippers, resources)
        rig = None
        if config.cameras:
            rig = CameraRig({cam: make_source(spec) for cam, spec in config.cameras.items()}, image_size)
            resources.append(rig)
            rig.open()
        s = config.safety
        backend = ConfiguredXTrainer(
            config.arms, grippers, resources=resources, task_description=task_description,
            time_limit_s=time_limit_s or config.time_limit_s or 60.0, control_hz=config.control_hz,
            arm_model=config.arm_model, action_mode=config.action_mode, cameras=rig,
            home_speed_rad_s=s.home_speed_rad_s, rollback_speed_rad_s=s.rollback_speed_rad_s,
            command_timeout_s=s.command_timeout_s, max_hold_s=s.max_hold_s, max_step_rad=s.max_joint_step_rad)
    except BaseException:
        _close_all(resources)
        raise
    return backend.connect()  # closes everything itself when it fails


def make_leader(config: RobotConfig) -> LeaderArms:
    """The connected leader arms of ``config`` (read-only), the human's teleoperator for corrections."""
    if config.leader is None:
        where = config.path or "the robot config"
        raise ValueError(f"{where} has no \"leader\" section: corrections need the leader arms' controllers "
                         "(see hardware/config.py), or pass another teleoperator")
    resources: list[Any] = []
    try:
        grippers = _open_grippers(config.leader.grippers, resources)
        leader = ConfiguredLeader(config.leader.arms, {arm: g.opening for arm, g in grippers.items()},
                                  resources=resources, max_age_s=config.leader.max_feedback_age_s)
    except BaseException:
        _close_all(resources)
        raise
    return leader.connect()  # closes everything itself when it fails
