"""The RPRO loss family (paper Eq. 2-6 and App. A, Eq. 30-34; docs/method.md §Implicit reward,
§Losses).

Every loss is a pure function of the four per-sample flow-matching losses ``l_theta_w``,
``l_theta_l``, ``l_ref_w``, ``l_ref_l`` (each [B], paper Eq. 3), evaluated with one shared
``(eps, t)`` draw per tuple, so each can be checked by hand. Each returns the scalar loss and a
dict of detached diagnostics: mean ``r_w``, ``r_l``, ``margin``, implicit ``accuracy`` (over the
tuples whose ``r_w != r_l``; NaN when all are identical pairs), the
``l_*`` means and every term that enters the loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

LOSSES = ("rpro", "pro", "dpo", "dpo_sft", "sft")


def implicit_reward(l_theta: Tensor, l_ref: Tensor, beta: float) -> Tensor:
    """``r = (beta / 2) * (l_ref - l_theta)`` (paper Eq. 4); ``l_ref`` carries no gradient."""
    return 0.5 * beta * (l_ref.detach() - l_theta)


def _check(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, beta: float) -> None:
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    for name, x in (("l_theta_w", l_theta_w), ("l_theta_l", l_theta_l), ("l_ref_w", l_ref_w), ("l_ref_l", l_ref_l)):
        if not torch.isfinite(x).all():
            bad = torch.nonzero(~torch.isfinite(x)).flatten()[:5].tolist()
            raise FloatingPointError(f"{name} is not finite at batch rows {bad}")


def _terms(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, beta: float
           ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    _check(l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta)
    r_w, r_l = implicit_reward(l_theta_w, l_ref_w, beta), implicit_reward(l_theta_l, l_ref_l, beta)
    # Implicit accuracy over the tuples that are real preferences: an identical pair (shared
    # draws) has r_w == r_l exactly and says nothing about the ranking.
    differ = r_w != r_l
    accuracy = (r_w > r_l)[differ].float().mean() if differ.any() else torch.tensor(float("nan"))
    stats = {"r_w": r_w.mean(), "r_l": r_l.mean(), "margin": (r_w - r_l).mean(), "accuracy": accuracy, "l_theta_w": l_theta_w.mean(), "l_theta_l": l_theta_l.mean(),
             "l_ref_w": l_ref_w.mean(), "l_ref_l": l_ref_l.mean()}
    return r_w, r_l, stats


def _done(loss: Tensor, stats: dict[str, Tensor], **terms: Tensor) -> tuple[Tensor, dict[str, float]]:
    out = {k: float(v.detach()) for k, v in {**stats, **terms}.items()}
    out["loss"] = float(loss.detach())
    return loss, out


def contrastive_term(r_w: Tensor, r_l: Tensor) -> Tensor:
    """``-E[log sigma(r_w - r_l)]`` (paper Eq. 2)."""
    return -F.logsigmoid(r_w - r_l).mean()


def regulariser_term(r_w: Tensor, r_l: Tensor) -> Tensor:
    """``-E[sum_{a in {w,l}} 1/2 (log sigma(r_a) + log sigma(-r_a))]`` (paper Eq. 5): anchors the
    absolute implicit rewards at 0; ~ log 2 + r^2/8 near 0, gradient bounded by 1/2."""
    reg = lambda r: 0.5 * (F.logsigmoid(r) + F.logsigmoid(-r))
    return -(reg(r_w) + reg(r_l)).mean()


def term_weights(name: str, lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0
                 ) -> dict[str, float]:
    """The terms each loss of docs/method.md §Losses sums, with their weights: the one definition of the family."""
    table = {
        "sft": {"sft": 1.0},  # Eq. 30
        "dpo": {"contrastive": 1.0},  # Eq. 2/31
        "dpo_sft": {"contrastive": lambda_pro, "sft": lambda_sft},  # Eq. 32
        "pro": {"contrastive": 1.0, "regulariser": reg_weight},  # Eq. 5/33
        "rpro": {"contrastive": lambda_pro, "regulariser": lambda_pro * reg_weight, "sft": lambda_sft},  # Eq. 6/34
    }
    if name not in table:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return table[name]


_TERMS = {"contrastive": lambda r_w, r_l, l_w: contrastive_term(r_w, r_l),
          "regulariser": lambda r_w, r_l, l_w: regulariser_term(r_w, r_l),
          "sft": lambda r_w, r_l, l_w: l_w.mean()}


def loss_terms(name: str, l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, *, beta: float,
               lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0) -> dict[str, Tensor]:
    """The weighted terms of loss ``name`` as tensors (their sum is the loss), for per-term
    gradient norms."""
    r_w, r_l = implicit_reward(l_theta_w, l_ref_w, beta), implicit_reward(l_theta_l, l_ref_l, beta)
    return {t: w * _TERMS[t](r_w, r_l, l_theta_w)
            for t, w in term_weights(name, lambda_pro, lambda_sft, reg_weight).items()}


def _loss(name: str, l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, beta: float,
          lambda_pro: float, lambda_sft: float, reg_weight: float) -> tuple[Tensor, dict[str, float]]:
    r_w, r_l, stats = _terms(l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta)
    weights = term_weights(name, lambda_pro, lambda_sft, reg_weight)
    raw = {t: _TERMS[t](r_w, r_l, l_theta_w) for t in weights}
    return _done(sum(w * raw[t] for t, w in weights.items()), stats, **raw)


def sft_loss(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, *, beta: float = 1000.0,
             lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0) -> tuple[Tensor, dict]:
    """``L_SFT = E[l_theta(s, a^w)]`` (Eq. 30); the other arguments only feed the diagnostics."""
    return _loss("sft", l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta, lambda_pro, lambda_sft, reg_weight)


def dpo_loss(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, *, beta: float = 1000.0,
             lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0) -> tuple[Tensor, dict]:
    """Flow-DPO ``L_DPO = -E[log sigma(r_w - r_l)]`` (Eq. 2/31)."""
    return _loss("dpo", l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta, lambda_pro, lambda_sft, reg_weight)


def dpo_sft_loss(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, *, beta: float = 1000.0,
                 lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0) -> tuple[Tensor, dict]:
    """``lambda_PRO * L_DPO + lambda_SFT * L_SFT`` (Eq. 32)."""
    return _loss("dpo_sft", l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta, lambda_pro, lambda_sft, reg_weight)


def pro_loss(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, *, beta: float = 1000.0,
             lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0) -> tuple[Tensor, dict]:
    """``L_PRO = -E[log sigma(r_w - r_l) + sum_a 1/2 (log sigma(r_a) + log sigma(-r_a))]`` (Eq. 5/33),
    the regulariser scaled by ``reg_weight`` (PRO's alpha, default 1)."""
    return _loss("pro", l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta, lambda_pro, lambda_sft, reg_weight)


def rpro_loss(l_theta_w: Tensor, l_theta_l: Tensor, l_ref_w: Tensor, l_ref_l: Tensor, *, beta: float = 1000.0,
              lambda_pro: float = 1.0, lambda_sft: float = 1.0, reg_weight: float = 1.0) -> tuple[Tensor, dict]:
    """``L_RPRO = lambda_PRO * L_PRO + lambda_SFT * L_SFT`` (Eq. 6/34)."""
    return _loss("rpro", l_theta_w, l_theta_l, l_ref_w, l_ref_l, beta, lambda_pro, lambda_sft, reg_weight)


LOSS_FUNCTIONS = {"rpro": rpro_loss, "pro": pro_loss, "dpo": dpo_loss, "dpo_sft": dpo_sft_loss, "sft": sft_loss}


def get_loss(name: str):
    if name not in LOSS_FUNCTIONS:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSS_FUNCTIONS[name]

