"""The built-in small VLA, sized for a CPU.

Observation tokens: each camera through a shared small ResNet (GroupNorm, trained from
scratch) pooled to a 3x3 grid, one instruction token (hashed bag of words), one proprio token
and, for the state-only variant, one privileged-state token. The action expert is a
transformer decoder over the ``H`` noisy action tokens (flow-time embedding added to every
token) that cross-attends to the observation tokens. ``encode`` runs once per state.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from flowpro.policies.base import OBS_ENV, OBS_STATE, FlowPolicy, PolicyConfig, image_key, register_policy


@dataclass
class BuiltinConfig(PolicyConfig):
    type: str = "builtin"
    use_images: bool = True  # False: the state-only variant (proprio + privileged object poses)
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    image_channels: tuple[int, ...] = (32, 64, 128)
    grid: int = 3  # image tokens per camera: grid x grid
    vocab_size: int = 1024

    def validate(self) -> None:
        super().validate()
        if not self.use_images and self.env_state_dim <= 0:
            raise ValueError("the state-only variant needs env_state_dim > 0 (privileged object poses)")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")


class ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        groups = lambda c: min(8, c)  # noqa: E731
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.GroupNorm(groups(c_out), c_out), nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.GroupNorm(groups(c_out), c_out))
        self.skip = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.GroupNorm(groups(c_out), c_out))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.skip(x))


class ImageEncoder(nn.Module):
    """Small ResNet with GroupNorm: [N, 3, H, W] in [0, 1] -> [N, grid^2, d_model]."""

    def __init__(self, channels: tuple[int, ...], grid: int, d_model: int):
        super().__init__()
        c0 = channels[0]
        layers: list[nn.Module] = [nn.Conv2d(3, c0, 3, 2, 1, bias=False), nn.GroupNorm(8, c0), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(channels, channels[1:] + (channels[-1],)):
            layers.append(ResBlock(c_in, c_out, 2))
        self.net = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.proj = nn.Linear(channels[-1], d_model)
        self.pos = nn.Parameter(torch.zeros(grid * grid, d_model))

    def forward(self, images: Tensor) -> Tensor:
        x = self.pool(self.net((images - 0.5) / 0.25))
        return self.proj(x.flatten(2).transpose(1, 2)) + self.pos


class Attention(nn.Module):
    """Multi-head attention on ``scaled_dot_product_attention``: the same kernels in training,
    eval and inference mode (torch's fused "fast path" of nn.Transformer* would give a frozen
    reference slightly different numbers than the policy for the same draws)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q, self.kv, self.out = nn.Linear(d, d), nn.Linear(d, 2 * d), nn.Linear(d, d)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        b, n, d = x.shape
        m, h = context.shape[1], self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, m, 2, h, d // h).permute(2, 0, 3, 1, 4)
        y = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, d: int, heads: int, cross: bool):
        super().__init__()
        self.norm1, self.self_attn = nn.LayerNorm(d), Attention(d, heads)
        self.cross = cross
        if cross:
            self.norm2, self.cross_attn = nn.LayerNorm(d), Attention(d, heads)
        self.norm3 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        y = self.norm1(x)
        x = x + self.self_attn(y, y)
        if self.cross:
            x = x + self.cross_attn(self.norm2(x), context)
        return x + self.mlp(self.norm3(x))


def hash_words(texts: list[str], vocab: int, max_length: int | None = None) -> tuple[Tensor, Tensor]:
    """Stable word ids (crc32 modulo ``vocab``) [B, L] and a mask, right-padded to the longest
    text (no tokenizer to download)."""
    words = [t.lower().split()[:max_length] or ["<empty>"] for t in texts]
    length = max(len(w) for w in words)
    ids = torch.zeros(len(texts), length, dtype=torch.long)
    mask = torch.zeros(len(texts), length, dtype=torch.bool)
    for i, ws in enumerate(words):
        for j, w in enumerate(ws):
            ids[i, j] = zlib.crc32(w.encode()) % vocab
            mask[i, j] = True
    return ids, mask


