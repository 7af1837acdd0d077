"""pi0.6* baseline: advantage-indicator conditioning, RECAP-style without a value function (paper Eq. 28-29;
docs/method.md §Baselines).

An indicator ``I`` is an extra conditioning input of the policy: states and chunks from
``tau^w`` (Case 2) and ``D_SFT`` get ``I = 1``, the policy's own chunks along ``tau^l`` (the
``a^l`` of Case-1 tuples) get ``I = 0``. Training is the plain conditional flow-matching loss on
all of them, with the indicator replaced by a "no indicator" token 30 % of the time. At
inference ``I = 1``, optionally with classifier-free guidance
``v = v_uncond + w (v_cond - v_uncond)`` (``w = 1``: plain conditional, the default).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from baselines.dagger import bc_loss
from flowpro.data import ACTION_L
from flowpro.methods import Method, register_method
from flowpro.policies.base import ACTION, CONDITION, FlowPolicy
from flowpro.tuples import SOURCE_L

BAD, GOOD, NO_INDICATOR = 0, 1, 2
DROPOUT = 0.3


def add_indicator(policy: FlowPolicy, cfg_weight: float = 1.0) -> FlowPolicy:
    """A copy of ``policy`` with an indicator input whose embedding starts at zero (so the new
    policy acts exactly as the old one until trained), set to ``I = 1`` at inference."""
    if policy.config.num_conditions:
        return policy
    config = copy.deepcopy(policy.config)
    config.num_conditions = 3
    config.extra = {**config.extra, "inference_condition": GOOD, "null_condition": NO_INDICATOR,
                    "cfg_weight": cfg_weight}
    new = type(policy)(config)
    missing, unexpected = new.load_state_dict(policy.state_dict(), strict=False)
    if unexpected or not missing or not hasattr(new, "condition_embed"):
        raise ValueError(f"{type(policy).__name__} does not support an indicator input (num_conditions)")
    torch.nn.init.zeros_(new.condition_embed.weight)
    return new


class IndicatorView(torch.utils.data.Dataset):
    """A preference or demonstration dataset seen as ``(s, a, I)`` samples."""

    def __init__(self, ds: Any):
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = dict(self.ds[i])
        bad = x.get("source") == SOURCE_L
        if bad:
            x[ACTION] = x[ACTION_L]
        x.pop(ACTION_L, None)
        x[CONDITION] = torch.tensor(BAD if bad else GOOD)
        return x


@register_method("pi06star")
class Pi06Star(Method):
    uses_reference = False

    def prepare(self, policy):
        return add_indicator(policy, self.cfg.cfg_weight)

    def buffers(self, current, previous, sft):
        return {name: IndicatorView(ds) for name, ds in super().buffers(current, previous, sft).items()}

    def batch_loss(self, policy, reference, batch, generator, log_terms):
        cond = batch[CONDITION].clone()
        drop = torch.rand(cond.shape, generator=generator) < DROPOUT
        cond[drop] = NO_INDICATOR
        batch = {**batch, CONDITION: cond}
        batch.pop(ACTION_L, None)
        loss, stats = bc_loss(policy, batch, generator)
        stats["indicator_good"] = float((batch[CONDITION] == GOOD).float().mean())
        return loss, stats, ({"sft": loss} if log_terms else {})
