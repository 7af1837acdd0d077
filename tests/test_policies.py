"""The policy contract (docs/method.md §Flow matching): shared draws, masking, sampling, checkpoints, bad input."""

import copy
import json

import pytest
import torch

from flowpro.policies import BuiltinConfig, BuiltinVLA, FlowPolicy

B, H, A = 4, 30, 20


def _batch(cfg, b=B, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {"observation.state": torch.randn(b, 20, generator=g), "task": ["plug the lamp in"] * b,
             "action": torch.randn(b, H, A, generator=g), "action_is_pad": torch.zeros(b, H, dtype=torch.bool)}
    for cam in cfg.cameras:
        batch[f"observation.images.{cam}"] = torch.rand(b, 3, *cfg.image_size, generator=g)
    if cfg.env_state_dim:
        batch["observation.environment_state"] = torch.randn(b, cfg.env_state_dim, generator=g)
    return batch


CONFIGS = {
    "vision": BuiltinConfig(image_size=(32, 32), image_channels=(8, 16), d_model=32, n_layers=1, n_heads=2),
    "state": BuiltinConfig(use_images=False, cameras=(), env_state_dim=21, d_model=32, n_layers=1, n_heads=2),
}


@pytest.fixture(params=sorted(CONFIGS))
def policy(request):
    torch.manual_seed(0)
    return BuiltinVLA(copy.deepcopy(CONFIGS[request.param]))


def test_frozen_copy_gives_identical_loss_for_shared_draws(policy):
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    batch = _batch(policy.config)
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    a = policy.per_sample_loss(batch, noise, t)
    with torch.inference_mode():
        b = ref.per_sample_loss(batch, noise, t)
    assert a.shape == (B,) and torch.equal(a.detach(), b)
    other = policy.per_sample_loss(batch, policy.sample_noise(B), policy.sample_time(B))
    assert not torch.allclose(a, other)


def test_identical_chunks_in_one_batch_have_identical_losses(policy):
    batch = _batch(policy.config, b=2)
    for key, value in batch.items():  # sample 1 := sample 0
        if torch.is_tensor(value):
            value[1] = value[0]
    noise = policy.sample_noise(1).repeat(2, 1, 1)
    t = policy.sample_time(1).repeat(2)
    loss = policy.per_sample_loss(batch, noise, t)
    assert loss[0] == loss[1]


def test_padded_steps_are_masked(policy):
    batch = _batch(policy.config, b=1)
    noise, t = policy.sample_noise(1), policy.sample_time(1)
    batch["action_is_pad"][0, 20:] = True
    loss = policy.per_sample_loss(batch, noise, t)
    a = policy.action_norm(batch["action"])
    x_t = t.view(-1, 1, 1) * noise + (1 - t.view(-1, 1, 1)) * a
    err = (policy.velocity(policy.encode(batch), x_t, t) - (noise - a)) ** 2
    assert torch.allclose(loss, err[:, :20].mean((1, 2)))  # only the 20 valid steps count
    assert not torch.allclose(loss, err.mean((1, 2)))


def test_shared_encoding_matches_per_chunk_encoding(policy):
    batch = _batch(policy.config)
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    enc = policy.encode(batch)
    assert torch.allclose(policy.per_sample_loss(batch, noise, t, encoding=enc), policy.per_sample_loss(batch, noise, t))


def test_sampled_chunks_have_right_shape_and_are_finite(policy):
    chunk = policy.sample_actions(_batch(policy.config, b=2), num_steps=10)
    assert chunk.shape == (2, H, A) and torch.isfinite(chunk).all()


def test_time_sampling(policy):
    t = policy.sample_time(10000, torch.Generator().manual_seed(0))
    assert 0.001 <= t.min() and t.max() <= 1.0
    assert abs(t.mean().item() - (0.6 * 0.999 + 0.001)) < 0.01  # Beta(1.5, 1) has mean 0.6
    policy.config.time_sampling = "uniform"
    assert abs(policy.sample_time(10000).mean().item() - 0.5) < 0.02


def test_loss_decreases_on_tiny_synthetic_dataset(policy):
    torch.manual_seed(0)
    batch = _batch(policy.config, b=16, seed=1)
    batch["action"] = batch["observation.state"][:, None, :].repeat(1, H, 1) * 0.5  # a = f(s)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    fixed = (policy.sample_noise(16, g), policy.sample_time(16, g))
    start = policy.per_sample_loss(batch, *fixed).mean().item()
    for _ in range(60):
        loss = policy.per_sample_loss(batch, policy.sample_noise(16, g), policy.sample_time(16, g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert policy.per_sample_loss(batch, *fixed).mean().item() < 0.5 * start


def test_checkpoint_round_trip_keeps_weights_and_normalisation(policy, tmp_path):
    stats = {"observation.state": {"mean": torch.arange(20.0), "std": torch.full((20,), 2.0)},
             "action": {"mean": torch.ones(20), "std": torch.full((20,), 3.0)},
             "observation.environment_state": {"mean": torch.zeros(21), "std": torch.ones(21)}}
    policy.set_normalization(stats)
    policy.save(tmp_path / "p")
    loaded = FlowPolicy.load(tmp_path / "p")
    assert type(loaded) is BuiltinVLA and loaded.config == policy.config
    batch = _batch(policy.config)
    noise = policy.sample_noise(B)
    assert torch.equal(loaded.sample_actions(batch, noise=noise), policy.sample_actions(batch, noise=noise))
    assert torch.equal(loaded.action_norm.std, torch.full((20,), 3.0))


def test_checkpoint_of_other_architecture_is_refused(policy, tmp_path):
    policy.save(tmp_path / "p")
    cfg = json.loads((tmp_path / "p/config.json").read_text())
    cfg["d_model"] = 64
    (tmp_path / "p/config.json").write_text(json.dumps(cfg))
    with pytest.raises((ValueError, RuntimeError), match="does not match|size mismatch"):
        FlowPolicy.load(tmp_path / "p")
    cfg["type"] = "mystery"
    (tmp_path / "p/config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="known types"):
        FlowPolicy.load(tmp_path / "p")


def test_bad_shapes_are_named(policy):
    batch = _batch(policy.config)
    batch["action"] = torch.randn(B, 10, A)
    with pytest.raises(ValueError, match=r"expects \[B, 30, 20\]"):
        policy.per_sample_loss(batch, policy.sample_noise(B), policy.sample_time(B))
    batch = _batch(policy.config)
    batch["observation.state"] = torch.randn(B, 14)
    with pytest.raises(ValueError, match="has 14 dims, the policy expects 20"):
        policy.encode(batch)


def test_conditioned_policy_needs_and_uses_the_condition():
    cfg = copy.deepcopy(CONFIGS["state"])
    cfg.num_conditions = 3
    policy = BuiltinVLA(cfg)
    batch = _batch(cfg)
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    with pytest.raises(ValueError, match="condition"):
        policy.per_sample_loss(batch, noise, t)
    batch["condition"] = torch.zeros(B, dtype=torch.long)
    a = policy.per_sample_loss(batch, noise, t)
    batch["condition"] = torch.ones(B, dtype=torch.long)
    assert not torch.allclose(a, policy.per_sample_loss(batch, noise, t))


def test_relative_actions_are_an_internal_representation():
    """A relative-action policy trains on a - s (grippers absolute) but returns absolute targets."""
    cfg = copy.deepcopy(CONFIGS["state"])
    cfg.relative_actions = True
    torch.manual_seed(0)
    policy = BuiltinVLA(cfg)
    batch = _batch(cfg)
    model = policy.actions_to_model(batch["action"], batch)
    rel = batch["action"] - batch["observation.state"][:, None]
    assert torch.allclose(model[..., :9], rel[..., :9]) and torch.equal(model[..., 9], batch["action"][..., 9])
    assert torch.allclose(policy.actions_from_model(model, batch), batch["action"], atol=1e-6)
    # Shifting the robot and its targets together changes nothing the model sees.
    shifted = {**batch, "observation.state": batch["observation.state"] + 0.1, "action": batch["action"] + 0.1}
    shifted["action"][..., [9, 19]] = batch["action"][..., [9, 19]]
    shifted["observation.state"][..., [9, 19]] = batch["observation.state"][..., [9, 19]]
    assert torch.allclose(policy.actions_to_model(shifted["action"], shifted), model, atol=1e-6)


def test_bounded_inputs_keep_far_off_states_in_range_and_survive_a_checkpoint(tmp_path):
    """A state the demonstrations never showed (a dimension they hardly vary, |z| in the hundreds)
    enters the network within +-input_bound; near the data the squash is close to the identity."""
    cfg = BuiltinConfig(use_images=False, cameras=(), env_state_dim=3, d_model=32, n_layers=1, n_heads=2,
                        input_bound=5.0)
    policy = BuiltinVLA(cfg)
    policy.env_norm.set_stats(torch.zeros(3), torch.tensor([1.0, 1.0, 1e-4]))
    z = policy.env_norm(torch.tensor([[0.5, -2.0, 0.08]]))  # the last one: 0.08 / 1e-4 = 800 sigma
    assert torch.allclose(z[0, :2], torch.tensor([0.5, -2.0]), atol=0.12) and 4.99 < z[0, 2] <= 5.0
    policy.save(tmp_path / "p")
    loaded = FlowPolicy.load(tmp_path / "p")
    assert loaded.config.input_bound == 5.0 and torch.equal(loaded.env_norm(torch.tensor([[0.5, -2.0, 0.08]])), z)
    assert BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=3)).env_norm.bound is None
    with pytest.raises(ValueError, match="input_bound must be > 0"):
        BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=3, input_bound=0.0))


