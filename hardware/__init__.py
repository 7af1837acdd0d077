"""The real Dobot X-Trainer backend (--backend real) and its loopback emulator (SPEC §8, issue 8).

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
- :mod:`hardware.emulator` (``python -m hardware.emulator``) and :mod:`hardware.feetech_emulator`:
  both controllers on loopback and the grippers on pseudo-terminals, with fault injection.
"""
