"""LeRobot adapters (SmolVLA, pi0/pi0.5 stand-ins) under the policy contract of docs/method.md
§Flow matching and §Shared draws."""

import copy
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach the Hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest
import torch

from flowpro.policies import POLICIES, FlowPolicy
from flowpro.policies.lerobot_adapter import (
    Pi0Adapter,
    Pi0AdapterConfig,
    PI0StandIn,
    SmolVLAAdapter,
    SmolVLAAdapterConfig,
    make_tiny_smolvla,
)

B, H, A = 4, 30, 20
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The tiny models are dominated by op overhead; one thread avoids fighting over 2 shared cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_adapters_are_registered():
    assert POLICIES["smolvla"] is SmolVLAAdapter and POLICIES["pi0"] is Pi0Adapter


def _make(kind):
    torch.manual_seed(0)
    if kind == "smolvla":
        return make_tiny_smolvla()
    return Pi0Adapter(Pi0AdapterConfig(variant=kind, image_resolution=(32, 32)))


def _batch(policy, b=B, seed=0, task="plug the lamp in"):
    g = torch.Generator().manual_seed(seed)
    batch = {"observation.state": torch.randn(b, 20, generator=g), "task": [task] * b,
             "action": torch.randn(b, H, A, generator=g), "action_is_pad": torch.zeros(b, H, dtype=torch.bool)}
    for cam in policy.config.cameras:
        batch[f"observation.images.{cam}"] = torch.rand(b, 3, *policy.config.image_size, generator=g)
    return batch


def _x_t(policy, batch, noise, t):
    a = torch.nn.functional.pad(policy.action_norm(batch["action"]), (0, noise.shape[-1] - A))
    tt = t.view(-1, 1, 1)
    return tt * noise + (1 - tt) * a, noise - a


@pytest.fixture(params=["smolvla", "pi0", "pi05"])
def policy(request):
    return _make(request.param)


@pytest.fixture
def smol():
    return _make("smolvla")


# ------------------------------------------------------------------ contract (all three)
def test_frozen_copy_gives_identical_loss_for_shared_draws(policy):
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    batch = _batch(policy)
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    assert noise.shape == (B, H, 32)  # drawn on the padded chunk, like LeRobot
    a = policy.per_sample_loss(batch, noise, t)
    with torch.inference_mode():
        b = ref.per_sample_loss(batch, noise, t)
    assert a.shape == (B,) and a.requires_grad
    assert torch.equal(a.detach(), b)  # bitwise: same kernels in grad, eval and inference mode
    other = policy.per_sample_loss(batch, policy.sample_noise(B), policy.sample_time(B))
    assert not torch.allclose(a, other)


def test_identical_samples_in_one_batch_have_identical_losses(policy):
    batch = _batch(policy, b=2)
    for value in batch.values():
        if torch.is_tensor(value):
            value[1] = value[0]
    noise = policy.sample_noise(1).repeat(2, 1, 1)
    t = policy.sample_time(1).repeat(2)
    loss = policy.per_sample_loss(batch, noise, t)
    assert loss[0] == loss[1]


def test_padded_steps_and_padded_dims_are_masked(policy):
    batch = _batch(policy, b=2)
    noise, t = policy.sample_noise(2), policy.sample_time(2)
    batch["action_is_pad"][0, 20:] = True
    batch["action_is_pad"][1, 5:] = True
    loss = policy.per_sample_loss(batch, noise, t)
    x_t, u = _x_t(policy, batch, noise, t)
    err = (policy.velocity(policy.encode(batch), x_t, t) - u) ** 2  # [2, H, 32]
    manual = torch.stack([err[0, :20, :A].mean(), err[1, :5, :A].mean()])
    assert torch.allclose(loss, manual, rtol=1e-5, atol=1e-7)  # only valid steps and the 20 real dims
    assert not torch.allclose(loss, err[..., :A].mean((1, 2)), rtol=1e-3)  # padded steps would count
    assert not torch.allclose(loss, torch.stack([err[0, :20].mean(), err[1, :5].mean()]), rtol=1e-3)  # padded dims


