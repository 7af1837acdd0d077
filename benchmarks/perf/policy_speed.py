"""Built-in policy speed on this CPU: inference latency per chunk, SFT throughput, peak memory.

    python -m benchmarks.perf.policy_speed [--out results/perf/policy_speed.json]

Target (issue 4): one chunk (10 Euler steps, batch 1, three 96x96 cameras) in < 0.1 of the
time its executed steps take at 30 Hz (n_action_steps = 15 -> 0.5 s, so < 50 ms). Training
throughput and peak resident memory are measured in fresh processes on synthetic batches of
the default shapes (so they do not depend on a dataset on disk).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time

from benchmarks.perf import write_result


def _batch(config, b: int):
    import torch

    batch = {"observation.state": torch.randn(b, config.state_dim), "task": ["plug the lamp in"] * b,
             "action": torch.randn(b, config.chunk_size, config.action_dim),
             "action_is_pad": torch.zeros(b, config.chunk_size, dtype=torch.bool)}
    for cam in config.cameras:
        batch[f"observation.images.{cam}"] = torch.rand(b, 3, *config.image_size)
    if config.env_state_dim:
        batch["observation.environment_state"] = torch.randn(b, config.env_state_dim)
    return batch


def _config(variant: str):
    from flowpro.policies import BuiltinConfig

    return BuiltinConfig() if variant == "vision" else BuiltinConfig(use_images=False, cameras=(), env_state_dim=21)


def _inference(variant: str, threads: int, queue) -> None:
    import torch

    from flowpro.policies import BuiltinVLA

    torch.set_num_threads(threads)
    policy = BuiltinVLA(_config(variant)).eval()
    batch = _batch(policy.config, 1)
    with torch.inference_mode():
        for _ in range(5):
            policy.sample_actions(batch)
        times = []
        for _ in range(30):
            t0 = time.perf_counter()
            policy.sample_actions(batch)
            times.append(time.perf_counter() - t0)
    times.sort()
    queue.put({"median_ms": round(1000 * times[len(times) // 2], 2), "p90_ms": round(1000 * times[int(0.9 * len(times))], 2)})


def _training(variant: str, batch_size: int, steps: int, queue) -> None:
    import torch

    from flowpro.policies import BuiltinVLA

    policy = BuiltinVLA(_config(variant))
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    batch = _batch(policy.config, batch_size)
    for i in range(steps + 2):
        if i == 2:
            t0 = time.perf_counter()
        loss = policy.per_sample_loss(batch, policy.sample_noise(batch_size), policy.sample_time(batch_size)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    queue.put({"samples_per_s": round(steps * batch_size / dt, 1),
               "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})


def _in_fresh_process(fn, *args):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=fn, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/perf/policy_speed.json")
    args = ap.parse_args()
    executed_s = 15 / 30.0
    result: dict = {"command": "python -m benchmarks.perf.policy_speed", "inference": {}, "training": {}}
    for variant in ("vision", "state"):
        for threads in (1, 2):
            r = _in_fresh_process(_inference, variant, threads)
            r["ratio_to_executed_chunk_time"] = round(r["median_ms"] / 1000 / executed_s, 4)
            result["inference"][f"{variant}_threads{threads}"] = r
        result["training"][variant] = _in_fresh_process(_training, variant, 32 if variant == "vision" else 64, 20)
    result["target_inference_ratio"] = 0.1
    result["notes"] = ("vision: 3 cameras 96x96, batch 32; state: privileged state, batch 64; "
                       "peak RSS includes the PyTorch runtime")
    result["machine"] = {"cpu_count": os.cpu_count(), "python": platform.python_version()}
    write_result(args.out, result)


if __name__ == "__main__":
    main()
