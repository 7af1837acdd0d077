"""Training entry point.

    python -m flowpro.train sft --task usb --dataset data/usb/demos --out runs/usb_sft
    python -m flowpro.train rpro --task usb --base runs/usb_sft --rounds 3 --out runs/usb_rpro
    python -m flowpro.train rpro ... --backend real --robot-config my_xtrainer.json   (the rounds on the X-Trainer)

Stage 1 (SFT): flow-matching regression on demonstrations (paper Eq. 3 averaged over the
batch), seeded, in the one training loop of :mod:`flowpro.training` (AdamW, warm-up then cosine,
``metrics.csv`` and TensorBoard when installed, checkpoints every ``--save-every`` steps; rerunning
the same command resumes from the last one). The final policy is written to ``<out>/policy``.
Stage 2 (the FlowPRO rounds) lives in :mod:`flowpro.finetune`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from envs.cli import run_command
from flowpro.data import ChunkDataset
from flowpro.policies import POLICIES, FlowPolicy
from flowpro.training import StepOutput, fit, torch_threads


@dataclass
class SFTConfig:
    task: str
    dataset: str
    out: str
    policy: str = "builtin"
    state_only: bool = False
    steps: int = 3000
    batch_size: int = 32
    lr: float = 3e-4
    lr_min: float = 3e-5
    warmup: int = 200
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    save_every: int = 500
    log_every: int = 25
    model: str = "{}"  # JSON overrides of the policy config, e.g. '{"d_model": 64, "image_size": [64, 64]}'
    # Torch threads while training. Pinned (torch's default is one per core) because a matmul's
    # reduction is split by thread count: the same run on a machine with more cores would give
    # other bits (docs/reproducibility.md); one thread also cannot thrash on a loaded machine.
    threads: int = 1


#: ``--policy`` names: the POLICIES registry plus pi0.5, which is the pi0 adapter's other variant.
POLICY_PRESETS: dict[str, tuple[str, dict]] = {**{k: (k, {}) for k in POLICIES}, "pi05": ("pi0", {"variant": "pi05"})}


def make_policy(cfg: SFTConfig) -> FlowPolicy:
    """A fresh policy shaped for the dataset (the state-only variant reads its privileged-state width).

    ``cfg.model`` (JSON) overrides fields of the policy's config class, e.g. for SmolVLA
    ``{"vlm_model_name": "/models/SmolVLM2-500M-Video-Instruct", "load_vlm_weights": true}`` (a
    local directory: nothing is downloaded) or ``{"tiny_vlm": {"image_size": 32},
    "resize_imgs_with_padding": [32, 32], "num_vlm_layers": 2}`` for a tiny offline backbone."""
    if cfg.policy not in POLICY_PRESETS:
        raise ValueError(f"unknown policy {cfg.policy!r}; available: {', '.join(sorted(POLICY_PRESETS))}")
    kind, preset = POLICY_PRESETS[cfg.policy]
    info = Path(cfg.dataset) / "meta/info.json"
    if not info.exists():
        raise FileNotFoundError(f"{cfg.dataset} is not a LeRobotDataset (no meta/info.json)")
    env_dim = json.loads(info.read_text())["features"].get("observation.environment_state", {}).get("shape", [0])[0]
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(cfg.model).items()}
    if cfg.state_only:
        if kind != "builtin":
            raise ValueError(f"--state-only is a variant of the built-in policy; {cfg.policy} reads the cameras")
        overrides = {"use_images": False, "env_state_dim": env_dim, "cameras": (), **overrides}
    try:
        config = POLICIES[kind].config_class(**{**preset, **overrides})
    except TypeError as e:
        raise ValueError(f"bad --model override for {cfg.policy}: {e}") from None
    return POLICIES[kind](config)


def train_sft(cfg: SFTConfig, progress: bool = True) -> Path:
    with torch_threads(cfg.threads):
        return _train_sft(cfg, progress)


def _train_sft(cfg: SFTConfig, progress: bool) -> Path:
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    policy = make_policy(cfg)
    data = ChunkDataset(cfg.dataset, policy.config, use_images=not cfg.state_only, env_state=cfg.state_only)
    policy.set_normalization(data.stats)
    gen = torch.Generator().manual_seed(cfg.seed)

    def step_fn(policy: FlowPolicy, step: int, log: bool) -> StepOutput:  # paper Eq. 3, batch mean
        idx = torch.randint(len(data), (cfg.batch_size,), generator=gen)
        batch = torch.utils.data.default_collate([data[int(i)] for i in idx])
        noise, t = policy.sample_noise(cfg.batch_size, gen), policy.sample_time(cfg.batch_size, gen)
        return StepOutput(policy.per_sample_loss(batch, noise, t).mean(), context=f" (dataset indices {idx.tolist()})")

    def write_config() -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    fit(cfg, out, policy, gen, step_fn, fields=["step", "loss", "lr", "grad_norm", "samples_per_s", "elapsed_s"],
        desc="sft", progress=progress, tensorboard=True, on_fresh_start=write_config)
    return out / "policy"


def add_config_arguments(parser: argparse.ArgumentParser, config_cls, required: tuple[str, ...]) -> None:
    """One command-line option per field of a config dataclass."""
    for f in config_cls.__dataclass_fields__.values():
        name = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            parser.add_argument(name, action="store_true")
        elif f.name in required:
            parser.add_argument(name, required=True)
        elif f.default is None:
            kind = int if "int" in str(f.type) else float if "float" in str(f.type) else str
            parser.add_argument(name, default=None, type=kind)
        else:
            parser.add_argument(name, type=type(f.default), default=f.default)


def main(argv: list[str] | None = None) -> int:
    from flowpro.benches import BenchStopped
    from flowpro.finetune import RPROConfig, run_rounds

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    add_config_arguments(sub.add_parser("sft", help="stage 1: flow-matching SFT on demonstrations"), SFTConfig,
                         ("task", "dataset", "out"))
    add_config_arguments(sub.add_parser("rpro", help="stage 2: rounds of intervention-and-rollback + preference "
                                                     "fine-tuning (paper Algorithm 2)"), RPROConfig,
                         ("task", "base", "out"))
    args = vars(ap.parse_args(argv))
    stage = args.pop("stage")
    if stage == "sft":
        return run_command(lambda: {"policy": str(train_sft(SFTConfig(**args)))}, bad_input=(FloatingPointError,))
    return run_command(lambda: run_rounds(RPROConfig(**args)), bad_input=(FloatingPointError,), faults=(BenchStopped,))


if __name__ == "__main__":
    sys.exit(main())
