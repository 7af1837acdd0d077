"""Flow-matching policies behind one contract (:class:`FlowPolicy`)."""

from flowpro.policies.base import FlowPolicy, PolicyConfig
from flowpro.policies.builtin import BuiltinConfig, BuiltinVLA

POLICIES: dict[str, type[FlowPolicy]] = {"builtin": BuiltinVLA}

__all__ = ["POLICIES", "BuiltinConfig", "BuiltinVLA", "FlowPolicy", "PolicyConfig"]
