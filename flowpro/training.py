"""The one training loop, for SFT (paper Eq. 3) and the preference rounds (Eqs. 4–6, 30–34).

``fit`` owns what both stages share: AdamW, linear warm-up then cosine decay (:func:`lr_at`),
gradient clipping, a guard against non-finite losses, per-term gradient norms on logged steps,
``metrics.csv`` (appended, so a resumed run continues its file), TensorBoard when asked and
installed, and checkpoints every ``save_every`` steps that a rerun resumes from (the generator,
torch's RNG and any extra state such as the mixing sampler's are put back, so a resumed run ends
bitwise where an uninterrupted one does). A stage gives it a step function: the loss of one batch.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm import tqdm

from flowpro.policies import FlowPolicy


class OptimSettings(Protocol):
    """The fields of a stage's config (``SFTConfig``, ``RPROConfig``) that the loop reads."""

    steps: int
    batch_size: int
    lr: float
    lr_min: float
    warmup: int
    weight_decay: float
    grad_clip: float
    save_every: int
    log_every: int
    threads: int


@dataclass
class StepOutput:
    """One batch's loss, the scalars to log, and the loss terms whose gradient norms are logged."""

    loss: Tensor
    stats: dict[str, float] = field(default_factory=dict)
    terms: dict[str, Tensor] = field(default_factory=dict)
    context: str = ""  # what a non-finite loss error names (e.g. the batch's dataset indices)


#: ``step_fn(policy, step, log) -> StepOutput``: ``log`` says whether this step's stats are written.
StepFn = Callable[[FlowPolicy, int, bool], StepOutput]


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch threads, then put the previous count back."""
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def lr_at(step: int, cfg: OptimSettings) -> float:
    """Linear warm-up to ``lr``, then cosine to ``lr_min``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * min(progress, 1.0)))


def save_checkpoint(out: Path, step: int, policy: FlowPolicy, optim: torch.optim.Optimizer,
                    gen: torch.Generator, extra: dict | None = None) -> None:
    ckpt = out / "checkpoints" / f"step_{step:07d}"
    policy.save(ckpt / "policy")
    torch.save({"step": step, "optimizer": optim.state_dict(), "generator": gen.get_state(),
                "torch_rng": torch.get_rng_state(), **(extra or {})}, ckpt / "training_state.pt")
    tmp = out / "checkpoints" / "last.json.tmp"
    tmp.write_text(json.dumps({"step": step, "dir": ckpt.name}))
    tmp.replace(out / "checkpoints" / "last.json")  # atomic: a crash never points at a half checkpoint


def load_last_checkpoint(out: Path, cfg: OptimSettings, gen: torch.Generator
                         ) -> tuple[FlowPolicy, torch.optim.Optimizer, dict] | None:
    """Policy, optimizer (``cfg.lr``, ``cfg.weight_decay``) and training state of the last
    checkpoint under ``out``, with the generator and torch RNG put back; None for a fresh run."""
    last = out / "checkpoints" / "last.json"
    if not last.exists():
        return None
    ckpt = out / "checkpoints" / json.loads(last.read_text())["dir"]
    policy = FlowPolicy.load(ckpt / "policy")
    optim = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = torch.load(ckpt / "training_state.pt", weights_only=False)
    optim.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    print(f"resuming from {ckpt} (step {state['step']})", file=sys.stderr)
    return policy, optim, state


def fit(cfg: OptimSettings, out: Path, policy: FlowPolicy, gen: torch.Generator, step_fn: StepFn, *,
        fields: list[str], desc: str, progress: bool = True, tensorboard: bool = False,
        extra_state: Callable[[], dict] = dict, on_resume: Callable[[dict], None] | None = None,
        after_step: Callable[[int, dict[str, float]], Exception | None] | None = None,
        on_fresh_start: Callable[[], None] | None = None) -> FlowPolicy:
    """Train ``policy`` for ``cfg.steps`` steps of ``step_fn`` into ``out`` (resuming there), with
    ``cfg.threads`` torch threads; returns the trained policy, also saved to ``out/policy``.

    ``fields`` are the ``metrics.csv`` columns (the loop adds ``step``, ``lr``, ``grad_norm``,
    ``samples_per_s`` and ``elapsed_s`` values; a column not listed is not written). ``extra_state``
    goes into every checkpoint and ``on_resume`` gets it back. ``after_step`` sees each step's stats
    and may return an exception: the loop then checkpoints the step and raises it."""
    with torch_threads(cfg.threads):
        out.mkdir(parents=True, exist_ok=True)
        optim = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        start = 0
        resumed = load_last_checkpoint(out, cfg, gen)
        if resumed:
            policy, optim, state = resumed
            start = state["step"]
            if on_resume is not None:
                on_resume(state)
        elif on_fresh_start is not None:
            on_fresh_start()
        params = [p for p in policy.parameters() if p.requires_grad]
        with (out / "metrics.csv").open("a", newline="") as metrics:
            writer = csv.DictWriter(metrics, fieldnames=fields, extrasaction="ignore")
            if start == 0:
                writer.writeheader()
            tb = _tensorboard(out) if tensorboard else None
            policy.train()
            t0 = time.perf_counter()
            bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc=desc, disable=not progress)
            for step in bar:
                log = step % cfg.log_every == 0 or step == cfg.steps - 1
                try:
                    o = step_fn(policy, step, log)
                except FloatingPointError as e:
                    raise FloatingPointError(f"{desc} step {step}: {e}; the last good checkpoint is kept in "
                                             f"{out / 'checkpoints'}") from None
                if not torch.isfinite(o.loss):
                    raise FloatingPointError(f"{desc} step {step}: non-finite loss {o.loss.item()}{o.context}; the "
                                             f"last good checkpoint is kept in {out / 'checkpoints'}")
                for group in optim.param_groups:
                    group["lr"] = lr_at(step, cfg)
                optim.zero_grad(set_to_none=True)
                stats = {"loss": o.loss.item(), **o.stats}
                if log:  # per-term gradient norms (docs/method.md §Diagnostics)
                    for name, term in o.terms.items():
                        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
                        stats[f"grad_{name}"] = float(torch.sqrt(sum((g ** 2).sum() for g in grads if g is not None)))
                o.loss.backward()
                stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip))
                optim.step()
                stop = after_step(step, stats) if after_step is not None else None
                if log:
                    elapsed = time.perf_counter() - t0
                    writer.writerow({"step": step, "lr": lr_at(step, cfg), "elapsed_s": round(elapsed, 2),
                                     "samples_per_s": round((step - start + 1) * cfg.batch_size / elapsed, 1),
                                     **{k: round(v, 6) for k, v in stats.items()}})
                    metrics.flush()
                    if tb:
                        for k, v in stats.items():
                            tb.add_scalar(f"{desc}/{k}", v, step)
                    bar.set_postfix({k: f"{stats[k]:.4f}" for k in ("loss", "r_w", "r_l") if k in stats})
                if stop is not None:
                    save_checkpoint(out, step + 1, policy, optim, gen, extra_state())
                    raise stop
                if (step + 1) % cfg.save_every == 0 and step + 1 < cfg.steps:
                    save_checkpoint(out, step + 1, policy, optim, gen, extra_state())
        save_checkpoint(out, cfg.steps, policy, optim, gen, extra_state())
        policy.save(out / "policy")
        return policy


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(out / "tensorboard"))
