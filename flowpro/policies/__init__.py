"""Flow-matching policies behind one contract (:class:`FlowPolicy`)."""

from flowpro.policies.base import FlowPolicy, PolicyConfig
from flowpro.policies.builtin import BuiltinConfig, BuiltinVLA
from flowpro.policies.lerobot_adapter import Pi0Adapter, SmolVLAAdapter

# "pi0" covers pi0 and pi0.5 (Pi0AdapterConfig.variant); lerobot is imported only when one is built.
POLICIES: dict[str, type[FlowPolicy]] = {"builtin": BuiltinVLA, "smolvla": SmolVLAAdapter, "pi0": Pi0Adapter}

__all__ = ["POLICIES", "BuiltinConfig", "BuiltinVLA", "FlowPolicy", "PolicyConfig", "Pi0Adapter", "SmolVLAAdapter"]
