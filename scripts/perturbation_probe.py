"""Is the base fragile to any weight change the size of one fine-tuning round? (issue 14, part 1)

    python scripts/perturbation_probe.py --base runs/usb/sft_xxx --tuned runs/usb/diag7/sft_only \
        --out runs/usb/diag7/perturbed --result results/usb/diagnostics/perturbation_probe.json

One round of SFT-only moves the base's weights by some amount per tensor. This probe moves them
by the same Frobenius norm per tensor in a random direction (Gaussian, seeded) and evaluates the
result on the tuning scenes. If a random move of that size keeps the base's success rate, what
breaks the fine-tuned policy is the direction its data pulls in; if it breaks it too, the policy is
fragile to any change of that size and the learning rate or steps per round are the lever.
Normalisation statistics (buffers) are left as they are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from benchmarks.evaluate import resolve_policy_dir
from flowpro.policies import FlowPolicy
from script_output import add_evaluation_arguments, provenance, tuning_evaluation, write_result  # scripts/, on the path when run as a script


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", required=True)
    ap.add_argument("--tuned", required=True, help="the fine-tuned run (or policy directory) whose step size is copied")
    ap.add_argument("--out", required=True, help="where the perturbed policy is written")
    ap.add_argument("--noise-seed", type=int, default=0)
    add_evaluation_arguments(ap)
    args = ap.parse_args(argv)
    base = FlowPolicy.load(resolve_policy_dir(args.base))
    tuned_dir = Path(args.tuned)
    tuned_dir = tuned_dir / "round_1/train/policy" if (tuned_dir / "round_1/train/policy").exists() else tuned_dir
    tuned = dict(FlowPolicy.load(tuned_dir).named_parameters())
    gen = torch.Generator().manual_seed(args.noise_seed)
    moved, total_base = 0.0, 0.0
    with torch.no_grad():
        for name, p in base.named_parameters():
            step = float((tuned[name] - p).norm())
            noise = torch.randn(p.shape, generator=gen)
            p.add_(noise * (step / float(noise.norm().clamp_min(1e-12))))
            moved += step ** 2
            total_base += float(p.norm()) ** 2
    policy_dir = Path(args.out) / "policy"
    base.save(policy_dir)
    rollouts, evaluation = tuning_evaluation(policy_dir, args.seed, args.rollouts, args.workers)
    result = {**provenance("perturbation_probe.py", argv), "tuned_policy": str(tuned_dir),
              "relative_step": round((moved / total_base) ** 0.5, 5), **evaluation, "rollouts": rollouts}
    write_result(result, args.result, shown={k: v for k, v in result.items() if k != "rollouts"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
