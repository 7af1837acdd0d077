"""LeRobot flow-matching VLAs (SmolVLA, pi0, pi0.5) behind the :class:`FlowPolicy` contract.

Both adapters keep the harness conventions of docs/method.md §Flow matching and only borrow LeRobot's *inner* models:

* **Injected draws.** ``per_sample_loss(batch, noise, time)`` calls the inner
  ``model.forward(images, img_masks, lang_tokens, lang_masks, state, actions, noise, time)``
  (pi0.5: without ``state``) with the caller's noise and time, never LeRobot's own sampling, so
  a policy and its frozen reference see identical draws (docs/method.md §Shared draws).
* **Noise is drawn in the padded action space.** LeRobot pads actions (and states) with zeros
  to ``max_action_dim`` (32) before the flow, and draws its noise on the padded chunk.
  :meth:`sample_noise` therefore returns ``[B, H, max_action_dim]``; ``per_sample_loss`` and
  ``sample_actions`` also accept ``[B, H, action_dim]`` noise, which they zero-pad (the padded
  dims then carry ``x_t = 0``, unlike LeRobot's own draws; prefer :meth:`sample_noise`).
* **Own reduction.** The inner model returns the element-wise ``(u - v)^2`` over the padded
  chunk; the adapter keeps the ``action_dim`` real dims and averages over the valid (not
  ``action_is_pad``) steps, exactly like :meth:`FlowPolicy.per_sample_loss`. LeRobot's own
  ``reduction="none"`` is not used (pi0's averages over padded steps).
* **Time convention** (verified numerically in ``tests/test_lerobot_adapter.py``): LeRobot's
  inner models build ``x_t = t * noise + (1 - t) * actions`` and target ``u = noise - actions``,
  and sample by Euler from ``t = 1`` to ``0`` -- the same as docs/method.md §Flow matching.
* **Normalisation** stays the harness's (mean/std buffers of :class:`FlowPolicy`), applied
  before padding; LeRobot's processor pipelines are not used.
* **Language.** SmolVLA: ``batch["task"]`` (+ ``"\\n"``, as LeRobot's processor does) is tokenized
  inside the adapter with the tokenizer of the VLM directory (``vlm_with_expert.processor``),
  right-padded to the longest instruction and truncated to ``tokenizer_max_length``. pi0/pi0.5:
  PaliGemma's tokenizer is gated, so the adapter uses a local tokenizer when
  ``tokenizer_name`` points at one and otherwise *hashed word ids* (not PaliGemma ids; fine for
  random-init models and the stand-in, meaningless for pretrained weights). Both adapters use
  pre-tokenized ``observation.language.tokens`` / ``observation.language.attention_mask`` when
  the batch carries them.

``encode`` returns the prepared model inputs (resized images in [-1, 1], tokens, padded
normalised state): LeRobot's training forward recomputes the VLM prefix together with the
action suffix, so there is no cheaper reusable encoding to hand out; passing ``encoding=`` to
``per_sample_loss`` only skips the input preparation.

:func:`make_tiny_smolvla` builds a ~0.25 M-parameter SmolVLA fully offline (sub-second): a tiny
SmolVLM (Idefics3-style vision tower + Llama text model) config and a byte-level tokenizer are
written to a directory that ``SmolVLAConfig.vlm_model_name`` points at, with
``load_vlm_weights=False``.
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowpro.policies.base import ACTION, ACTION_PAD, OBS_STATE, FlowPolicy, PolicyConfig, image_key, register_policy
from flowpro.policies.builtin import hash_words

LANG_TOKENS = "observation.language.tokens"  # lerobot.utils.constants.OBS_LANGUAGE_TOKENS
LANG_MASK = "observation.language.attention_mask"  # lerobot.utils.constants.OBS_LANGUAGE_ATTENTION_MASK

# ---------------------------------------------------------------------------------- tiny SmolVLM

#: Sizes of the tiny SmolVLM written by :func:`write_tiny_smolvlm` (≈ 0.25 M parameters with the expert).
TINY_SMOLVLM: dict[str, int] = {
    "text_hidden": 64, "text_layers": 2, "text_heads": 4, "text_kv_heads": 2, "text_head_dim": 16,
    "text_intermediate": 128, "vision_hidden": 32, "vision_layers": 1, "vision_heads": 2,
    "vision_intermediate": 64, "image_size": 32, "patch_size": 8, "scale_factor": 2,
}

_SPECIAL_TOKENS = ("<pad>", "<unk>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>",
                   "<global-img>", "<image>")


def _byte_level_tokenizer():
    """A byte-level BPE without merges: every UTF-8 byte is a token (lossless, no training, so
    the same ids on every machine). Carries the special tokens SmolVLA reads from its tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(_SPECIAL_TOKENS)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        extra_special_tokens={"fake_image_token": "<fake_token_around_image>", "global_image_token": "<global-img>",
                              "image_token": "<image>", "end_of_utterance_token": "<end_of_utterance>"})


