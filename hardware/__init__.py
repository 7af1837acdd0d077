"""The real Dobot X-Trainer backend (--backend real) and its loopback emulator (SPEC §8, issue 8).

- :mod:`hardware.dobot_protocol`: commands, streaming reply parser, ErrorID exceptions, feedback packets.
- :mod:`hardware.dobot_client`: dashboard / motion / feedback connections of one controller (V3, V4).
- :mod:`hardware.safety`: limits, J3 sign rule, joint-step ramping, safety boxes, downward speed, watchdog.
- :mod:`hardware.feetech`: the Feetech STS/SMS gripper servos and their calibration file.
- :mod:`hardware.backend`: :class:`~hardware.backend.RealXTrainer`, the :class:`envs.rollout.Backend`.
- :mod:`hardware.emulator` (``python -m hardware.emulator``) and :mod:`hardware.feetech_emulator`:
  both controllers on loopback and the grippers on pseudo-terminals, with fault injection.
"""
