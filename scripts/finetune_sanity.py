"""Fine-tuned policies against their base on the same tuning scenes (issue 14, part 1).

    python scripts/finetune_sanity.py --base-eval runs/usb/diag/base_tuning_id.jsonl \
        --run sft_only=runs/usb/diag/sft_only --run dagger=runs/usb/diag/dagger ... \
        --out results/usb/diagnostics/finetune_sanity

Each ``--run NAME=DIR`` is a one-round ``flowpro.train rpro`` run evaluated on the same seeds as the
base. Per run: SR with its Wilson interval, how far each rollout got, and the paired exact McNemar
test against the base (two-sided: a fine-tuned policy may be worse). Writes ``<out>.json`` and
``<out>.md``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from benchmarks.stats import mcnemar_exact, paired_outcomes, wilson_interval
from envs.expert_eval import summarize


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def row(name: str, rollouts: list[dict], base: list[dict], extra: dict) -> dict:
    s = summarize(rollouts)
    lo, hi = wilson_interval(s["successes"], s["episodes"])
    out = {"name": name, "successes": s["successes"], "n": s["episodes"], "wilson95": [round(lo, 3), round(hi, 3)],
           "reached_stage": s["reached_stage"], "terminated_by": s["terminated_by"], **extra}
    if rollouts is not base:
        t = mcnemar_exact(paired_outcomes(rollouts, base))
        out["vs_base"] = {"run_only": t.counts.method_only, "base_only": t.counts.comparator_only,
                          "p_two_sided": float(f"{t.p_two_sided:.3g}")}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-eval", required=True, help="the base's evaluation JSON lines on the tuning scenes")
    ap.add_argument("--run", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--out", required=True, help="output path without suffix")
    args = ap.parse_args(argv)
    base = read_jsonl(Path(args.base_eval))
    rows = [row("SFT base", base, base, {})]
    for spec in args.run:
        name, _, run = spec.rpartition("=")
        r1 = json.loads((Path(run) / "round_1/round.json").read_text())
        cfg = json.loads((Path(run) / "config.json").read_text())["config"]
        settings = {k: cfg[k] for k in ("method", "loss", "beta", "lr", "steps", "pairs", "handback", "sft_share",
                                        "max_bridge_gap") if cfg.get(k) is not None}
        rows.append(row(name, r1["evaluation"]["id"]["rollouts"], base, {"config": settings,
                                                                          "tuples": r1.get("tuples")}))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    seeds = sorted(r["seed"] for r in base)
    record = {"command": "python scripts/finetune_sanity.py " + " ".join(argv or sys.argv[1:]), "git_commit": commit,
              "scenes": f"ID, tuning seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); no test seed used", "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"# Fine-tuning sanity: one round from the SFT base ({record['scenes']})", "",
             f"Made by `{record['command']}` at `{commit[:10]}`.", "",
             "| run | settings | SR % [Wilson 95 %] | reached align / insert / seated | vs base: run-only, base-only, "
             "McNemar p (two-sided) |", "|---|---|---|---|---|"]
    for r in rows:
        st = r["reached_stage"]
        vs = r.get("vs_base")
        cfg = r.get("config")
        lines.append(f"| {r['name']} | {'' if cfg is None else ', '.join(f'{k} {v}' for k, v in cfg.items())} | "
                     f"{100 * r['successes'] / r['n']:.0f} [{100 * r['wilson95'][0]:.0f}, {100 * r['wilson95'][1]:.0f}] "
                     f"({r['successes']}/{r['n']}) | {st.get('align', 0)} / {st.get('insert', 0)} / "
                     f"{st.get('seated', 0)} | "
                     f"{'' if vs is None else f'{vs['run_only']}, {vs['base_only']}, {vs['p_two_sided']:.3g}'} |")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