def test_shared_encoding_matches_per_chunk_encoding(policy):
    batch = _batch(policy)
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    full = policy.per_sample_loss(batch, noise, t)
    assert torch.equal(policy.per_sample_loss(batch, noise, t, encoding=policy.encode(batch)), full)
    # one state shared by all four chunks
    shared = {k: (v[:1].repeat(B, *[1] * (v.dim() - 1)) if torch.is_tensor(v) and k != "action" else v)
              for k, v in batch.items()}
    one = {k: v[:1] for k, v in shared.items()}
    assert torch.allclose(policy.per_sample_loss(shared, noise, t, encoding=policy.encode(one)),
                          policy.per_sample_loss(shared, noise, t), rtol=1e-6, atol=1e-7)


def test_sampled_chunks_have_right_shape_and_are_finite(policy):
    batch = _batch(policy, b=2)
    chunk = policy.sample_actions(batch, num_steps=10)
    assert chunk.shape == (2, H, A) and torch.isfinite(chunk).all()
    noise = policy.sample_noise(2)
    assert torch.equal(policy.sample_actions(batch, noise=noise), policy.sample_actions(batch, noise=noise))
    short = noise[..., :A]  # 20-dim noise is zero-padded
    assert policy.sample_actions(batch, num_steps=3, noise=short).shape == (2, H, A)


def test_checkpoint_round_trip(policy, tmp_path):
    stats = {"observation.state": {"mean": torch.arange(20.0), "std": torch.full((20,), 2.0)},
             "action": {"mean": torch.ones(20), "std": torch.full((20,), 3.0)}}
    policy.set_normalization(stats)
    policy.save(tmp_path / "p")
    loaded = FlowPolicy.load(tmp_path / "p")
    assert type(loaded) is type(policy) and loaded.config == policy.config
    batch = _batch(policy)
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    assert torch.equal(loaded.per_sample_loss(batch, noise, t), policy.per_sample_loss(batch, noise, t))
    assert torch.equal(loaded.sample_actions(batch, noise=noise), policy.sample_actions(batch, noise=noise))
    assert torch.equal(loaded.action_norm.std, torch.full((20,), 3.0))


def test_bad_inputs_are_named(policy):
    batch = _batch(policy)
    with pytest.raises(ValueError, match="noise has shape"):
        policy.per_sample_loss(batch, torch.randn(B, H, 7), policy.sample_time(B))
    batch["action"] = torch.randn(B, 10, A)
    with pytest.raises(ValueError, match=r"expects \[B, 30, 20\]"):
        policy.per_sample_loss(batch, policy.sample_noise(B), policy.sample_time(B))
    batch = _batch(policy)
    batch["observation.state"] = torch.randn(B, 14)
    with pytest.raises(ValueError, match="has 14 dims, the policy expects 20"):
        policy.encode(batch)
    batch = _batch(policy)
    del batch["observation.images.top"]
    with pytest.raises(ValueError, match="lacks cameras"):
        policy.encode(batch)


def test_instruction_matters_and_pretokenized_ids_are_used(policy):
    noise, t = policy.sample_noise(B), policy.sample_time(B)
    a = policy.per_sample_loss(_batch(policy), noise, t)
    b = policy.per_sample_loss(_batch(policy, task="zip the pencil case"), noise, t)
    assert not torch.allclose(a, b)
    batch = _batch(policy)
    enc = policy.encode(batch)
    batch["observation.language.tokens"], batch["observation.language.attention_mask"] = enc.lang_tokens, enc.lang_masks
    batch["task"] = ["ignored when token ids are given"] * B
    assert torch.equal(policy.per_sample_loss(batch, noise, t), a)


