"""What differs between FlowPRO and its baselines on the same rounds (docs/method.md §Baselines): the :class:`Method`
(buffers, mixing ratios, preparation of the policy, the loss of one batch), with FlowPRO's own as
the base class, and the registry the methods enter with :func:`register_method`.

The baselines (:mod:`baselines`) build on this module and register themselves; the rounds of
:mod:`flowpro.finetune` look a method up by name (:func:`get_method`) and never import them.
:func:`preference_losses` is the step they share: the four flow-matching losses of a batch of
tuples with one noise and time draw (docs/method.md §Shared draws).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import Tensor

from flowpro.data import ACTION_L, PreferenceDataset
from flowpro.losses import get_loss, loss_terms
from flowpro.mixing import CURRENT, PREVIOUS, SFT, round_ratios
from flowpro.plugins import load_plugins
from flowpro.policies import FlowPolicy
from flowpro.policies.base import ACTION

if TYPE_CHECKING:
    from flowpro.finetune import RPROConfig

M = TypeVar("M", bound="Method")


# ---------------------------------------------------------------------------------------------- the step
def select_rows(batch: dict[str, Any], idx: Tensor) -> dict[str, Any]:
    """The rows ``idx`` of a batch (tensors by index, lists by position)."""
    b = batch[ACTION].shape[0]
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v) and v.dim() and v.shape[0] == b:
            out[k] = v[idx]
        elif isinstance(v, list) and len(v) == b:
            out[k] = [v[i] for i in idx.tolist()]
        else:
            out[k] = v
    return out


def _chunk_losses(model: FlowPolicy, batch: dict[str, Any], noise: Tensor, t: Tensor, differ: Tensor
                  ) -> tuple[Tensor, Tensor]:
    """``l(s, a^w)`` and ``l(s, a^l)`` with the observation encoded once; ``a^l`` is scored only
    where it differs from ``a^w`` (identical pairs reuse ``l(s, a^w)``: exactly equal, docs/method.md §Shared draws),
    in the same action-expert pass as the ``a^w`` chunks."""
    enc = model.encode(batch)
    if not differ.any():
        l_w = model.per_sample_loss(batch, noise, t, enc)
        return l_w, l_w
    b, idx = differ.shape[0], differ.nonzero().flatten()
    rows = torch.cat([torch.arange(b, device=idx.device), idx])
    both = select_rows(batch, rows)
    both[ACTION] = torch.cat([batch[ACTION], batch[ACTION_L][idx]])
    losses = model.per_sample_loss(both, noise[rows], t[rows], model.select_encoding(enc, rows))
    l_w = losses[:b]
    return l_w, l_w.index_put((idx,), losses[b:])


def preference_losses(policy: FlowPolicy, reference: FlowPolicy, batch: dict[str, Any],
                      generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``l_theta_w, l_theta_l, l_ref_w, l_ref_l`` of a batch of tuples with one ``(eps, t)`` draw
    per tuple shared by all four evaluations (docs/method.md §Shared draws); the reference runs without autograd."""
    a_w = batch[ACTION]
    a_l = batch.get(ACTION_L, a_w)
    batch = {**batch, ACTION_L: a_l}
    b = a_w.shape[0]
    noise, t = policy.sample_noise(b, generator), policy.sample_time(b, generator)
    differ = (a_w != a_l).flatten(1).any(1)
    l_theta_w, l_theta_l = _chunk_losses(policy, batch, noise, t, differ)
    with torch.inference_mode():
        l_ref_w, l_ref_l = _chunk_losses(reference, batch, noise, t, differ)
    return l_theta_w, l_theta_l, l_ref_w.clone(), l_ref_l.clone()


# ---------------------------------------------------------------------------------------------- methods
METHODS: dict[str, type[Method]] = {}


def register_method(name: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: the method is run by ``RPROConfig.method == name`` (``--method name``)."""

    def register(cls: type[M]) -> type[M]:
        if name in METHODS and METHODS[name] is not cls:
            raise ValueError(f"method {name!r} is already registered by {METHODS[name].__qualname__}")
        cls.name = name
        METHODS[name] = cls
        return cls

    return register


@register_method("flowpro")
class Method:
    """What differs between FlowPRO and its baselines on the same rounds: which buffers a round
    trains on (and at which ratios), how a policy is prepared, and the loss of one batch.
    Everything else (collection, schedule, checkpoints, evaluation) is shared. ``name`` is the
    name it is registered under."""

    name = "flowpro"
    uses_reference = True

    def __init__(self, cfg: RPROConfig):
        self.cfg = cfg

    @property
    def items_per_batch(self) -> int:
        """Buffer items drawn per batch (a baseline whose items hold several states draws fewer)."""
        return self.cfg.batch_size

    def prepare(self, policy: FlowPolicy) -> FlowPolicy:
        """The policy to fine-tune, made from the base policy (once, before round 1)."""
        return policy

    def buffers(self, current: PreferenceDataset, previous: list[PreferenceDataset], sft: Any) -> dict[str, Any]:
        out = {CURRENT: current, SFT: sft}
        if previous:
            out[PREVIOUS] = torch.utils.data.ConcatDataset(previous)
        return out

    def ratios(self, k: int, buffers: dict[str, Any]) -> dict[str, float]:
        """docs/method.md §Batch mixing (paper §3.4): 80/20 in round 1, 70/15/15 after, or
        ``cfg.sft_share`` from ``D_SFT`` (only the buffers that exist)."""
        return {name: r for name, r in round_ratios(k, self.cfg.sft_share).items() if name in buffers}

    def batch_loss(self, policy: FlowPolicy, reference: FlowPolicy | None, batch: dict[str, Any],
                   generator: torch.Generator, log_terms: bool) -> tuple[Tensor, dict[str, float], dict[str, Tensor]]:
        """FlowPRO: the chosen loss of the RPRO family on preference tuples (docs/method.md §Losses)."""
        c = self.cfg
        weights = dict(beta=c.beta, lambda_pro=c.lambda_pro, lambda_sft=c.lambda_sft, reg_weight=c.reg_weight)
        losses = preference_losses(policy, reference, batch, generator)
        loss, stats = get_loss(c.loss)(*losses, **weights)
        return loss, stats, (loss_terms(c.loss, *losses, **weights) if log_terms else {})


def get_method(name: str) -> type[Method]:
    """The method registered as ``name``; the baselines register when their package is imported
    (:func:`flowpro.plugins.load_plugins` imports it the first time a name is not yet known)."""
    if name not in METHODS:
        load_plugins("methods")
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]