def write_tiny_smolvlm(directory: str | Path, **sizes: int) -> Path:
    """Write a tiny SmolVLM (``config.json``, tokenizer, processor configs; no weights) to
    ``directory``: what ``SmolVLAConfig.vlm_model_name`` may point at with ``load_vlm_weights=False``.
    ``sizes`` override :data:`TINY_SMOLVLM`."""
    from transformers import SmolVLMConfig, SmolVLMProcessor
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMVideoProcessor

    unknown = set(sizes) - set(TINY_SMOLVLM)
    if unknown:
        raise ValueError(f"unknown tiny SmolVLM sizes {sorted(unknown)}; known: {sorted(TINY_SMOLVLM)}")
    s = {**TINY_SMOLVLM, **sizes}
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tokenizer = _byte_level_tokenizer()
    side = s["image_size"]
    tokens_per_image = (side // s["patch_size"]) ** 2 // s["scale_factor"] ** 2
    image_processor = SmolVLMImageProcessor(do_resize=False, do_image_splitting=False,
                                            size={"longest_edge": side}, max_image_size={"longest_edge": side})
    SmolVLMProcessor(image_processor=image_processor, tokenizer=tokenizer, video_processor=SmolVLMVideoProcessor(),
                     image_seq_len=tokens_per_image).save_pretrained(d)
    SmolVLMConfig(
        vision_config={"hidden_size": s["vision_hidden"], "intermediate_size": s["vision_intermediate"],
                       "num_hidden_layers": s["vision_layers"], "num_attention_heads": s["vision_heads"],
                       "image_size": side, "patch_size": s["patch_size"]},
        text_config={"model_type": "llama", "hidden_size": s["text_hidden"],
                     "intermediate_size": s["text_intermediate"], "num_hidden_layers": s["text_layers"],
                     "num_attention_heads": s["text_heads"],
                     "num_key_value_heads": s["text_kv_heads"], "head_dim": s["text_head_dim"],
                     "vocab_size": len(tokenizer), "max_position_embeddings": 1024, "pad_token_id": 0},
        scale_factor=s["scale_factor"], image_token_id=tokenizer.convert_tokens_to_ids("<image>"), pad_token_id=0,
    ).save_pretrained(d)
    return d


# ---------------------------------------------------------------------------------- shared helpers


@dataclass
class VLAInputs:
    """Prepared inputs of a LeRobot VLA (what :meth:`encode` returns)."""

    images: list[Tensor]  # each [B, 3, h, w] in [-1, 1], resized for the model
    img_masks: list[Tensor]  # each [B] bool
    lang_tokens: Tensor  # [B, L] long
    lang_masks: Tensor  # [B, L] bool
    state: Tensor  # [B, max_state_dim], normalised and zero-padded

    def repeat_interleave(self, n: int) -> VLAInputs:
        """One state encoding shared by ``n`` consecutive chunks."""
        def r(x: Tensor) -> Tensor:
            return x.repeat_interleave(n, dim=0)

        return VLAInputs([r(i) for i in self.images], [r(m) for m in self.img_masks], r(self.lang_tokens),
                         r(self.lang_masks), r(self.state))

    def select(self, idx: Tensor) -> VLAInputs:
        """The inputs of the states ``idx``."""
        return VLAInputs([i[idx] for i in self.images], [m[idx] for m in self.img_masks], self.lang_tokens[idx],
                         self.lang_masks[idx], self.state[idx])


def _pad_last(x: Tensor, dim: int) -> Tensor:
    return x if x.shape[-1] == dim else nn.functional.pad(x, (0, dim - x.shape[-1]))


def _tasks(batch: dict[str, Any], b: int) -> list[str]:
    task = batch.get("task")
    if task is None:
        raise ValueError("batch lacks 'task' (the instruction strings) and pre-tokenized "
                         f"'{LANG_TOKENS}' / '{LANG_MASK}'")
    tasks = [task] * b if isinstance(task, str) else list(task)
    if len(tasks) != b:
        raise ValueError(f"batch['task'] has {len(tasks)} entries for a batch of {b}")
    return tasks


class _LeRobotFlowAdapter(FlowPolicy):
    """What both adapters share: padded draws, masked reduction over the real dims, checks."""

    def _validate_common(self) -> None:
        c = self.config
        if c.action_dim > c.max_action_dim or c.state_dim > c.max_state_dim:
            raise ValueError(f"action_dim={c.action_dim} / state_dim={c.state_dim} exceed max_action_dim="
                             f"{c.max_action_dim} / max_state_dim={c.max_state_dim}")
        if c.num_conditions:
            raise ValueError(f"{type(self).__name__} has no input for batch['condition'] (num_conditions must be 0)")
        if c.env_state_dim:
            raise ValueError(f"{type(self).__name__} does not read privileged state (env_state_dim must be 0)")
        if not c.cameras:
            raise ValueError(f"{type(self).__name__} needs at least one camera")

    # ------------------------------------------------------------------ draws
    def sample_noise(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Standard normal noise on the *padded* chunk: ``[B, H, max_action_dim]`` (LeRobot's layout)."""
        c = self.config
        return torch.randn(batch_size, c.chunk_size, c.max_action_dim, generator=generator, device=self.device)

    def _padded_noise(self, noise: Tensor, b: int) -> Tensor:
        c = self.config
        if noise.dim() != 3 or noise.shape[0] != b or noise.shape[1] != c.chunk_size or \
                noise.shape[2] not in (c.action_dim, c.max_action_dim):
            raise ValueError(f"noise has shape {tuple(noise.shape)}; expected [{b}, {c.chunk_size}, "
                             f"{c.max_action_dim}] (from sample_noise) or [{b}, {c.chunk_size}, {c.action_dim}]")
        return _pad_last(noise, c.max_action_dim)

    def _start_sampling(self, batch: dict[str, Any], noise: Tensor | None) -> tuple[Any, Tensor]:
        """Encoded inputs and the padded initial noise ``x_1`` for :meth:`sample_actions`."""
        enc = self.encode(batch)
        b = enc.state.shape[0]
        return enc, self._padded_noise(self.sample_noise(b) if noise is None else noise.to(self.device), b)

    def select_encoding(self, encoding: VLAInputs, idx: Tensor) -> VLAInputs:
        return encoding.select(idx)

    def _check_state(self, batch: dict[str, Any]) -> Tensor:
        state = batch[OBS_STATE]
        if state.shape[-1] != self.config.state_dim:
            raise ValueError(f"batch['{OBS_STATE}'] has {state.shape[-1]} dims, "
                             f"the policy expects {self.config.state_dim}")
        return state

    def _check_cameras(self, batch: dict[str, Any]) -> None:
        missing = [cam for cam in self.config.cameras if image_key(cam) not in batch]
        if missing:
            raise ValueError(f"batch lacks cameras {missing}; the policy expects {list(self.config.cameras)}")

    # ------------------------------------------------------------------ loss (paper Eq. 3)
    def _element_losses(self, enc: VLAInputs, actions: Tensor, noise: Tensor, time: Tensor) -> Tensor:
        """The inner model's element-wise ``(u - v)^2`` on the padded chunk, [B, H, max_action_dim]."""
        raise NotImplementedError

    def per_sample_loss(self, batch: dict[str, Any], noise: Tensor, time: Tensor, encoding: Any = None) -> Tensor:
        """Masked per-sample flow-matching loss over the valid steps and the ``action_dim`` real dims -> [B].

        ``noise``: ``[B, H, max_action_dim]`` (as from :meth:`sample_noise`) or ``[B, H, action_dim]``
        (zero-padded). ``time``: [B], ``t = 1`` noise. ``encoding``: from :meth:`encode`, optionally of
        a batch of ``B / k`` states shared by ``k`` consecutive chunks each.
        """
        c = self.config
        actions = batch[ACTION]
        self._check_chunk(actions, "batch['action']")
        b = actions.shape[0]
        a = _pad_last(self.flow_target(actions, batch), c.max_action_dim)
        noise = self._padded_noise(noise, b)
        enc = self.encode(batch) if encoding is None else encoding
        n_states = enc.state.shape[0]
        if n_states != b:
            if b % n_states:
                raise ValueError(f"an encoding of {n_states} states cannot serve {b} chunks")
            enc = enc.repeat_interleave(b // n_states)
        err = self._element_losses(enc, a, noise, time.to(a.dtype))[..., : c.action_dim]
        valid = torch.ones_like(err[..., 0]) if ACTION_PAD not in batch else (~batch[ACTION_PAD]).to(err.dtype)
        per_step = err.mean(-1)
        return (per_step * valid).sum(1) / valid.sum(1).clamp_min(1.0)


# ---------------------------------------------------------------------------------- SmolVLA


@dataclass
class SmolVLAAdapterConfig(PolicyConfig):
    type: str = "smolvla"
    # The VLM backbone: a Hub id (read from the local cache only) or a local directory.
    vlm_model_name: str = "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"
    # Non-empty: ignore vlm_model_name and build a tiny SmolVLM of these sizes (keys of
    # TINY_SMOLVLM) from files written to a throw-away directory, fully offline. The
    # checkpoint then needs nothing but config.json + model.safetensors.
    tiny_vlm: dict[str, int] = field(default_factory=dict)
    load_vlm_weights: bool = False  # True: pretrained VLM weights (from the local HF cache)
    max_state_dim: int = 32
    max_action_dim: int = 32
    resize_imgs_with_padding: tuple[int, int] = (512, 512)
    tokenizer_max_length: int = 48
    pad_language_to: str = "longest"  # or "max_length"
    num_vlm_layers: int = 16
    num_expert_layers: int = -1
    self_attn_every_n_layers: int = 2
    expert_width_multiplier: float = 0.75
    attention_mode: str = "cross_attn"
    add_image_special_tokens: bool = False
    freeze_vision_encoder: bool = True
    train_expert_only: bool = True
    train_state_proj: bool = True
    min_period: float = 4e-3
    max_period: float = 4.0


@register_policy("smolvla")
class SmolVLAAdapter(_LeRobotFlowAdapter):
    """LeRobot's SmolVLA (``lerobot.policies.smolvla.SmolVLAPolicy``, held as ``self.lerobot``)
    behind :class:`FlowPolicy`. The loss goes through the inner ``VLAFlowMatching.forward``
    with injected noise/time; sampling through its KV-cached ``sample_actions``."""

    config_class = SmolVLAAdapterConfig

    def __init__(self, config: SmolVLAAdapterConfig):
        super().__init__(config)
        self._validate_common()
        if config.tiny_vlm:
            side = {**TINY_SMOLVLM, **config.tiny_vlm}["image_size"]
            if tuple(config.resize_imgs_with_padding) != (side, side):
                raise ValueError(f"the tiny SmolVLM sees {side}x{side} images: set resize_imgs_with_padding="
                                 f"({side}, {side}), not {tuple(config.resize_imgs_with_padding)}")
            with tempfile.TemporaryDirectory(prefix="flowpro_tiny_smolvlm_") as tmp:
                self.lerobot = self._build(write_tiny_smolvlm(tmp, **config.tiny_vlm))
        else:
            self.lerobot = self._build(local_model_dir(config.vlm_model_name))
        self.tokenizer = self.lerobot.model.vlm_with_expert.processor.tokenizer

    def _build(self, vlm: str | Path):
        from lerobot.configs import FeatureType, PolicyFeature
        from lerobot.policies.smolvla import SmolVLAConfig, SmolVLAPolicy

        c = self.config
        features = {OBS_STATE: PolicyFeature(type=FeatureType.STATE, shape=(c.state_dim,))}
        for cam in c.cameras:
            features[image_key(cam)] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, *c.image_size))
        lc = SmolVLAConfig(
            input_features=features,
            output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(c.action_dim,))},
            chunk_size=c.chunk_size, n_action_steps=c.n_action_steps, max_state_dim=c.max_state_dim,
            max_action_dim=c.max_action_dim, resize_imgs_with_padding=tuple(c.resize_imgs_with_padding),
            tokenizer_max_length=c.tokenizer_max_length, pad_language_to=c.pad_language_to,
            num_steps=c.num_inference_steps, vlm_model_name=str(vlm), load_vlm_weights=c.load_vlm_weights,
            num_vlm_layers=c.num_vlm_layers, num_expert_layers=c.num_expert_layers,
            self_attn_every_n_layers=c.self_attn_every_n_layers, expert_width_multiplier=c.expert_width_multiplier,
            attention_mode=c.attention_mode, add_image_special_tokens=c.add_image_special_tokens,
            freeze_vision_encoder=c.freeze_vision_encoder, train_expert_only=c.train_expert_only,
            train_state_proj=c.train_state_proj, min_period=c.min_period, max_period=c.max_period,
            device="cpu", push_to_hub=False)
        with contextlib.redirect_stdout(None):  # "Reducing the number of VLM layers ..."
            return SmolVLAPolicy(lc)

    @property
    def flow(self):
        """The inner ``VLAFlowMatching`` module."""
        return self.lerobot.model

    # ------------------------------------------------------------------ encode / velocity
    def tokenize(self, tasks: list[str]) -> tuple[Tensor, Tensor]:
        """Instructions -> (ids [B, L], mask [B, L] bool), as LeRobot's SmolVLA processor does."""
        c = self.config
        texts = [t if t.endswith("\n") else f"{t}\n" for t in tasks]
        out = self.tokenizer(texts, max_length=c.tokenizer_max_length, truncation=True, padding=c.pad_language_to,
                             padding_side="right", return_tensors="pt")
        return out["input_ids"], out["attention_mask"].bool()

    def encode(self, batch: dict[str, Any]) -> VLAInputs:
        c = self.config
        state = self._check_state(batch)
        self._check_cameras(batch)
        dev = self.device
        cams = {image_key(cam): batch[image_key(cam)].to(dev) for cam in c.cameras}
        images, img_masks = self.lerobot.prepare_images(cams)
        if LANG_TOKENS in batch:
            ids, mask = batch[LANG_TOKENS], batch[LANG_MASK].bool()
        else:
            ids, mask = self.tokenize(_tasks(batch, state.shape[0]))
        state = _pad_last(self.state_norm(state.to(dev)), c.max_state_dim)
        return VLAInputs(images, img_masks, ids.to(dev), mask.to(dev), state)

    def velocity(self, encoding: VLAInputs, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        """``v(x_t, t | s)`` through the same joint prefix+suffix pass as the training forward.
        ``x_t``: [B, H, action_dim or max_action_dim]; the velocity has the width of ``x_t``."""
        from lerobot.policies.common.vla_utils import make_att_2d_masks

        m, e = self.flow, encoding
        width = x_t.shape[-1]
        prefix_embs, prefix_pad, prefix_att = m.embed_prefix(e.images, e.img_masks, e.lang_tokens, e.lang_masks,
                                                             state=e.state)
        suffix_embs, suffix_pad, suffix_att = m.embed_suffix(_pad_last(x_t, self.config.max_action_dim), t)
        pad_masks = torch.cat([prefix_pad, suffix_pad], dim=1)
        att_2d = make_att_2d_masks(pad_masks, torch.cat([prefix_att, suffix_att], dim=1))
        (_, suffix_out), _ = m.vlm_with_expert.forward(
            attention_mask=att_2d, position_ids=torch.cumsum(pad_masks, 1) - 1, past_key_values=None,
            inputs_embeds=[prefix_embs, suffix_embs], use_cache=False)
        v = m.action_out_proj(suffix_out[:, -self.config.chunk_size:].to(torch.float32))
        return v[..., :width]

    def _element_losses(self, enc: VLAInputs, actions: Tensor, noise: Tensor, time: Tensor) -> Tensor:
        return self.flow.forward(enc.images, enc.img_masks, enc.lang_tokens, enc.lang_masks, enc.state, actions,
                                 noise, time)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def sample_actions(self, batch: dict[str, Any], num_steps: int | None = None, noise: Tensor | None = None,
                       condition: Tensor | None = None) -> Tensor:
        """LeRobot's KV-cached Euler sampler from ``t = 1``; unnormalised [B, H, action_dim]."""
        enc, x = self._start_sampling(batch, noise)
        lc = self.lerobot.config
        steps, lc.num_steps = lc.num_steps, num_steps or self.config.num_inference_steps
        try:
            out = self.flow.sample_actions(enc.images, enc.img_masks, enc.lang_tokens, enc.lang_masks, enc.state,
                                           noise=x)
        finally:
            lc.num_steps = steps
        return self.actions_from_model(out[..., : self.config.action_dim], batch)


def local_model_dir(name: str) -> Path:
    """A local directory for a VLM named by path or Hub id, from the local Hugging Face cache only:
    nothing is downloaded at run time, so a missing backbone is an error naming what to provide."""
    if Path(name).is_dir():
        return Path(name)
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(name, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as e:
        raise ValueError(f"VLM {name!r} is neither a local directory nor in the local Hugging Face cache "
                         f"({type(e).__name__}); nothing is downloaded at run time: put the model in a directory and "
                         "pass it as vlm_model_name, or use a tiny offline backbone (tiny_vlm)") from None


def make_tiny_smolvla(tmpdir: str | Path | None = None, **overrides: Any) -> SmolVLAAdapter:
    """A tiny random-init SmolVLA adapter (≈ 0.25 M parameters), built offline in well under a second.

    ``overrides`` set :class:`SmolVLAAdapterConfig` fields (defaults here: 96x96 images, H = 30,
    20-dim actions, 2 VLM layers). The adapter builds its backbone from ``config.tiny_vlm``, so
    its checkpoints are self-contained. If ``tmpdir`` is given, the same tiny SmolVLM files
    are also written to ``<tmpdir>/tiny_smolvlm`` (usable as ``vlm_model_name``).
    """
    sizes = dict(overrides.pop("tiny_vlm", None) or TINY_SMOLVLM)
    side = {**TINY_SMOLVLM, **sizes}["image_size"]
    kw: dict[str, Any] = {"tiny_vlm": sizes, "resize_imgs_with_padding": (side, side), "num_vlm_layers": 2,
                          "tokenizer_max_length": 48}
    kw.update(overrides)
    if tmpdir is not None:
        write_tiny_smolvlm(Path(tmpdir) / "tiny_smolvlm", **sizes)
    return SmolVLAAdapter(SmolVLAAdapterConfig(**kw))


# ---------------------------------------------------------------------------------- pi0 / pi0.5


@dataclass
class Pi0AdapterConfig(PolicyConfig):
    type: str = "pi0"
    variant: str = "pi0"  # "pi0" or "pi05" (state goes into the prompt; the inner forward has no state)
    core: str = "stand_in"  # "stand_in" (small CPU module, tests) or "lerobot" (random-init PI0Pytorch/PI05Pytorch)
    max_state_dim: int = 32
    max_action_dim: int = 32
    image_resolution: tuple[int, int] = (224, 224)
    tokenizer_name: str = ""  # local tokenizer directory; "" = hashed word ids
    tokenizer_max_length: int = 48  # pi0 48, pi0.5 200 in LeRobot
    vocab_size: int = 257152  # PaliGemma's; hashed ids are taken modulo this
    # core == "lerobot": PI0Config / PI05Config fields
    paligemma_variant: str = "gemma_2b"
    action_expert_variant: str = "gemma_300m"
    dtype: str = "float32"  # or "bfloat16"
    train_expert_only: bool = False
    freeze_vision_encoder: bool = False
    # core == "stand_in"
    stand_in_width: int = 32
    stand_in_patch: int = 8

    def validate(self) -> None:
        super().validate()
        if self.variant not in ("pi0", "pi05"):
            raise ValueError(f"variant must be 'pi0' or 'pi05', got {self.variant!r}")
        if self.core not in ("stand_in", "lerobot"):
            raise ValueError(f"core must be 'stand_in' or 'lerobot', got {self.core!r}")


class PI0StandIn(nn.Module):
    """A small module with LeRobot ``PI0Pytorch``'s inner contract -- NOT pi0.

    ``forward(images, img_masks, lang_tokens, lang_masks, state, actions, noise, time)`` returns the
    element-wise ``(u - v)^2`` [B, H, max_action_dim] with ``x_t = t * noise + (1 - t) * actions``;
    ``sample_actions(images, img_masks, lang_tokens, lang_masks, state, noise=None, num_steps=None)``
    integrates from ``t = 1`` with LeRobot's ``euler_integrate``. The network: patch-embedded
    images and embedded tokens, mask-averaged into one context vector; noisy action tokens fused
    with a sine-cosine time embedding (pi0's ``action_time_mlp``), plus context, state and a step
    position, through a residual MLP.
    """

    def __init__(self, chunk_size: int, max_state_dim: int = 32, max_action_dim: int = 32, width: int = 32,
                 vocab_size: int = 257152, patch: int = 8, num_inference_steps: int = 10,
                 min_period: float = 4e-3, max_period: float = 4.0):
        super().__init__()
        self.chunk_size, self.num_inference_steps = chunk_size, num_inference_steps
        self.min_period, self.max_period, self.width = min_period, max_period, width
        self.patch_embed = nn.Conv2d(3, width, patch, patch)
        # Hashed ids live in [0, vocab_size); a small table indexed modulo its size keeps the stand-in small.
        self.token_embed = nn.Embedding(min(vocab_size, 4096), width)
        self.state_proj = nn.Linear(max_state_dim, width)
        self.action_in_proj = nn.Linear(max_action_dim, width)
        self.action_time_mlp_in = nn.Linear(2 * width, width)
        self.action_time_mlp_out = nn.Linear(width, width)
        self.step_pos = nn.Parameter(torch.randn(chunk_size, width) * 0.02)
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.GELU(),
                                 nn.Linear(2 * width, width))
        self.action_out_proj = nn.Linear(width, max_action_dim)

    def embed_prefix(self, images, img_masks, lang_tokens, lang_masks) -> Tensor:
        pooled, weights = 0.0, 0.0
        for img, mask in zip(images, img_masks, strict=True):
            m = mask.to(img.dtype)[:, None]
            pooled = pooled + self.patch_embed(img).flatten(2).mean(-1) * m
            weights = weights + m
        img_ctx = pooled / torch.clamp(weights, min=1.0)
        lm = lang_masks.to(img_ctx.dtype)[..., None]
        words = self.token_embed(lang_tokens % self.token_embed.num_embeddings) * lm
        return img_ctx + words.sum(1) / lm.sum(1).clamp_min(1.0)

    def velocity(self, context: Tensor, state: Tensor | None, x_t: Tensor, time: Tensor) -> Tensor:
        from lerobot.policies.common.vla_utils import create_sinusoidal_pos_embedding

        h = self.action_in_proj(x_t)
        t_emb = create_sinusoidal_pos_embedding(time, self.width, self.min_period, self.max_period, device=x_t.device)
        t_emb = t_emb.to(h.dtype)[:, None].expand_as(h)
        h = self.action_time_mlp_out(nn.functional.silu(self.action_time_mlp_in(torch.cat([h, t_emb], dim=-1))))
        ctx = context if state is None else context + self.state_proj(state)
        h = h + ctx[:, None] + self.step_pos
        return self.action_out_proj(h + self.mlp(h))

    def forward(self, images, img_masks, lang_tokens, lang_masks, state, actions, noise, time) -> Tensor:
        t = time[:, None, None]
        x_t = t * noise + (1 - t) * actions
        u_t = noise - actions
        v_t = self.velocity(self.embed_prefix(images, img_masks, lang_tokens, lang_masks), state, x_t, time)
        return nn.functional.mse_loss(u_t, v_t, reduction="none")

    @torch.no_grad()
    def sample_actions(self, images, img_masks, lang_tokens, lang_masks, state, noise=None, num_steps=None) -> Tensor:
        from lerobot.policies.common.flow_matching import euler_integrate

        if noise is None:
            noise = torch.randn(state.shape[0], self.chunk_size, self.action_in_proj.in_features, device=state.device)
        ctx = self.embed_prefix(images, img_masks, lang_tokens, lang_masks)
        return euler_integrate(lambda x, t: self.velocity(ctx, state, x, t), noise,
                               num_steps or self.num_inference_steps)


class PI05StandIn(PI0StandIn):
    """:class:`PI0StandIn` with ``PI05Pytorch``'s inner contract: no ``state`` argument (pi0.5
    reads the discretised state from its prompt tokens)."""

    def forward(self, images, img_masks, tokens, masks, actions, noise, time) -> Tensor:  # type: ignore[override]
        return super().forward(images, img_masks, tokens, masks, None, actions, noise, time)

    @torch.no_grad()
    def sample_actions(self, images, img_masks, tokens, masks, noise=None, num_steps=None) -> Tensor:  # type: ignore[override]
        from lerobot.policies.common.flow_matching import euler_integrate

        if noise is None:
            noise = torch.randn(tokens.shape[0], self.chunk_size, self.action_in_proj.in_features, device=tokens.device)
        ctx = self.embed_prefix(images, img_masks, tokens, masks)
        return euler_integrate(lambda x, t: self.velocity(ctx, None, x, t), noise,
                               num_steps or self.num_inference_steps)


def build_lerobot_pi_core(config: Pi0AdapterConfig) -> nn.Module:
    """A random-init LeRobot ``PI0Pytorch`` / ``PI05Pytorch`` (≈ 3-4 B parameters: GPU or patience)."""
    if config.variant == "pi0":
        from lerobot.policies.pi0.configuration_pi0 import PI0Config as LConfig
        from lerobot.policies.pi0.modeling_pi0 import PI0Pytorch as Core
    else:
        from lerobot.policies.pi05.configuration_pi05 import PI05Config as LConfig
        from lerobot.policies.pi05.modeling_pi05 import PI05Pytorch as Core
    lc = LConfig(paligemma_variant=config.paligemma_variant, action_expert_variant=config.action_expert_variant,
                 dtype=config.dtype, chunk_size=config.chunk_size, n_action_steps=config.n_action_steps,
                 max_state_dim=config.max_state_dim, max_action_dim=config.max_action_dim,
                 num_inference_steps=config.num_inference_steps, image_resolution=tuple(config.image_resolution),
                 tokenizer_max_length=config.tokenizer_max_length, train_expert_only=config.train_expert_only,
                 freeze_vision_encoder=config.freeze_vision_encoder, device="cpu", push_to_hub=False)
    return Core(lc)


@register_policy("pi0")
class Pi0Adapter(_LeRobotFlowAdapter):
    """pi0 / pi0.5 behind :class:`FlowPolicy`, around any ``core`` honouring LeRobot's inner contract:

    * ``variant="pi0"``: ``core.forward(images, img_masks, lang_tokens, lang_masks, state, actions, noise, time)``
      -> [B, H, max_action_dim] element losses, ``core.sample_actions(images, img_masks, lang_tokens,
      lang_masks, state, noise=..., num_steps=...)``;
    * ``variant="pi05"``: the same without ``state``; the adapter writes the state into the prompt
      as LeRobot's pi0.5 processor does (``"Task: ..., State: <256-bin ids>;\\nAction: "``; state
      clamped to [-1, 1] after the harness normalisation).

    ``core`` defaults to what ``config.core`` names: :class:`PI0StandIn` / :class:`PI05StandIn` or a
    random-init LeRobot model (:func:`build_lerobot_pi_core`).
    """

    config_class = Pi0AdapterConfig

    def __init__(self, config: Pi0AdapterConfig, core: nn.Module | None = None):
        super().__init__(config)
        self._validate_common()
        if core is None:
            if config.core == "lerobot":
                core = build_lerobot_pi_core(config)
            else:
                cls = PI0StandIn if config.variant == "pi0" else PI05StandIn
                core = cls(config.chunk_size, config.max_state_dim, config.max_action_dim, config.stand_in_width,
                           config.vocab_size, config.stand_in_patch, config.num_inference_steps)
        self.core = core
        self._tokenizer = None
        if config.tokenizer_name:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(config.tokenizer_name, local_files_only=True)

    # ------------------------------------------------------------------ encode
    def prompts(self, tasks: list[str], state: Tensor) -> list[str]:
        """The text LeRobot's processors tokenize: pi0 ``task\\n``; pi0.5 with the discretised state."""
        if self.config.variant == "pi0":
            return [t if t.endswith("\n") else f"{t}\n" for t in tasks]
        s = state.detach().clamp(-1, 1).cpu().numpy()
        bins = np.digitize(s, bins=np.linspace(-1, 1, 256 + 1)[:-1]) - 1
        return [f"Task: {t.strip().replace('_', ' ')}, State: {' '.join(map(str, row))};\nAction: "
                for t, row in zip(tasks, bins, strict=True)]

    def tokenize(self, texts: list[str]) -> tuple[Tensor, Tensor]:
        c = self.config
        if self._tokenizer is None:
            return hash_words(texts, c.vocab_size, c.tokenizer_max_length)
        out = self._tokenizer(texts, max_length=c.tokenizer_max_length, truncation=True, padding="max_length",
                              padding_side="right", return_tensors="pt")
        return out["input_ids"], out["attention_mask"].bool()

    def preprocess_image(self, img: Tensor) -> Tensor:
        """LeRobot pi0's ``_preprocess_images``: centred resize-with-pad to ``image_resolution``, [0, 1] -> [-1, 1]."""
        from lerobot.policies.common.vla_utils import resize_with_pad_torch

        img = img.to(self.device, torch.float32)
        if tuple(img.shape[2:]) != tuple(self.config.image_resolution):
            img = resize_with_pad_torch(img.permute(0, 2, 3, 1), *self.config.image_resolution).permute(0, 3, 1, 2)
        return img * 2.0 - 1.0

    def encode(self, batch: dict[str, Any]) -> VLAInputs:
        c = self.config
        state = self._check_state(batch).to(self.device)
        self._check_cameras(batch)
        b = state.shape[0]
        images = [self.preprocess_image(batch[image_key(cam)]) for cam in c.cameras]
        img_masks = [torch.ones(b, dtype=torch.bool, device=self.device) for _ in c.cameras]
        state = _pad_last(self.state_norm(state), c.max_state_dim)
        if LANG_TOKENS in batch:
            ids, mask = batch[LANG_TOKENS], batch[LANG_MASK].bool()
        else:
            ids, mask = self.tokenize(self.prompts(_tasks(batch, b), state[:, : c.state_dim]))
        return VLAInputs(images, img_masks, ids.to(self.device), mask.to(self.device), state)

    # ------------------------------------------------------------------ core calls
    def _state_args(self, enc: VLAInputs) -> tuple:
        return (enc.state,) if self.config.variant == "pi0" else ()

    def _element_losses(self, enc: VLAInputs, actions: Tensor, noise: Tensor, time: Tensor) -> Tensor:
        return self.core(enc.images, enc.img_masks, enc.lang_tokens, enc.lang_masks, *self._state_args(enc),
                         actions, noise, time)

    def velocity(self, encoding: VLAInputs, x_t: Tensor, t: Tensor, condition: Tensor | None = None) -> Tensor:
        """``v(x_t, t | s)``; the width of ``x_t`` (action_dim or max_action_dim). Stand-in cores expose
        it directly; LeRobot cores through their prefix KV cache and ``denoise_step``, as in sampling."""
        e, width = encoding, x_t.shape[-1]
        x = _pad_last(x_t, self.config.max_action_dim)
        if isinstance(self.core, PI0StandIn):
            ctx = self.core.embed_prefix(e.images, e.img_masks, e.lang_tokens, e.lang_masks)
            v = self.core.velocity(ctx, e.state if self.config.variant == "pi0" else None, x, t)
            return v[..., :width]
        from lerobot.policies.common.vla_utils import make_att_2d_masks, prepare_attention_masks_4d

        core = self.core
        prefix_embs, prefix_pad, prefix_att = core.embed_prefix(e.images, e.img_masks, e.lang_tokens, e.lang_masks)[:3]
        att_4d = prepare_attention_masks_4d(make_att_2d_masks(prefix_pad, prefix_att))
        # as LeRobot's sample_actions does before filling the prefix cache
        core.paligemma_with_expert.paligemma.model.language_model.config._attn_implementation = "eager"
        _, cache = core.paligemma_with_expert.forward(
            attention_mask=att_4d, position_ids=torch.cumsum(prefix_pad, 1) - 1, past_key_values=None,
            inputs_embeds=[prefix_embs, None], use_cache=True)
        v = core.denoise_step(*self._state_args(e), prefix_pad, cache, x, t)
        return v[..., :width]

    @torch.no_grad()
    def sample_actions(self, batch: dict[str, Any], num_steps: int | None = None, noise: Tensor | None = None,
                       condition: Tensor | None = None) -> Tensor:
        """The core's Euler sampler from ``t = 1``; unnormalised [B, H, action_dim]."""
        enc, x = self._start_sampling(batch, noise)
        out = self.core.sample_actions(enc.images, enc.img_masks, enc.lang_tokens, enc.lang_masks,
                                       *self._state_args(enc), noise=x,
                                       num_steps=num_steps or self.config.num_inference_steps)
        return self.actions_from_model(out[..., : self.config.action_dim].to(torch.float32), batch)


__all__ = [
    "TINY_SMOLVLM",
    "PI0StandIn",
    "PI05StandIn",
    "Pi0Adapter",
    "Pi0AdapterConfig",
    "SmolVLAAdapter",
    "SmolVLAAdapterConfig",
    "VLAInputs",
    "build_lerobot_pi_core",
    "make_tiny_smolvla",
    "write_tiny_smolvlm",
]