def test_target_bound_clamps_what_the_loss_regresses_on_and_nothing_else(tmp_path):
    """With target_bound b the flow loss regresses on the normalised chunk clamped to +-b, per
    element; targets inside the bound are untouched (a base's demonstrations keep their loss,
    bitwise), sampling is unchanged, and the bound survives a checkpoint."""
    cfg = copy.deepcopy(CONFIGS["state"])
    torch.manual_seed(0)
    free = BuiltinVLA(cfg)
    bounded = BuiltinVLA(copy.deepcopy(cfg))
    bounded.load_state_dict(free.state_dict())
    bounded.config.target_bound = 3.0
    batch = _batch(cfg)
    noise, t = free.sample_noise(B), free.sample_time(B)
    inside = {**batch, "action": batch["action"].clamp(-2.9, 2.9)}
    assert torch.equal(free.per_sample_loss(inside, noise, t), bounded.per_sample_loss(inside, noise, t))
    far = {**batch, "action": batch["action"].clone()}
    far["action"][0, 5, 18] = 40.0  # a tilt the demonstrations never make
    assert bounded.flow_target(far["action"], far)[0, 5, 18] == 3.0
    clamped = {**far, "action": far["action"].clamp(-3.0, 3.0)}
    assert torch.equal(bounded.per_sample_loss(far, noise, t), free.per_sample_loss(clamped, noise, t))
    assert not torch.equal(free.per_sample_loss(far, noise, t), bounded.per_sample_loss(far, noise, t))
    x = torch.randn(B, H, A)
    assert torch.equal(free.sample_actions(batch, noise=x), bounded.sample_actions(batch, noise=x))
    bounded.save(tmp_path / "p")
    assert FlowPolicy.load(tmp_path / "p").config.target_bound == 3.0
    with pytest.raises(ValueError, match="target_bound must be > 0"):
        BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=3, target_bound=-1.0))


