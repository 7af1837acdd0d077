"""Flow-matching policies behind one contract (:class:`FlowPolicy`), registered by name."""

from flowpro.policies.base import POLICIES, FlowPolicy, PolicyConfig, register_policy
from flowpro.policies.builtin import BuiltinConfig, BuiltinVLA
from flowpro.policies.lerobot_adapter import Pi0Adapter, SmolVLAAdapter  # lerobot is imported only when one is built

# "pi0" covers pi0 and pi0.5 (Pi0AdapterConfig.variant).
__all__ = ["POLICIES", "BuiltinConfig", "BuiltinVLA", "FlowPolicy", "PolicyConfig", "Pi0Adapter", "SmolVLAAdapter",
           "register_policy"]
