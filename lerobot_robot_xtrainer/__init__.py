"""LeRobot plugin of the Dobot X-Trainer (docs/platform.md §Robot and teleoperator plugins; issue 8 item 4).

LeRobot's command-line tools (``lerobot-record``, ``lerobot-teleoperate``, ``lerobot-replay``,
``lerobot-calibrate`` ...) call ``lerobot.utils.import_utils.register_third_party_plugins`` before
parsing their arguments: it imports, *by its distribution name*, every installed distribution
whose name starts with ``lerobot_robot_`` (or ``lerobot_teleoperator_``, ``lerobot_camera_`` ...).
This project's distribution is named ``lerobot_robot_xtrainer`` (``pyproject.toml``), so after
``pip install -e .`` the tools import this package, which registers our config classes with
LeRobot's registries:

- ``--robot.type=xtrainer``: :class:`hardware.lerobot_robot.XTrainerRobot` (both Dobot arms, the
  Feetech grippers, the cameras);
- ``--teleop.type=xtrainer_leader``: :class:`hardware.lerobot_robot.XTrainerLeader` (the leader arms,
  read-only).

Without installing, ``--robot.discover_packages_path=lerobot_robot_xtrainer`` (and
``--teleop.discover_packages_path=...``) does the same from the repository root.
"""

from hardware.lerobot_robot import XTrainerLeader, XTrainerLeaderConfig, XTrainerRobot, XTrainerRobotConfig

__all__ = ["XTrainerLeader", "XTrainerLeaderConfig", "XTrainerRobot", "XTrainerRobotConfig"]
