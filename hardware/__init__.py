"""The real Dobot X-Trainer backend (--backend real) and its loopback emulator (docs/platform.md, issue 8).

- :mod:`hardware.dobot_protocol`: commands, streaming reply parser, ErrorID exceptions, feedback packets.
- :mod:`hardware.dobot_client`: dashboard / motion / feedback connections of one controller (V3, V4).
- :mod:`hardware.safety`: limits, J3 sign rule, joint-step ramping, safety boxes, downward speed, watchdog.
- :mod:`hardware.holder`: re-sends the last safe target while a slow policy computes its next chunk.
- :mod:`hardware.feetech`: the Feetech STS/SMS gripper servos and their calibration file.
- :mod:`hardware.cameras`: the three RGB cameras (OpenCV / RealSense / synthetic), rotated and resized.
- :mod:`hardware.backend`: :class:`~hardware.backend.RealXTrainer`, the :class:`envs.rollout.RollbackBackend`
  (rollback = drive back along the recorded joint path).
- :mod:`hardware.keys`, :mod:`hardware.teleop`, :mod:`hardware.human_operator`: the human operator of the
  intervention-and-rollback collection (keys, leader arms, the rollback frame).
- :mod:`hardware.lerobot_robot`: ``XTrainerRobot`` / ``XTrainerLeader`` under LeRobot's contracts
  (docs/platform.md §LeRobot),
  also reachable as ``hardware.XTrainerRobot`` / ``hardware.XTrainerLeader`` (imported on first use), which
  is where LeRobot's ``make_robot_from_config`` looks for them; the plugin package ``lerobot_robot_xtrainer``
  (this project's distribution name) makes ``lerobot-record`` / ``lerobot-teleoperate`` find them.
- :mod:`hardware.emulator` (``python -m hardware.emulator``) and :mod:`hardware.feetech_emulator`:
  both controllers on loopback and the grippers on pseudo-terminals, with fault injection, moving the
  arms and fingers of the simulator's MuJoCo model (:mod:`hardware.bench_physics`, stepped in real time).
- :mod:`hardware.config`: the robot configuration file (arms, grippers, cameras, leader arms, safety
  overrides; ``xtrainer.example.json`` matches the emulator) and ``make_backend`` / ``make_leader``.
- :mod:`hardware.run` (``python -m hardware.run evaluate|collect``): policy evaluation and
  human-operator pair collection on the real bench through the simulation's loops.
- :mod:`hardware.bench`: :class:`~hardware.bench.RealBench`, the :class:`flowpro.benches.Bench` of the
  FlowPRO rounds on the robot (backend ``"real"``, registered when imported).
- :mod:`hardware.interrupted`: what a fault leaves on disk (arms stopped first, then the finished
  part of the interrupted rollout saved next to the dataset or results file, then a clear error).
"""

_LEROBOT_DEVICES = ("XTrainerRobot", "XTrainerLeader", "XTrainerRobotConfig", "XTrainerLeaderConfig")


def __getattr__(name: str):
    # LeRobot's make_device_from_device_class looks for the device class in the package of its
    # config's module; import the LeRobot adapter (and lerobot) only when it is asked for.
    if name in _LEROBOT_DEVICES:
        from hardware import lerobot_robot

        return getattr(lerobot_robot, name)
    raise AttributeError(f"module 'hardware' has no attribute {name!r}")