# ------------------------------------------------------------------ SmolVLA specifics
def test_smolvla_uses_the_lerobot_time_convention(smol):
    """Numerically: LeRobot's SmolVLA builds x_t = t * noise + (1 - t) * actions (t = 1 is noise),
    regresses u = noise - actions, and samples by Euler from t = 1 down to 0."""
    flow = smol.lerobot.model
    batch = _batch(smol, b=2)
    noise, t = smol.sample_noise(2), torch.tensor([0.3, 1.0])
    seen = {}
    real_embed_suffix = flow.embed_suffix

    def spy(noisy_actions, timestep):
        seen.setdefault("x_t", noisy_actions.detach().clone())
        seen.setdefault("t", []).append(timestep.detach().clone())
        return real_embed_suffix(noisy_actions, timestep)

    flow.embed_suffix = spy  # instance attribute shadows the method
    enc = smol.encode(batch)
    a = torch.nn.functional.pad(smol.action_norm(batch["action"]), (0, 12))
    losses = flow.forward(enc.images, enc.img_masks, enc.lang_tokens, enc.lang_masks, enc.state, a, noise, t)
    expected, u = _x_t(smol, batch, noise, t)
    assert torch.allclose(seen["x_t"], expected, atol=1e-6)
    assert torch.equal(seen["x_t"][1], noise[1])  # t = 1 is pure noise
    assert not torch.allclose(seen["x_t"][0], 0.3 * a[0] + 0.7 * noise[0])  # not the flipped convention
    del flow.embed_suffix
    v = smol.velocity(enc, expected, t)
    assert torch.allclose(losses, (v - u) ** 2, rtol=1e-5, atol=1e-6)  # target u = noise - a

    # sampling: timesteps 1.0, 0.9, ..., 0.1; with the exact velocity of the straight path to a
    # target chunk, (x_t - a*) / t, Euler lands on a* -- only if t = 1 is noise and u = eps - a.
    seen.clear()
    flow.embed_suffix = spy
    smol.sample_actions(batch, num_steps=10, noise=noise)
    del flow.embed_suffix
    assert torch.allclose(torch.cat(seen["t"][:1] + seen["t"][-1:]), torch.tensor([1.0, 1.0, 0.1, 0.1]))
    target = a
    flow.denoise_step = lambda prefix_pad_masks, past_key_values, x_t, timestep: \
        (x_t - target) / timestep.view(-1, 1, 1)
    try:
        out = smol.sample_actions(batch, num_steps=10, noise=noise)
    finally:
        del flow.denoise_step
    assert torch.allclose(out, batch["action"], atol=1e-4)


