"""Each baseline's data and loss on a tiny batch match their definitions (docs/method.md §Baselines, issue 7)."""

import copy

import numpy as np
import pytest
import torch

from baselines import BASELINES
from baselines.dagger import AGGREGATE
from baselines.pi06star import DROPOUT, GOOD, NO_INDICATOR, add_indicator
from usb_scene import USB_ENV_STATE_DIM
from flowpro.data import ACTION_L, ChunkDataset, PreferenceDataset
from flowpro.finetune import RPROConfig, collate, frozen_reference, get_method
from flowpro.losses import pro_loss
from flowpro.mixing import CURRENT, PREVIOUS, SFT
from flowpro.policies import BuiltinConfig, BuiltinVLA
from flowpro.policies.base import ACTION, CONDITION

CFG = BuiltinConfig(use_images=False, cameras=(), env_state_dim=USB_ENV_STATE_DIM, d_model=32, n_layers=1, n_heads=2)


@pytest.fixture(scope="module")
def data(usb_pairs, tmp_path_factory):
    from envs.record import record

    demos = tmp_path_factory.mktemp("bl") / "demos"
    record("usb", 1, "id", demos, obs_mode="state", progress=False)
    pref = PreferenceDataset(usb_pairs, CFG, use_images=False, env_state=True)
    sft = ChunkDataset(demos, CFG, use_images=False, env_state=True)
    return pref, sft


def _method(name, **kw):
    return get_method(name)(RPROConfig(task="usb", base="-", out="-", method=name, **kw))


def _policy():
    torch.manual_seed(0)
    return BuiltinVLA(copy.deepcopy(CFG))


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="dagger, dagger_buffered, pi06star, tpo"):
        get_method("ppo")


def test_dagger_aggregates_positives_into_sft_and_clones_them(data):
    pref, sft = data
    m = _method("dagger")
    buffers = m.buffers(pref, [pref], sft)
    n_pos = int((pref.source == "w").sum())
    assert set(buffers) == {AGGREGATE} and len(buffers[AGGREGATE]) == len(sft) + 2 * n_pos
    assert m.ratios(2, buffers) == {AGGREGATE: 1.0} and not m.uses_reference
    batch = collate([buffers[AGGREGATE][i] for i in range(len(sft) - 2, len(sft) + 2)])
    policy = _policy()
    loss, stats, _ = m.batch_loss(policy, None, batch, torch.Generator().manual_seed(3), False)
    g = torch.Generator().manual_seed(3)
    expected = policy.per_sample_loss(batch, policy.sample_noise(4, g), policy.sample_time(4, g)).mean()
    assert torch.equal(loss, expected)
    # positives only: every aggregated pair sample is a correction chunk (a^l == a^w)
    for i in range(len(sft), len(sft) + n_pos):
        x = buffers[AGGREGATE][i]
        assert x["source"] == "w" and torch.equal(x[ACTION], x[ACTION_L])


def test_dagger_buffered_keeps_flowpro_buffers_with_positives_only(data):
    pref, sft = data
    m = _method("dagger_buffered")
    b1, b2 = m.buffers(pref, [], sft), m.buffers(pref, [pref], sft)
    assert set(b1) == {CURRENT, SFT} and set(b2) == {CURRENT, PREVIOUS, SFT}
    assert len(b1[CURRENT]) == int((pref.source == "w").sum())
    assert m.ratios(1, b1) == {CURRENT: 0.8, SFT: 0.2} and m.ratios(2, b2) == {CURRENT: 0.7, PREVIOUS: 0.15, SFT: 0.15}


def test_pi06star_indicator_labels_dropout_and_a_neutral_start(data):
    pref, sft = data
    m = _method("pi06star")
    base = _policy()
    policy = m.prepare(base)
    assert policy.config.num_conditions == 3 and policy.config.extra["inference_condition"] == GOOD
    batch = collate([sft[0]])
    noise = base.sample_noise(1, torch.Generator().manual_seed(0))
    assert torch.allclose(policy.sample_actions(batch, noise=noise), base.sample_actions(batch, noise=noise), atol=1e-6)
    buffers = m.buffers(pref, [], sft)
    for i in range(0, len(buffers[CURRENT]), 5):
        x, raw = buffers[CURRENT][i], pref[i]
        bad = raw["source"] == "l"
        assert int(x[CONDITION]) == (0 if bad else GOOD)
        assert torch.equal(x[ACTION], raw[ACTION_L] if bad else raw[ACTION])
    assert all(int(buffers[SFT][i][CONDITION]) == GOOD for i in range(3))
    # the conditional flow-matching loss with 30 % of indicators replaced by the null token
    rows = collate([buffers[CURRENT][i] for i in range(min(64, len(buffers[CURRENT])))])
    seen = []
    real = policy.per_sample_loss
    policy.per_sample_loss = lambda b, n, t, e=None: seen.append(b[CONDITION].clone()) or real(b, n, t, e)
    m.batch_loss(policy, None, rows, torch.Generator().manual_seed(0), False)
    dropped = (seen[0] == NO_INDICATOR).float().mean().item()
    assert abs(dropped - DROPOUT) < 0.2


def test_pi06star_guidance_weight_changes_sampling(data):
    _, sft = data
    base = _policy()
    plain, guided = add_indicator(base, 1.0), add_indicator(base, 2.0)
    torch.nn.init.normal_(plain.condition_embed.weight)
    guided.load_state_dict(plain.state_dict())
    batch = collate([sft[0]])
    noise = base.sample_noise(1, torch.Generator().manual_seed(0))
    assert not torch.allclose(plain.sample_actions(batch, noise=noise), guided.sample_actions(batch, noise=noise))


def test_tpo_sums_per_state_rewards_over_each_trajectory(data):
    pref, sft = data
    m = _method("tpo", tpo_states=3, batch_size=12)
    buffers = m.buffers(pref, [], sft)
    assert m.items_per_batch == 2 and set(buffers) == {CURRENT}
    item = buffers[CURRENT][0]
    assert item[ACTION].shape == (6, 30, 20)
    batch = collate([buffers[CURRENT][0], buffers[CURRENT][0]])
    policy = _policy()
    ref = frozen_reference(_policy())
    for p in policy.parameters():  # make the policy differ from its reference
        p.data += 0.01 * torch.randn_like(p)
    loss, stats, terms = m.batch_loss(policy, ref, batch, torch.Generator().manual_seed(5), True)
    # by hand: the same draws, per-state losses summed over each trajectory's three states
    g = torch.Generator().manual_seed(5)
    flat = {k: v.flatten(0, 1) for k, v in batch.items() if torch.is_tensor(v) and k != ACTION_L}
    flat["task"] = [batch["task"][0]] * 12
    noise, t = policy.sample_noise(12, g), policy.sample_time(12, g)
    lt, lr = policy.per_sample_loss(flat, noise, t).view(2, 6), ref.per_sample_loss(flat, noise, t).view(2, 6)
    pro, _ = pro_loss(lt[:, :3].sum(1), lt[:, 3:].sum(1), lr[:, :3].sum(1), lr[:, 3:].sum(1), beta=1000.0)
    assert torch.allclose(loss, pro + lt[:, :3].mean(), rtol=1e-5)
    assert torch.allclose(sum(terms.values()), loss, rtol=1e-5)


def test_every_baseline_is_registered():
    assert set(BASELINES) == {"dagger", "dagger_buffered", "pi06star", "tpo"}
    assert np.all([get_method(n).name == n for n in BASELINES])
