"""Baselines on the FlowPRO data-collection protocol (docs/method.md §Baselines; paper App. I-J):
same SFT checkpoint, same rounds, oracle, schedule and evaluation as FlowPRO (:mod:`flowpro.finetune`);
only the training data of a round and the loss differ. Each baseline is a :class:`flowpro.methods.Method`,
registered under its name when this package is imported (:func:`flowpro.methods.register_method`).

- ``dagger``: positives (corrections) merged into ``D_SFT``, behaviour cloning on the aggregate.
- ``dagger_buffered``: the same BC loss on positives only, with FlowPRO's buffers and ratios.
- ``pi06star``: advantage-indicator conditioning (RECAP-style, no value function).
- ``tpo``: trajectory-wise preferences (GRAPE-style) in the RPRO objective.
"""

from baselines.dagger import DAgger, DAggerBuffered
from baselines.pi06star import Pi06Star
from baselines.tpo import TPO

BASELINES = {"dagger": DAgger, "dagger_buffered": DAggerBuffered, "pi06star": Pi06Star, "tpo": TPO}