def test_smolvla_trains_only_the_expert_and_loss_decreases(smol):
    trainable = {n.split(".")[3] for n, p in smol.named_parameters() if p.requires_grad}
    assert "vlm" not in trainable and "lm_expert" in trainable  # SmolVLA's default: VLM frozen
    batch = _batch(smol, b=8, seed=1)
    batch["action"] = batch["observation.state"][:, None, :].repeat(1, H, 1) * 0.5
    g = torch.Generator().manual_seed(0)
    fixed = (smol.sample_noise(8, g), smol.sample_time(8, g))
    start = smol.per_sample_loss(batch, *fixed).mean().item()
    opt = torch.optim.AdamW([p for p in smol.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(25):
        loss = smol.per_sample_loss(batch, smol.sample_noise(8, g), smol.sample_time(8, g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert smol.per_sample_loss(batch, *fixed).mean().item() < 0.7 * start


def test_tiny_smolvlm_directory_builds_the_same_architecture(tmp_path):
    torch.manual_seed(0)
    tiny = make_tiny_smolvla(tmp_path)
    assert sum(p.numel() for p in tiny.parameters()) < 500_000
    vlm_dir = tmp_path / "tiny_smolvlm"
    assert (vlm_dir / "config.json").exists() and (vlm_dir / "tokenizer.json").exists()
    cfg = copy.deepcopy(tiny.config)
    cfg.tiny_vlm, cfg.vlm_model_name = {}, str(vlm_dir)
    other = SmolVLAAdapter(cfg)
    other.load_state_dict(tiny.state_dict(), strict=True)
    batch = _batch(tiny)
    noise, t = tiny.sample_noise(B), tiny.sample_time(B)
    assert torch.equal(other.per_sample_loss(batch, noise, t), tiny.per_sample_loss(batch, noise, t))


def test_smolvla_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="condition"):
        make_tiny_smolvla(num_conditions=2)
    with pytest.raises(ValueError, match="resize_imgs_with_padding"):
        SmolVLAAdapter(SmolVLAAdapterConfig(tiny_vlm={"image_size": 32}, resize_imgs_with_padding=(64, 64)))


# ------------------------------------------------------------------ pi0 / pi0.5 specifics
def test_pi05_writes_the_discretised_state_into_the_prompt():
    pi05 = _make("pi05")
    prompt = pi05.prompts(["plug the lamp in"], torch.tensor([[-1.0, 0.0, 0.999, 5.0]]))[0]
    assert prompt == "Task: plug the lamp in, State: 0 128 255 255;\nAction: "
    batch = _batch(pi05)
    noise, t = pi05.sample_noise(B), pi05.sample_time(B)
    a = pi05.per_sample_loss(batch, noise, t)
    batch["observation.state"] = batch["observation.state"] + 0.5  # reaches the model only through the prompt
    assert not torch.allclose(a, pi05.per_sample_loss(batch, noise, t))


def test_pi0_adapter_accepts_any_core_with_the_inner_contract():
    core = PI0StandIn(chunk_size=H, width=16, vocab_size=1000)
    policy = Pi0Adapter(Pi0AdapterConfig(image_resolution=(32, 32), vocab_size=1000), core=core)
    assert policy.core is core
    batch = _batch(policy)
    assert policy.per_sample_loss(batch, policy.sample_noise(B), policy.sample_time(B)).shape == (B,)


def test_gpu_smoke_script_exits_cleanly_without_cuda():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: run benchmarks/perf/lerobot_gpu_smoke.py by hand")
    out = subprocess.run([sys.executable, "benchmarks/perf/lerobot_gpu_smoke.py"], cwd=ROOT, capture_output=True,
                         check=False, text=True, timeout=120, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert out.returncode == 0, out.stderr
    assert "no CUDA device" in out.stdout


# ------------------------------------------------------------------ LeRobot's real pi0 / pi0.5 code, miniaturised
def _miniature_lerobot_core(variant, monkeypatch):
    """LeRobot's own PI0Pytorch / PI05Pytorch with its size tables patched down (≈ 42 M parameters,
    most in the 257 152-token embedding): the adapter's ``core="lerobot"`` path on a CPU. The full
    models only run in benchmarks/perf/lerobot_gpu_smoke.py."""
    import importlib

    from transformers import PaliGemmaConfig
    from transformers.models.auto import CONFIG_MAPPING

    mod = importlib.import_module(f"lerobot.policies.{variant}.modeling_{variant}")

    class _Mapping(dict):
        def __getitem__(self, key):
            if key == "paligemma":
                return lambda: PaliGemmaConfig(vision_config={"hidden_size": 32, "num_hidden_layers": 1,
                                                              "num_attention_heads": 2, "patch_size": 8})
            return CONFIG_MAPPING[key]

    monkeypatch.setattr(mod, "CONFIG_MAPPING", _Mapping())
    # LeRobot's attention reshape hard-codes 8 query heads and 1 KV head
    monkeypatch.setattr(mod, "get_gemma_config", lambda v: mod.GemmaConfig(
        width=64 if v == "gemma_2b" else 32, depth=2, mlp_dim=64, num_heads=8, num_kv_heads=1, head_dim=8))
    torch.manual_seed(0)
    policy = Pi0Adapter(Pi0AdapterConfig(variant=variant, core="lerobot", image_resolution=(32, 32)))
    # LeRobot fixes the image projection to 2048 (gemma_2b's width); match the miniature's 64
    policy.core.paligemma_with_expert.paligemma.model.multi_modal_projector.linear = torch.nn.Linear(32, 64)
    return policy


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_miniature_lerobot_pi_core_through_the_adapter(variant, monkeypatch):
    policy = _miniature_lerobot_core(variant, monkeypatch)
    assert type(policy.core).__name__ == ("PI0Pytorch" if variant == "pi0" else "PI05Pytorch")
    batch = _batch(policy, b=2)
    batch["action_is_pad"][0, 25:] = True
    noise, t = policy.sample_noise(2), policy.sample_time(2)

    # time convention of LeRobot's pi0 / pi0.5: x_t = t * noise + (1 - t) * actions
    seen = {}
    real = policy.core.embed_suffix
    policy.core.embed_suffix = lambda *args: (seen.setdefault("x_t", args[-2].detach().clone()), real(*args))[1]
    loss = policy.per_sample_loss(batch, noise, t)
    del policy.core.embed_suffix
    x_t, u = _x_t(policy, batch, noise, t)
    assert torch.allclose(seen["x_t"], x_t, atol=1e-6)

    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    with torch.inference_mode():
        assert torch.equal(ref.per_sample_loss(batch, noise, t), loss.detach())
    loss.mean().backward()
    assert policy.core.action_out_proj.weight.grad is not None

    with torch.no_grad():  # velocity (prefix KV cache + denoise_step) agrees with the training forward ...
        enc = policy.encode(batch)
        err = ((policy.velocity(enc, x_t, t) - u) ** 2)[..., :A].mean(-1)
        valid = (~batch["action_is_pad"]).float()
        assert torch.allclose((err * valid).sum(1) / valid.sum(1), loss.detach(), rtol=1e-5, atol=1e-6)
        x = noise.clone()  # ... and Euler over it is LeRobot's sampler
        for i in range(10):
            x = x - 0.1 * policy.velocity(enc, x, torch.full((2,), 1.0 - 0.1 * i))
    chunk = policy.sample_actions(batch, noise=noise)
    assert chunk.shape == (2, H, A) and torch.isfinite(chunk).all()
    assert torch.allclose(policy.action_norm.inverse(x[..., :A]), chunk, atol=1e-5)


def test_the_preference_step_works_through_the_adapters(policy):
    """RPRO's step on an adapter: shared draws give r = 0 against a fresh frozen copy, identical
    pairs score equal, differing a^l is scored on the selected encodings (issue 6)."""
    from flowpro.data import ACTION_L
    from flowpro.finetune import frozen_reference, preference_losses
    from flowpro.losses import rpro_loss

    batch = _batch(policy)
    a_l = batch["action"].clone()
    a_l[1:] += 0.3
    batch[ACTION_L] = a_l
    ref = frozen_reference(policy)
    losses = preference_losses(policy, ref, batch, torch.Generator().manual_seed(0))
    l_tw, l_tl, l_rw, l_rl = losses
    assert torch.allclose(l_tw.detach(), l_rw, atol=1e-6) and torch.allclose(l_tl.detach(), l_rl, atol=1e-6)
    assert l_tw[0] == l_tl[0] and not torch.allclose(l_tw[1:], l_tl[1:])
    loss, stats = rpro_loss(*losses, beta=100.0)
    loss.backward()
    assert torch.isfinite(loss) and abs(stats["r_w"]) < 1e-3


def test_a_vlm_missing_locally_is_an_error_not_a_download():
    with pytest.raises(ValueError, match="neither a local directory nor in the local Hugging Face cache"):
        SmolVLAAdapter(SmolVLAAdapterConfig(vlm_model_name="HuggingFaceTB/not-on-this-machine"))
