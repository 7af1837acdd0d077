"""Time and memory of one RPRO training step against one SFT step (issue 6).

    python -m benchmarks.perf.rpro_step [--out results/perf/rpro_step.json]

Target: an RPRO step (policy and frozen reference on ``a^w`` and ``a^l``) costs <= 1.6x an SFT
step at the same batch size and policy. Naively it is four forward passes; here the observation
is encoded once per state, the reference runs under ``inference_mode``, and identical pairs
(Case 2/3 tuples) are scored once. Measured side by side in one process (steps interleaved), for
the built-in policy on synthetic batches of the default shapes, at two fractions of tuples whose
``a^l`` differs from ``a^w``: 1.0 (worst case) and ``--differ`` (default 0.25: in round 1, 80 %
of a batch comes from ``D^1_pref``, where Case-2 states on the long corrections outnumber the
Case-1 states on ``tau^l``, and 20 % from ``D_SFT``). Peak memory: fresh processes per kind.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import time

from benchmarks.perf import write_result
from benchmarks.perf.policy_speed import _batch, _config, _in_fresh_process


def _tuples(config, b: int, differ: float):
    import torch

    from flowpro.data import ACTION_L

    batch = _batch(config, b)
    a_l = batch["action"].clone()
    n = round(differ * b)
    a_l[:n] += 0.1 * torch.randn_like(a_l[:n])
    batch[ACTION_L] = a_l
    return batch


def _steps(variant: str, batch_size: int, steps: int, differ: float, kinds: tuple[str, ...], queue) -> None:
    import torch

    from flowpro.finetune import frozen_reference, preference_losses
    from flowpro.losses import rpro_loss
    from flowpro.policies import BuiltinVLA

    torch.manual_seed(0)
    policy = BuiltinVLA(_config(variant))
    reference = frozen_reference(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    batch = _tuples(policy.config, batch_size, differ)

    def sft():
        loss = policy.per_sample_loss(batch, policy.sample_noise(batch_size), policy.sample_time(batch_size)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def rpro():
        loss, _ = rpro_loss(*preference_losses(policy, reference, batch), beta=1000.0)
        opt.zero_grad()
        loss.backward()
        opt.step()

    fns = {"sft": sft, "rpro": rpro}
    times = {k: [] for k in kinds}
    for i in range(steps + 2):
        for k in kinds:  # interleaved: both see the same machine load
            t0 = time.perf_counter()
            fns[k]()
            if i >= 2:
                times[k].append(time.perf_counter() - t0)
    out = {k: round(1000 * sorted(v)[len(v) // 2], 2) for k, v in times.items()}
    out["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    queue.put(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="results/perf/rpro_step.json")
    ap.add_argument("--differ", type=float, default=0.25)
    args = ap.parse_args()
    result: dict = {"command": "python -m benchmarks.perf.rpro_step", "target_ratio": 1.6, "variants": {}}
    for variant, b, steps in (("state", 64, 30), ("vision", 32, 8)):
        row: dict = {"batch_size": b}
        for differ in (1.0, args.differ):
            t = _in_fresh_process(_steps, variant, b, steps, differ, ("sft", "rpro"))
            row[f"differ_{differ}"] = {"sft_step_ms": t["sft"], "rpro_step_ms": t["rpro"],
                                       "ratio": round(t["rpro"] / t["sft"], 3)}
        row["peak_rss_mib"] = {k: _in_fresh_process(_steps, variant, b, 3, 1.0, (k,))["peak_rss_mib"]
                               for k in ("sft", "rpro")}
        result["variants"][variant] = row
    result["machine"] = {"cpu_count": os.cpu_count(), "python": platform.python_version()}
    write_result(args.out, result)


if __name__ == "__main__":
    mp.freeze_support()
    main()
