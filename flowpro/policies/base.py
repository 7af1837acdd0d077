"""The policy contract every FlowPRO loss and baseline uses (docs/method.md §Flow matching).

Flow-matching convention of LeRobot/openpi: flow time ``t`` in (0, 1], ``t = 1`` is noise and
``t = 0`` data; ``x_t = t * eps + (1 - t) * a``; target velocity ``u = eps - a``. A policy
exposes the per-sample loss for *given* noise and time (paper Eq. 3), so a policy and its
frozen reference are evaluated with identical draws (docs/method.md §Shared draws).

Batches are dicts of tensors in LeRobot's naming: ``observation.state`` [B, S],
``observation.images.<cam>`` [B, 3, H, W] in [0, 1], ``observation.environment_state`` [B, E],
``task`` (list of instruction strings), ``action`` [B, H, A], ``action_is_pad`` [B, H] and,
optionally, ``condition`` [B] (an extra discrete conditioning input, e.g. pi0.6*'s indicator).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

OBS_STATE = "observation.state"
OBS_ENV = "observation.environment_state"
ACTION = "action"
ACTION_PAD = "action_is_pad"
CONDITION = "condition"


def image_key(camera: str) -> str:
    return f"observation.images.{camera}"


@dataclass
class PolicyConfig:
    """Settings shared by every policy; subclasses add their architecture."""

    type: str = "base"
    chunk_size: int = 30  # H: 1 s at 30 Hz
    n_action_steps: int = 15  # executed before re-planning
    action_dim: int = 20
    state_dim: int = 20
    env_state_dim: int = 0  # > 0: the policy reads privileged object poses (state-only runs)
    cameras: tuple[str, ...] = ("top", "left_wrist", "right_wrist")
    image_size: tuple[int, int] = (96, 96)
    time_sampling: str = "beta"  # "beta": Beta(1.5, 1) * 0.999 + 0.001 (pi0); "uniform"
    num_inference_steps: int = 10
    num_conditions: int = 0  # > 0 adds a learned embedding of batch["condition"] in [0, num_conditions)
    # True: the model sees each chunk relative to the current pose (a - observation.state) in all
    # columns but the grippers, as openpi's DeltaActions does; callers still see absolute targets.
    relative_actions: bool = False
    # > 0: normalised observation inputs pass through ``b * tanh(z / b)``, so they stay within
    # +-b. States far from the demonstrations (a strip tilted in a slip, a dropped lamp) otherwise
    # reach |z| in the hundreds on dimensions the demonstrations hardly vary (docs/tuples.md).
    input_bound: float | None = None
    # How actions are scaled: "column" divides each column by its own spread over the data;
    # "group" by one spread per physical quantity (each arm's position, its 6D rotation, each
    # gripper; the RMS of the columns' spreads), so a rotation component the demonstrations keep
    # nearly constant (the tool's tilt) is not magnified 20x beside the others (docs/tuples.md).
    action_scale: str = "column"
    # > 0: in training, every normalised target chunk is clamped to +-b per column, whatever its
    # source (demonstrations, corrections, bridges) and whatever the loss; inference is unchanged.
    # A correction's first second after a rollback asks for tilts the demonstrations never make
    # (36 spreads against their 4.9, 99th percentiles), and those few frames carry most of the flow
    # loss of a round's positives (docs/tuples.md). None: no bound.
    target_bound: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        if self.time_sampling not in ("beta", "uniform"):
            raise ValueError(f"time_sampling must be 'beta' or 'uniform', got {self.time_sampling!r}")
        if self.action_scale not in ("column", "group"):
            raise ValueError(f"action_scale must be 'column' or 'group', got {self.action_scale!r}")
        if self.action_scale == "group" and self.action_dim != 20:
            raise ValueError(f"action_scale 'group' needs the 20-column two-arm layout, got action_dim {self.action_dim}")
        if self.input_bound is not None and not self.input_bound > 0:
            raise ValueError(f"input_bound must be > 0 (or None: no bound), got {self.input_bound}")
        if self.target_bound is not None and not self.target_bound > 0:
            raise ValueError(f"target_bound must be > 0 (or None: no bound), got {self.target_bound}")
        if not 1 <= self.n_action_steps <= self.chunk_size:
            raise ValueError(f"n_action_steps must be in [1, chunk_size={self.chunk_size}], got {self.n_action_steps}")


class Normalizer(nn.Module):
    """Mean/std normalisation whose statistics travel with the checkpoint; with ``bound`` the
    normalised values are squashed smoothly into ``(-bound, bound)`` (observations only: an
    action normaliser must invert exactly)."""

    def __init__(self, dim: int, bound: float | None = None):
        super().__init__()
        self.bound = bound
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def set_stats(self, mean: Tensor, std: Tensor) -> None:
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(1e-4))

    def forward(self, x: Tensor) -> Tensor:
        z = (x - self.mean) / self.std
        return z if self.bound is None else self.bound * torch.tanh(z / self.bound)

    def inverse(self, x: Tensor) -> Tensor:
        return x * self.std + self.mean


GRIPPER_COLUMNS = (9, 19)  # docs/method.md §Action representation: the gripper scalar of each arm stays absolute
# One physical quantity each (PolicyConfig.action_scale = "group"): position, 6D rotation, gripper.
ACTION_GROUPS = (slice(0, 3), slice(3, 9), slice(9, 10), slice(10, 13), slice(13, 19), slice(19, 20))


def group_scale(std: Tensor) -> Tensor:
    """Per-column spreads -> one spread per action group (the RMS of its columns'), per column."""
    out = torch.as_tensor(std, dtype=torch.float32).clone()
    for g in ACTION_GROUPS:
        out[g] = out[g].pow(2).mean().sqrt()
    return out


def relative_mask(action_dim: int) -> Tensor:
    """Columns a relative-action policy expresses as offsets from the current pose."""
    mask = torch.ones(action_dim, dtype=torch.bool)
    mask[[c for c in GRIPPER_COLUMNS if c < action_dim]] = False
    return mask


def to_relative(actions: Tensor, state: Tensor) -> Tensor:
    """``a - s`` on the relative columns of ``actions`` [..., H, A] given ``state`` [..., A]."""
    mask = relative_mask(actions.shape[-1]).to(actions.device)
    return actions - (state * mask).unsqueeze(-2)


#: Policy types by name (``config.json``'s ``type``); a policy module registers its class on import
#: (``flowpro/policies/__init__.py`` imports them all), as LeRobot registers its policy configs.
POLICIES: dict[str, type[FlowPolicy]] = {}


def register_policy(name: str):
    """Class decorator: ``FlowPolicy.load`` builds checkpoints of type ``name`` with this class."""
    def register(cls: type[FlowPolicy]) -> type[FlowPolicy]:
        POLICIES[name] = cls
        return cls
    return register


class FlowPolicy(nn.Module, ABC):
    """A flow-matching action-chunk policy.

    Subclasses implement :meth:`encode` (observation -> reusable encoding) and
    :meth:`velocity` (encoding, noisy chunk, flow time -> velocity); everything else —
    noise/time sampling, the masked per-sample loss, Euler sampling, normalisation, save and
    load — is shared here, so all policies honour the same contract.
    """

    config_class: type[PolicyConfig] = PolicyConfig

    def __init__(self, config: PolicyConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.state_norm = Normalizer(config.state_dim, config.input_bound)
        self.action_norm = Normalizer(config.action_dim)
        self.env_norm = Normalizer(max(config.env_state_dim, 1), config.input_bound)

    # ------------------------------------------------------------------ to implement
    @abstractmethod
    def encode(self, batch: dict[str, Any]) -> Any:
        """Encode the observation once; the result is reused for every chunk of that state."""

    @abstractmethod
    def velocity(self, encoding: Any, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        """Predicted velocity ``v(x_t, t | s)`` for normalised noisy chunks ``x_t`` [B, H, A]."""

    def select_encoding(self, encoding: Any, idx: Tensor) -> Any:
        """The encoding of the states ``idx`` of an encoded batch (to score a subset of chunks)."""
        return encoding[idx]

    # ------------------------------------------------------------------ draws
    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        c = self.config
        return torch.randn(batch_size, c.chunk_size, c.action_dim, generator=generator, device=self.device)

    def sample_time(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        if self.config.time_sampling == "uniform":
            u = torch.rand(batch_size, generator=generator, device=self.device)
        else:  # Beta(1.5, 1) by inverse CDF (F(x) = x^1.5), so a torch.Generator controls it
            u = torch.rand(batch_size, generator=generator, device=self.device) ** (1 / 1.5)
        return u * 0.999 + 0.001

    # ------------------------------------------------------------------ loss (paper Eq. 3)
    def per_sample_loss(self, batch: dict[str, Any], noise: Tensor, time: Tensor, encoding: Any = None) -> Tensor:
        """Masked per-sample flow-matching loss ``mean_(h,d valid) (v - u)^2`` -> [B]."""
        err = self.flow_errors(batch, noise, time, encoding)
        valid = torch.ones_like(err[..., 0]) if ACTION_PAD not in batch else (~batch[ACTION_PAD]).to(err.dtype)
        per_step = err.mean(-1)  # all action dims are real here; padded steps are masked below
        return (per_step * valid).sum(1) / valid.sum(1).clamp_min(1.0)

    def flow_errors(self, batch: dict[str, Any], noise: Tensor, time: Tensor, encoding: Any = None) -> Tensor:
        """The unreduced flow-matching errors ``(v - u)^2`` -> [B, H, A] (padding not masked):
        what :meth:`per_sample_loss` averages, for diagnostics per action dimension."""
        actions = batch[ACTION]
        self._check_chunk(actions, "batch['action']")
        a = self.flow_target(actions, batch)
        if noise.shape != a.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, actions {tuple(a.shape)}")
        t = time.view(-1, 1, 1)
        x_t = t * noise + (1 - t) * a
        u = noise - a
        enc = self.encode(batch) if encoding is None else encoding
        v = self.velocity(enc, x_t, time, batch.get(CONDITION))
        return (v - u) ** 2

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample_actions(self, batch: dict[str, Any], num_steps: int | None = None, noise: Tensor | None = None,
                       condition: Tensor | None = None) -> Tensor:
        """Euler integration of the flow from t = 1 (noise) to 0 (data); unnormalised [B, H, A].

        A conditioned policy uses ``condition`` (or ``batch['condition']``, or its config's
        ``extra['inference_condition']``), with classifier-free guidance when
        ``extra['cfg_weight'] != 1``: ``v = v_null + w (v_cond - v_null)``."""
        steps = num_steps or self.config.num_inference_steps
        enc = self.encode(batch)
        b = batch[OBS_STATE].shape[0]
        x = self.sample_noise(b) if noise is None else noise
        cond = batch.get(CONDITION) if condition is None else condition
        if cond is None and "inference_condition" in self.config.extra:
            cond = torch.full((b,), int(self.config.extra["inference_condition"]), device=x.device)
        w = float(self.config.extra.get("cfg_weight", 1.0))
        null = None
        if cond is not None and w != 1.0:  # classifier-free guidance
            null = torch.full_like(cond, int(self.config.extra["null_condition"]))
        dt = -1.0 / steps
        for i in range(steps):
            t = torch.full((b,), 1.0 + i * dt, device=x.device)
            v = self.velocity(enc, x, t, cond)
            if null is not None:
                v_uncond = self.velocity(enc, x, t, null)
                v = v_uncond + w * (v - v_uncond)
            x = x + dt * v
        return self.actions_from_model(x, batch)

    # ------------------------------------------------------------------ action representation
    def actions_to_model(self, actions: Tensor, batch: dict[str, Any]) -> Tensor:
        """Absolute chunks -> the normalised representation the model is trained on."""
        if self.config.relative_actions:
            actions = to_relative(actions, batch[OBS_STATE])
        return self.action_norm(actions)

    def flow_target(self, actions: Tensor, batch: dict[str, Any]) -> Tensor:
        """The normalised chunk a training loss regresses on: :meth:`actions_to_model`, clamped to
        ``+-config.target_bound`` when one is set (``x_0`` of the flow, paper Eq. 3)."""
        a = self.actions_to_model(actions, batch)
        b = self.config.target_bound
        return a if b is None else a.clamp(-b, b)

    def actions_from_model(self, x: Tensor, batch: dict[str, Any]) -> Tensor:
        """Inverse of :meth:`actions_to_model`: absolute targets [B, H, A]."""
        a = self.action_norm.inverse(x)
        if self.config.relative_actions:
            a = a + (batch[OBS_STATE] * relative_mask(a.shape[-1]).to(a.device)).unsqueeze(-2)
        return a

    # ------------------------------------------------------------------ checks, save, load
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _check_chunk(self, actions: Tensor, what: str) -> None:
        c = self.config
        if actions.dim() != 3 or actions.shape[1:] != (c.chunk_size, c.action_dim):
            raise ValueError(f"{what} has shape {tuple(actions.shape)}; the policy expects "
                             f"[B, {c.chunk_size}, {c.action_dim}]")

    def set_normalization(self, stats: dict[str, dict[str, Tensor]]) -> None:
        """Dataset statistics: ``stats[key] = {"mean": ..., "std": ...}`` for state, action, env state
        (for a relative-action policy, ``stats["action"]`` describes the relative chunks)."""
        self.state_norm.set_stats(stats[OBS_STATE]["mean"], stats[OBS_STATE]["std"])
        std = stats[ACTION]["std"]
        self.action_norm.set_stats(stats[ACTION]["mean"], group_scale(std) if self.config.action_scale == "group" else std)
        if self.config.env_state_dim:
            self.env_norm.set_stats(stats[OBS_ENV]["mean"], stats[OBS_ENV]["std"])

    def save(self, directory: str | Path) -> None:
        """``config.json`` + ``model.safetensors`` (weights and normalisation statistics)."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / "model.safetensors.tmp"
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(tmp))
        (d / "config.json").write_text(json.dumps({"type": self.config.type, **asdict(self.config)}, indent=2))
        tmp.replace(d / "model.safetensors")

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> FlowPolicy:
        """Load any registered policy type from ``directory``; other architectures are refused."""
        from safetensors.torch import load_file

        d = Path(directory)
        raw = json.loads((d / "config.json").read_text())
        kind = raw.pop("type")
        if kind not in POLICIES:
            raise ValueError(f"checkpoint {d} is a {kind!r} policy; known types: {', '.join(sorted(POLICIES))}")
        policy_cls = POLICIES[kind]
        if cls is not FlowPolicy and not issubclass(policy_cls, cls):
            raise ValueError(f"checkpoint {d} holds a {kind!r} policy, not a {cls.__name__}")
        raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}  # JSON turned tuples into lists
        config = policy_cls.config_class(type=kind, **{k: v for k, v in raw.items() if k != "type"})
        policy = policy_cls(config)
        state = load_file(str(d / "model.safetensors"), device=map_location)
        missing, unexpected = policy.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"checkpoint {d} does not match the {kind!r} architecture of its config: "
                             f"missing {missing[:5]}, unexpected {unexpected[:5]}")
        return policy
