"""The one root of the real bench's faults.

Every fault of the X-Trainer that ends a session with "check the bench and run the same command
again" derives from :class:`HardwareError`: the arms' controller and its protocol
(:class:`hardware.dobot_protocol.DobotError`), the grippers' servos
(:class:`hardware.feetech.FeetechError`), the safety layer (:class:`hardware.safety.SafetyError`),
the cameras (:class:`hardware.cameras.CameraError`) and an operator who did not act in time
(:class:`OperatorTimeout`). A session catches this one class; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class HardwareError(Exception):
    """A fault of the real bench (the arms are stopped before it propagates)."""


class OperatorTimeout(HardwareError, TimeoutError):
    """The operator did not confirm or start something within its time limit."""
