"""GPU smoke test of the pi0 / pi0.5 adapters around random-init LeRobot models.

    python benchmarks/perf/lerobot_gpu_smoke.py [--variants pi0 pi05] [--batch-size 2] [--dtype float32]
    python -m benchmarks.perf.lerobot_gpu_smoke ...

Builds ``PI0Pytorch`` / ``PI05Pytorch`` (≈ 3.5 B parameters each) from LeRobot configs directly on
the GPU with random weights (nothing is downloaded; PaliGemma's tokenizer is gated, so random
token ids are fed as ``observation.language.tokens``), then runs through
:class:`flowpro.policies.lerobot_adapter.Pi0Adapter` one ``per_sample_loss`` (+ backward), the
same loss again under ``torch.inference_mode`` with the same draws, one ``velocity`` (the
KV-cached ``denoise_step`` path) checked against the loss, and one ``sample_actions``. Prints
one JSON object. Without CUDA it prints ``{"status": "skipped", ...}`` and exits 0. Needs
≈ 40 GB of GPU memory in float32 (one variant at a time).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, when run as a script
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _batch(config, b: int, device, generator):
    import torch

    batch = {"observation.state": torch.randn(b, config.state_dim, generator=generator),
             "task": ["plug the lamp in"] * b,
             "action": torch.randn(b, config.chunk_size, config.action_dim, generator=generator),
             "action_is_pad": torch.zeros(b, config.chunk_size, dtype=torch.bool),
             "observation.language.tokens": torch.randint(0, config.vocab_size, (b, config.tokenizer_max_length),
                                                          generator=generator),
             "observation.language.attention_mask": torch.ones(b, config.tokenizer_max_length, dtype=torch.bool)}
    batch["action_is_pad"][:, -5:] = True  # a few padded steps, as at episode ends
    for cam in config.cameras:
        batch[f"observation.images.{cam}"] = torch.rand(b, 3, *config.image_size, generator=generator)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def run_variant(variant: str, args) -> dict:
    import torch

    from flowpro.policies.lerobot_adapter import Pi0Adapter, Pi0AdapterConfig

    dev = torch.device("cuda")
    cfg = Pi0AdapterConfig(variant=variant, core="lerobot", dtype=args.dtype, chunk_size=args.chunk_size,
                           n_action_steps=min(15, args.chunk_size),
                           tokenizer_max_length=48 if variant == "pi0" else 200)
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    with torch.device(dev):  # parameters are created on the GPU directly (minutes and ~19 GB RAM on a CPU)
        policy = Pi0Adapter(cfg)
    policy.to(dev)
    torch.cuda.synchronize()
    out: dict = {"variant": variant, "build_s": round(time.perf_counter() - t0, 2),
                 "params_b": round(sum(p.numel() for p in policy.parameters()) / 1e9, 3)}

    g = torch.Generator().manual_seed(0)
    b = args.batch_size
    batch = _batch(cfg, b, dev, g)
    noise, t = policy.sample_noise(b, torch.Generator(dev).manual_seed(1)), policy.sample_time(b)

    t0 = time.perf_counter()
    loss = policy.per_sample_loss(batch, noise, t)
    loss.mean().backward()
    torch.cuda.synchronize()
    out["loss_fwd_bwd_s"] = round(time.perf_counter() - t0, 3)
    out["per_sample_loss"] = [round(x, 5) for x in loss.detach().float().cpu().tolist()]
    out["loss_shape"] = list(loss.shape)
    out["grad_params"] = sum(1 for p in policy.parameters() if p.grad is not None)
    policy.zero_grad(set_to_none=True)

    with torch.inference_mode():
        again = policy.per_sample_loss(batch, noise, t)
        out["inference_mode_bitwise_equal"] = bool(torch.equal(again, loss.detach()))
        out["inference_mode_max_abs_diff"] = float((again - loss.detach()).abs().max())
        # the velocity path (prefix KV cache + denoise_step) against the joint training forward
        a = torch.nn.functional.pad(policy.action_norm(batch["action"]), (0, cfg.max_action_dim - cfg.action_dim))
        tt = t.view(-1, 1, 1)
        x_t, u = tt * noise + (1 - tt) * a, noise - a
        v = policy.velocity(policy.encode(batch), x_t, t)
        err = ((v.float() - u) ** 2)[..., : cfg.action_dim].mean(-1)
        valid = (~batch["action_is_pad"]).float()
        manual = (err * valid).sum(1) / valid.sum(1)
        out["velocity_path_max_abs_diff"] = float((manual - loss.detach()).abs().max())

        t0 = time.perf_counter()
        chunk = policy.sample_actions(batch, num_steps=10, noise=noise)
        torch.cuda.synchronize()
    out["sample_actions_s"] = round(time.perf_counter() - t0, 3)
    out["sample_shape"] = list(chunk.shape)
    out["sample_finite"] = bool(torch.isfinite(chunk).all())
    out["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    out["ok"] = (out["loss_shape"] == [b] and out["sample_shape"] == [b, cfg.chunk_size, cfg.action_dim]
                 and out["sample_finite"] and all(math.isfinite(x) for x in out["per_sample_loss"]))
    del policy, loss, chunk
    torch.cuda.empty_cache()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", nargs="+", default=["pi0", "pi05"], choices=["pi0", "pi05"])
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=30)
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = ap.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print(json.dumps({"status": "skipped", "reason": "no CUDA device: this smoke test builds ~3.5 B-parameter "
                          "pi0/pi0.5 models and runs only on a GPU machine"}))
        return 0
    report = {"status": "ran", "device": torch.cuda.get_device_name(0), "torch": torch.__version__, "results": []}
    failed = False
    for variant in args.variants:
        try:
            report["results"].append(run_variant(variant, args))
            failed |= not report["results"][-1]["ok"]
        except Exception as exc:  # noqa: BLE001  (report every variant, then fail)
            failed = True
            report["results"].append({"variant": variant, "ok": False, "error": repr(exc),
                                      "traceback": traceback.format_exc(limit=8)})
    print(json.dumps(report, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
