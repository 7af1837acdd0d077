"""DAgger and DAgger-Buffered (paper Eq. 23-25; docs/method.md §Baselines).

Both keep only the positive halves of the pairs: the correction ``tau^w``, i.e. the Case-2
samples (a state on ``tau^w`` and its chunk along ``tau^w``); the policy's own segments are
discarded. The loss is plain behaviour cloning (flow matching, paper Eq. 3) without a reference.

- DAgger merges the positives of every round so far into ``D_SFT`` and samples the aggregate
  uniformly.
- DAgger-Buffered keeps FlowPRO's three buffers and mixing ratios (positives of this round,
  positives of earlier rounds, ``D_SFT``), isolating the effect of batch composition.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from flowpro.methods import Method, register_method
from flowpro.mixing import CURRENT, PREVIOUS, SFT
from flowpro.tuples import SOURCE_W

AGGREGATE = "aggregate"


def positives(ds: Any) -> torch.utils.data.Subset:
    """The Case-2 samples (states on ``tau^w``) of a preference dataset."""
    return torch.utils.data.Subset(ds, np.flatnonzero(ds.source == SOURCE_W).tolist())


def bc_loss(policy, batch: dict[str, Any], generator: torch.Generator) -> tuple[Tensor, dict[str, float]]:
    """Behaviour cloning: the mean flow-matching loss on ``a^w`` (paper Eq. 3; docs/method.md §Flow matching)."""
    b = batch["action"].shape[0]
    loss = policy.per_sample_loss(batch, policy.sample_noise(b, generator), policy.sample_time(b, generator)).mean()
    return loss, {"loss": float(loss.detach()), "sft": float(loss.detach())}


@register_method("dagger")
class DAgger(Method):
    uses_reference = False

    def buffers(self, current, previous, sft):
        return {AGGREGATE: torch.utils.data.ConcatDataset([sft, *(positives(d) for d in [*previous, current])])}

    def ratios(self, k, buffers):
        return {AGGREGATE: 1.0}

    def batch_loss(self, policy, reference, batch, generator, log_terms):
        loss, stats = bc_loss(policy, batch, generator)
        return loss, stats, ({"sft": loss} if log_terms else {})


@register_method("dagger_buffered")
class DAggerBuffered(DAgger):
    def buffers(self, current, previous, sft):
        out = {CURRENT: positives(current), SFT: sft}
        if previous:
            out[PREVIOUS] = torch.utils.data.ConcatDataset([positives(d) for d in previous])
        return out

    def ratios(self, k, buffers):
        return Method.ratios(self, k, buffers)