def test_group_action_scale_gives_each_physical_quantity_one_spread(tmp_path):
    """With action_scale "group", every column of an arm's position (and of its 6D rotation)
    is divided by one spread, the RMS of the columns' own; means stay per column, the mapping
    inverts exactly and the scale survives a checkpoint. A near-constant rotation component is
    then no longer magnified beside the others."""
    cfg = BuiltinConfig(use_images=False, cameras=(), env_state_dim=3, d_model=32, n_layers=1, n_heads=2, action_scale="group")
    policy = BuiltinVLA(cfg)
    std = torch.linspace(0.01, 0.2, 20)
    std[18] = 0.002  # the tool's tilt: the demonstrations keep it nearly constant
    mean = torch.randn(20)
    stats = {"observation.state": {"mean": torch.zeros(20), "std": torch.ones(20)},
             "action": {"mean": mean, "std": std},
             "observation.environment_state": {"mean": torch.zeros(3), "std": torch.ones(3)}}
    policy.set_normalization(stats)
    got = policy.action_norm.std
    for g in (slice(0, 3), slice(3, 9), slice(10, 13), slice(13, 19)):
        assert torch.allclose(got[g], std[g].pow(2).mean().sqrt().expand(g.stop - g.start))
    assert got[9] == std[9] and got[19] == std[19] and torch.equal(policy.action_norm.mean, mean)
    assert got[18] > 20 * std[18]
    a = torch.randn(2, cfg.chunk_size, 20)
    assert torch.allclose(policy.action_norm.inverse(policy.action_norm(a)), a, atol=1e-5)
    policy.save(tmp_path / "p")
    assert torch.equal(FlowPolicy.load(tmp_path / "p").action_norm.std, got)
    column = BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=3, d_model=32, n_layers=1, n_heads=2))
    column.set_normalization(stats)
    assert torch.allclose(column.action_norm.std, std)
    with pytest.raises(ValueError, match="action_scale must be"):
        BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=3, action_scale="dim"))
