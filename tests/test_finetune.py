"""The preference step and one real FlowPRO round (issue 6)."""

import copy
import json

import pytest
import torch

from envs.record import record
from flowpro.data import ACTION_L
from flowpro.finetune import (RewardHackingMonitor, RPROConfig, check_reference, frozen_reference,
                              preference_losses, run_rounds)
from flowpro.losses import loss_terms
from flowpro.policies import BuiltinConfig, BuiltinVLA, FlowPolicy
from flowpro.train import SFTConfig, main as train_main, train_sft

B, H = 6, 30


def _policy(**kw):
    torch.manual_seed(0)
    return BuiltinVLA(BuiltinConfig(**{"use_images": False, "cameras": (), "env_state_dim": 5, "d_model": 32,
                                       "n_layers": 1, "n_heads": 2, **kw}))


def _batch(n_identical: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    a_w = torch.randn(B, H, 20, generator=g)
    a_l = a_w.clone()
    a_l[n_identical:] += torch.randn(B - n_identical, H, 20, generator=g)
    return {"observation.state": torch.randn(B, 20, generator=g), "observation.environment_state": torch.randn(B, 5, generator=g),
            "task": ["plug it in"] * B, "action": a_w, ACTION_L: a_l, "action_is_pad": torch.zeros(B, H, dtype=torch.bool)}


def test_shared_draws_give_zero_rewards_for_a_fresh_copy_and_equal_losses_for_identical_pairs():
    policy = _policy()
    ref = frozen_reference(policy)
    l_tw, l_tl, l_rw, l_rl = preference_losses(policy, ref, _batch(n_identical=2), torch.Generator().manual_seed(1))
    assert torch.equal(l_tw.detach(), l_rw) and torch.equal(l_tl.detach(), l_rl)  # r_w = r_l = 0 exactly
    assert torch.equal(l_tw[:2], l_tl[:2]) and not torch.equal(l_tw[2:], l_tl[2:])


def test_identical_pairs_are_scored_once_and_their_contrastive_gradient_is_zero():
    policy = _policy()
    calls = []
    real = policy.velocity
    policy.velocity = lambda enc, x, t, c=None: calls.append(x.shape[0]) or real(enc, x, t, c)
    ref = frozen_reference(_policy())
    losses = preference_losses(policy, ref, _batch(n_identical=4), torch.Generator().manual_seed(1))
    assert calls == [B + 2]  # one pass: a^w for all six tuples, a^l only for the two that differ
    # all identical: the contrastive term carries no gradient at all
    policy.velocity = real
    losses = preference_losses(policy, ref, _batch(n_identical=B), torch.Generator().manual_seed(1))
    term = loss_terms("rpro", *losses, beta=1000.0)["contrastive"]
    grads = torch.autograd.grad(term, list(policy.parameters()), allow_unused=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in grads)


def test_reference_of_another_architecture_is_refused():
    with pytest.raises(ValueError, match="architecture differs"):
        check_reference(_policy(), frozen_reference(_policy(d_model=64)))


def test_reward_hacking_monitor():
    m = RewardHackingMonitor(r_w_min=-5.0, r_l_min=-50.0, momentum=0.5)
    assert m.update(0.5, -0.5) is None
    for _ in range(10):
        alarm = m.update(-20.0, -1.0)
    assert "r_w" in alarm
    m = RewardHackingMonitor(r_w_min=-5.0, r_l_min=-50.0, momentum=0.5)
    for _ in range(10):
        alarm = m.update(0.0, -500.0)
    assert "r_l" in alarm


def test_bad_settings_are_refused(tmp_path):
    for kw, msg in (({"beta": 0.0}, "beta"), ({"loss": "ipo"}, "unknown loss"), ({"reference": "x"}, "reference")):
        with pytest.raises(ValueError, match=msg):
            RPROConfig(task="usb", base="x", out=str(tmp_path), **kw).validate()


@pytest.fixture(scope="module")
def usb_base(tmp_path_factory):
    """A tiny state-only SFT policy on one USB demonstration."""
    root = tmp_path_factory.mktemp("usb")
    record("usb", 1, "id", root / "demos", obs_mode="state", progress=False)
    cfg = SFTConfig(task="usb", dataset=str(root / "demos"), out=str(root / "sft"), state_only=True, steps=4,
                    batch_size=8, warmup=1, save_every=100,
                    model='{"d_model": 32, "n_layers": 1, "n_heads": 2, "relative_actions": true}')
    train_sft(cfg, progress=False)
    return root


def test_one_real_round_runs_end_to_end_and_resumes(usb_base, tmp_path, capsys):
    out = tmp_path / "rpro"
    argv = ["rpro", "--task", "usb", "--base", str(usb_base / "sft"), "--out", str(out), "--rounds", "1",
            "--pairs", "1", "--steps", "3", "--batch-size", "8", "--warmup", "1", "--log-every", "1",
            "--eval-rollouts", "1", "--eval-splits", "id", "--workers", "1", "--stall-s", "1.0"]
    assert train_main(argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["success_rate_per_round"]) == {"1"} or set(result["success_rate_per_round"]) == {1}
    r1 = json.loads((out / "round_1/round.json").read_text())
    assert r1["collection"]["pairs"] == 1 and r1["tuples"]["total"] > 0
    assert (out / "round_1/train/policy/model.safetensors").exists()
    rows = (out / "round_1/train/metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert len(rows) == 4 and {"r_w", "r_l", "margin", "accuracy", "grad_contrastive", "grad_sft"} <= set(header)
    config = json.loads((out / "config.json").read_text())
    assert config["versions"]["mujoco"] == "4.0.0" and config["config"]["loss"] == "rpro"
    # a rerun finds the round done and changes nothing
    before = (out / "round_1/round.json").read_text()
    assert train_main(argv) == 0
    assert (out / "round_1/round.json").read_text() == before
    # the same directory with another configuration is refused
    assert train_main(argv[:-2] + ["--stall-s", "2.0"]) == 2


def test_a_target_bound_reaches_the_fine_tuned_policy_and_the_run_record(usb_base, tmp_path):
    """--target-bound sets the bound of the policy being fine-tuned (it is saved with it) and is
    part of the run's identity; a run without it keeps the identity it had before the option."""
    out = tmp_path / "bounded"
    argv = ["rpro", "--task", "usb", "--base", str(usb_base / "sft"), "--out", str(out), "--rounds", "1",
            "--pairs", "1", "--steps", "2", "--batch-size", "8", "--warmup", "1", "--eval-rollouts", "0",
            "--workers", "1", "--stall-s", "1.0", "--method", "dagger_buffered", "--target-bound", "2.5"]
    assert train_main(argv) == 0
    assert FlowPolicy.load(usb_base / "sft" / "policy").config.target_bound is None
    assert FlowPolicy.load(out / "round_1/train/policy").config.target_bound == 2.5
    assert json.loads((out / "config.json").read_text())["config"]["target_bound"] == 2.5
    assert "target_bound" not in RPROConfig(task="usb", base="x", out="y").record()
    with pytest.raises(ValueError, match="target_bound must be > 0"):
        RPROConfig(task="usb", base="x", out="y", target_bound=0.0).validate()


def test_a_bridge_gap_limit_reaches_the_rounds_tuples_and_the_run_record(usb_base, tmp_path):
    """--max-bridge-gap filters the Case-1 states the round trains on (here: all of them) and is
    part of the run's identity; a run without it keeps its identity."""
    from flowpro.data import PreferenceDataset

    out = tmp_path / "near"
    argv = ["rpro", "--task", "usb", "--base", str(usb_base / "sft"), "--out", str(out), "--rounds", "1",
            "--pairs", "1", "--steps", "2", "--batch-size", "8", "--warmup", "1", "--eval-rollouts", "0",
            "--workers", "1", "--stall-s", "3.0", "--loss", "sft", "--max-bridge-gap", "1e-9"]
    assert train_main(argv) == 0
    c = FlowPolicy.load(usb_base / "sft" / "policy").config
    unfiltered = PreferenceDataset(out / "round_1/pairs", c, use_images=bool(c.cameras), env_state=bool(c.env_state_dim))
    assert (unfiltered.source == "l").sum() > 0  # the pair has bridges to remove
    row = json.loads((out / "round_1/round.json").read_text())
    assert row["tuples"]["case1"] == 0 and row["tuples"]["total"] == len(unfiltered) - (unfiltered.source == "l").sum()
    assert json.loads((out / "config.json").read_text())["config"]["max_bridge_gap"] == 1e-9
    assert "max_bridge_gap" not in RPROConfig(task="usb", base="x", out="y").record()
    with pytest.raises(ValueError, match="max_bridge_gap must be > 0"):
        RPROConfig(task="usb", base="x", out="y", max_bridge_gap=-0.01).validate()


def test_the_sft_share_sets_every_buffered_methods_ratios_and_the_run_identity():
    from flowpro.finetune import get_method

    cfg = RPROConfig(task="usb", base="x", out="y", sft_share=0.8)
    buffers = {"current": [0], "sft": [0]}
    for name in ("flowpro", "dagger_buffered", "tpo"):
        assert get_method(name)(cfg).ratios(1, buffers) == {"current": pytest.approx(0.2), "sft": 0.8}
    assert get_method("flowpro")(RPROConfig(task="usb", base="x", out="y")).ratios(1, buffers) == {"current": 0.8, "sft": 0.2}
    assert cfg.record()["sft_share"] == 0.8 and "sft_share" not in RPROConfig(task="usb", base="x", out="y").record()
    with pytest.raises(ValueError, match="sft_share must be in"):
        RPROConfig(task="usb", base="x", out="y", sft_share=1.0).validate()


def test_a_round_interrupted_mid_way_resumes_to_the_same_policy(tmp_path, monkeypatch):
    from flowpro.finetune import Method, finetune_round
    from flowpro.mixing import CURRENT, SFT

    def samples(seed, n):
        b = _batch(n_identical=2, seed=seed)
        return [{k: (v[i] if torch.is_tensor(v) else v[i]) for k, v in b.items()} for i in range(n)]

    buffers = {CURRENT: samples(1, 6), SFT: samples(2, 6)}
    cfg = RPROConfig(task="usb", base="-", out="-", steps=6, batch_size=4, warmup=1, save_every=3, log_every=1,
                     beta=10.0)

    def run(out):
        policy = _policy()
        return finetune_round(cfg, 1, Method(cfg), policy, frozen_reference(policy), buffers, out, progress=False)

    full = run(tmp_path / "full")
    calls = {"n": 0}
    real = Method.batch_loss

    def crash_at_step_4(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(Method, "batch_loss", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "part")
    monkeypatch.setattr(Method, "batch_loss", real)
    resumed = run(tmp_path / "part")
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
