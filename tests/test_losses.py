"""The RPRO loss family against hand-computed values, gradient cancellation, and a toy where
plain DPO hacks its reward and RPRO does not (issue 6)."""

import math

import pytest
import torch

from flowpro.losses import (LOSSES, dpo_loss, dpo_sft_loss, get_loss, implicit_reward, loss_terms, pro_loss,
                            rpro_loss, sft_loss)


def _t(*v):
    return torch.tensor(v, dtype=torch.float64)


def _logsig(x):
    return -math.log1p(math.exp(-x))


def test_values_by_hand():
    # one tuple: l_theta_w = 0.5, l_theta_l = 0.7, l_ref_w = 0.6, l_ref_l = 0.6, beta = 2
    args = (_t(0.5), _t(0.7), _t(0.6), _t(0.6))
    r_w, r_l = 0.1, -0.1  # (beta/2) * (l_ref - l_theta)
    con = -_logsig(r_w - r_l)
    reg = -sum(0.5 * (_logsig(r) + _logsig(-r)) for r in (r_w, r_l))
    expected = {
        "sft": 0.5,
        "dpo": con,
        "dpo_sft": 0.3 * con + 2.0 * 0.5,
        "pro": con + 0.5 * reg,
        "rpro": 0.3 * (con + 0.5 * reg) + 2.0 * 0.5,
    }
    for name, fn in (("sft", sft_loss), ("dpo", dpo_loss), ("dpo_sft", dpo_sft_loss), ("pro", pro_loss),
                     ("rpro", rpro_loss)):
        loss, d = fn(*args, beta=2.0, lambda_pro=0.3, lambda_sft=2.0, reg_weight=0.5)
        assert loss.item() == pytest.approx(expected[name], rel=1e-12), name
        assert d["r_w"] == pytest.approx(r_w) and d["r_l"] == pytest.approx(r_l) and d["accuracy"] == 1.0
        terms = loss_terms(name, *args, beta=2.0, lambda_pro=0.3, lambda_sft=2.0, reg_weight=0.5)
        assert sum(terms.values()).item() == pytest.approx(expected[name], rel=1e-12), name
    # the regulariser near 0 is log 2 + r^2/8 per branch
    assert reg == pytest.approx(2 * (math.log(2) + 0.01 / 8), rel=1e-4)


def test_bad_input_is_refused():
    x = _t(0.1, 0.2)
    with pytest.raises(ValueError, match="beta"):
        rpro_loss(x, x, x, x, beta=0.0)
    with pytest.raises(FloatingPointError, match=r"l_ref_l is not finite at batch rows \[1\]"):
        rpro_loss(x, x, x, _t(0.1, float("nan")), beta=1.0)
    with pytest.raises(ValueError, match="unknown loss"):
        get_loss("ipo")


def test_identical_pairs_have_exactly_zero_contrastive_gradient():
    """a^w == a^l with shared draws gives l_theta_w == l_theta_l: the contrastive gradient cancels
    exactly and only the SFT and regulariser gradients remain (paper Eq. 7-8)."""
    theta = torch.tensor([0.3, -0.2, 0.9], dtype=torch.float64, requires_grad=True)
    l_theta = (theta ** 2) * torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)  # per-sample losses
    l_ref = torch.tensor([0.05, 0.1, 2.0], dtype=torch.float64)
    terms = loss_terms("rpro", l_theta, l_theta, l_ref, l_ref, beta=10.0)
    (g_con,) = torch.autograd.grad(terms["contrastive"], theta, retain_graph=True)
    assert torch.count_nonzero(g_con) == 0
    (g_total,) = torch.autograd.grad(sum(terms.values()), theta, retain_graph=True)
    (g_rest,) = torch.autograd.grad(sum(loss_terms("rpro", l_theta, l_theta, l_ref, l_ref, beta=10.0)[k]
                                        for k in ("regulariser", "sft")), theta)
    assert torch.allclose(g_total, g_rest, rtol=1e-12, atol=0) and torch.count_nonzero(g_rest) == 3


def _toy_run(loss_name: str, steps: int = 1500, beta: float = 0.05) -> list[tuple[float, float]]:
    """A 1-D flow-matching toy with a known optimum: the 'policy' predicts the velocity of a
    Gaussian action model; a^w ~ N(+1, .1), a^l ~ N(-1, .1) at one state; reference = start.
    Returns (r_w, r_l) over training. With a^w = 1, a^l = -1 the DPO margin grows linearly in mu
    without bound, while r_w = (beta/2) E[1/t^2] mu (2 - mu) turns negative past mu = 2."""
    torch.set_default_dtype(torch.float64)  # no underflow of a saturated sigmoid's gradient
    g = torch.Generator().manual_seed(0)
    mu = torch.zeros(1, requires_grad=True)  # v(x_t, t) = (x_t - mu) / t  (exact for a point mass at mu)
    ref_mu = torch.zeros(1)
    opt = torch.optim.Adam([mu], lr=0.02)
    history = []
    for _ in range(steps):
        a_w = 1.0 + 0.1 * torch.randn(64, generator=g)
        a_l = -1.0 + 0.1 * torch.randn(64, generator=g)
        eps, t = torch.randn(64, generator=g), torch.rand(64, generator=g) * 0.9 + 0.1

        def flow_loss(m, a):
            x_t = t * eps + (1 - t) * a
            return (((x_t - m) / t) - (eps - a)) ** 2

        loss, d = get_loss(loss_name)(flow_loss(mu, a_w), flow_loss(mu, a_l), flow_loss(ref_mu, a_w),
                                      flow_loss(ref_mu, a_l), beta=beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append((d["r_w"], d["r_l"]))
    torch.set_default_dtype(torch.float32)
    return history


def test_dpo_reward_drifts_down_while_rpro_stays_bounded():
    """The toy's DPO optimum is unbounded (push mu past a^w, then both losses rise: likelihood
    underdetermination); RPRO settles with |r| = O(1) near the SFT optimum mu = 1."""
    dpo = _toy_run("dpo")
    rpro = _toy_run("rpro")
    dpo_rw_end = sum(r for r, _ in dpo[-100:]) / 100
    rpro_rw_end = sum(r for r, _ in rpro[-100:]) / 100
    rpro_max = max(max(abs(a), abs(b)) for a, b in rpro[-500:])
    assert dpo_rw_end < -5.0, dpo_rw_end  # r_w collapses
    assert -1.0 < rpro_rw_end < 1.0 and rpro_max < 3.0, (rpro_rw_end, rpro_max)


def test_every_variant_is_registered():
    assert set(LOSSES) == {"rpro", "pro", "dpo", "dpo_sft", "sft"}
    assert implicit_reward(_t(1.0), _t(3.0), 4.0).item() == 4.0