def time_embedding(t: Tensor, dim: int) -> Tensor:
    """Sinusoidal embedding of the flow time in [0, 1]."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
    args = (t * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


@register_policy("builtin")
class BuiltinVLA(FlowPolicy):
    config_class = BuiltinConfig

    def __init__(self, config: BuiltinConfig):
        super().__init__(config)
        d = config.d_model
        if config.use_images:
            self.image_encoder = ImageEncoder(tuple(config.image_channels), config.grid, d)
            self.camera_embed = nn.Parameter(torch.zeros(len(config.cameras), 1, d))
        self.word_embed = nn.Embedding(config.vocab_size, d)
        self.state_proj = nn.Sequential(nn.Linear(config.state_dim, d), nn.GELU(), nn.Linear(d, d))
        if config.env_state_dim:
            self.env_proj = nn.Sequential(nn.Linear(config.env_state_dim, d), nn.GELU(), nn.Linear(d, d))
        self.obs_mixer = Block(d, config.n_heads, cross=False)
        self.action_in = nn.Linear(config.action_dim, d)
        self.action_pos = nn.Parameter(torch.randn(config.chunk_size, d) * 0.02)
        self.time_mlp = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        if config.num_conditions:
            self.condition_embed = nn.Embedding(config.num_conditions, d)
        self.decoder = nn.ModuleList(Block(d, config.n_heads, cross=True) for _ in range(config.n_layers))
        self.action_out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, config.action_dim))

    def encode(self, batch: dict[str, Any]) -> Tensor:
        c = self.config
        state = batch[OBS_STATE]
        if state.shape[-1] != c.state_dim:
            raise ValueError(f"batch['{OBS_STATE}'] has {state.shape[-1]} dims, the policy expects {c.state_dim}")
        b = state.shape[0]
        tokens = [self.state_proj(self.state_norm(state))[:, None]]
        ids, mask = hash_words(list(batch["task"]), c.vocab_size)
        ids, mask = ids.to(state.device), mask.to(state.device)
        words = self.word_embed(ids) * mask[..., None]
        tokens.append((words.sum(1) / mask.sum(1, keepdim=True).clamp_min(1))[:, None])
        if c.env_state_dim:
            env = batch[OBS_ENV]
            if env.shape[-1] != c.env_state_dim:
                raise ValueError(f"batch['{OBS_ENV}'] has {env.shape[-1]} dims, the policy expects {c.env_state_dim}")
            tokens.append(self.env_proj(self.env_norm(env))[:, None])
        if c.use_images:
            missing = [cam for cam in c.cameras if image_key(cam) not in batch]
            if missing:
                raise ValueError(f"batch lacks cameras {missing}; the policy expects {list(c.cameras)}")
            imgs = torch.stack([batch[image_key(cam)] for cam in c.cameras], dim=1)  # [B, C, 3, H, W]
            feats = self.image_encoder(imgs.flatten(0, 1)).view(b, len(c.cameras), -1, c.d_model)
            tokens.append((feats + self.camera_embed).flatten(1, 2))
        return self.obs_mixer(torch.cat(tokens, dim=1))

    def velocity(self, encoding: Tensor, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        c = self.config
        h = self.action_in(x_t) + self.action_pos
        cond = self.time_mlp(time_embedding(t, c.d_model))
        if c.num_conditions:
            if condition is None:
                raise ValueError("this policy is conditioned (num_conditions > 0): pass batch['condition']")
            cond = cond + self.condition_embed(condition.long())
        h = h + cond[:, None]
        if encoding.shape[0] != h.shape[0]:  # one state encoding shared by several chunks
            encoding = encoding.repeat_interleave(h.shape[0] // encoding.shape[0], dim=0)
        for block in self.decoder:
            h = block(h, encoding)
        return self.action_out(h)
