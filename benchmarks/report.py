"""The benchmark report, recomputed from ``results.json`` alone.

    python -m benchmarks.report results/usb/results.json

Writes ``report.md`` next to it with a Table-1-style table (SR mean ± std over seeds, Wilson 95 %
interval of the pooled count, completion time, the paper's numbers for orientation), per-round
SR, CMH tests of FlowPRO-RPRO against each comparator, a sign test against the strongest one,
loss ablations, stage times, and the plots ``sr_per_round.png`` (paper Fig. 3),
``implicit_rewards.png`` (Fig. 4a) and ``ablations.png`` (Fig. 4b).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks.stats import bonferroni, cmh_test, sign_test, wilson_interval

NAMES = {"rpro": "FlowPRO (RPRO)", "dagger": "DAgger", "dagger_buffered": "DAgger-Buffered", "pi06star": "π0.6*",
         "tpo": "TPO", "sft": "SFT only", "dpo": "Flow-DPO", "dpo_sft": "DPO+SFT", "pro": "PRO"}
PAPER_USB = {"rpro": 92, "pi06star": 90, "tpo": 87, "dagger_buffered": 85, "dagger": 80}  # SPEC §1, π0 base


def _pooled(by_seed: dict, split: str) -> tuple[int, int, list[float], list[float]]:
    """Successes, rollouts, per-seed SRs and completion times of the final policies on ``split``."""
    k = n = 0
    srs, cts = [], []
    for run in by_seed.values():
        e = run["final"].get(split)
        if e is None:
            continue
        k, n = k + e["successes"], n + e["episodes"]
        srs.append(e["success_rate"])
        cts += [r["completion_time_s"] for r in e["rollouts"] if r["success"]]
    return k, n, srs, cts


def _cell(by_seed: dict, split: str) -> str:
    k, n, srs, _ = _pooled(by_seed, split)
    if not n:
        return "–"
    lo, hi = wilson_interval(k, n)
    std = statistics.stdev(srs) if len(srs) > 1 else 0.0
    return f"{100 * k / n:.0f} ± {100 * std:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] ({k}/{n})"


def _ct(by_seed: dict) -> str:
    cts = _pooled(by_seed, "id")[3] + _pooled(by_seed, "ood")[3]
    return f"{statistics.mean(cts):.1f}" if cts else "–"


def _table(method: str, comparator: str, runs: dict, split: str) -> list[list[int]]:
    k1, n1, _, _ = _pooled(runs[method], split)
    k2, n2, _, _ = _pooled(runs[comparator], split)
    return [[k1, n1 - k1], [k2, n2 - k2]]


def _fmt_p(p: float) -> str:
    return f"{p:.3g}"


def _plots(results: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    methods = results.get("methods", {})
    base = results["base"]["evaluation"]["id"]["success_rate"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m, by_seed in methods.items():
        rounds = sorted({r["round"] for run in by_seed.values() for r in run["rounds"]})
        means = [statistics.mean(r["evaluation"]["id"]["success_rate"] for run in by_seed.values()
                                 for r in run["rounds"] if r["round"] == k and "id" in r.get("evaluation", {}))
                 for k in rounds]
        ax.plot([0, *rounds], [100 * base, *(100 * x for x in means)], marker="o", label=NAMES.get(m, m))
    ax.set_xlabel("round")
    ax.set_ylabel("SR ID [%]")
    ax.set_title("success rate per round (round 0 = SFT base)", fontsize=10)
    ax.legend(fontsize=7)
    fig.savefig(out / "sr_per_round.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    made.append("sr_per_round.png")

    curves = {NAMES.get(m, m): by_seed for m, by_seed in methods.items()}
    curves.update({f"{NAMES.get(loss, loss)} (ablation)": by_seed for loss, by_seed in results.get("ablations", {}).items()})
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    any_curve = False
    for label, by_seed in curves.items():
        run = next(iter(by_seed.values()))
        xs, rw, rl, offset = [], [], [], 0
        for c in run.get("curves", []):
            if not c["r_w"] or c["r_w"][0] is None:
                continue
            xs += [offset + s for s in c["step"]]
            rw += c["r_w"]
            rl += c["r_l"]
            offset = xs[-1] + 1
        if xs:
            any_curve = True
            axes[0].plot(xs, rw, label=label)
            axes[1].plot(xs, rl, label=label)
    if any_curve:
        for ax, name in zip(axes, ("r_w (implicit reward of a^w)", "r_l (implicit reward of a^l)")):
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("training step (rounds concatenated)")
            ax.axhline(0, color="grey", lw=0.5)
        axes[0].legend(fontsize=7)
        fig.savefig(out / "implicit_rewards.png", dpi=110, bbox_inches="tight")
        made.append("implicit_rewards.png")
    plt.close(fig)

    if results.get("ablations"):
        fig, ax = plt.subplots(figsize=(6, 3.4))
        losses = list(results["ablations"])
        for j, split in enumerate(("id", "ood")):
            vals = []
            for loss in losses:
                k, n, _, _ = _pooled(results["ablations"][loss], split)
                vals.append(100 * k / n if n else 0)
            ax.bar([i + 0.4 * j for i in range(len(losses))], vals, width=0.4, label=split.upper())
        ax.set_xticks([i + 0.2 for i in range(len(losses))], [NAMES.get(x, x) for x in losses], fontsize=8)
        ax.set_ylabel("SR [%] after one round")
        ax.legend(fontsize=8)
        fig.savefig(out / "ablations.png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        made.append("ablations.png")
    return made


def write_report(results_file: str | Path) -> Path:
    results_file = Path(results_file)
    results = json.loads(results_file.read_text())
    out = results_file.parent
    s = results["settings"]
    p = s["profile_settings"]
    methods = results.get("methods", {})
    if s.get("base"):  # a real-bench run from a given base
        base_text = f"given ({s['base']})"
    else:
        base_text = f"{results['demos'].get('episodes', p['demos'])} demonstrations, {p['sft_steps']} steps"
    lines = [f"# FlowPRO benchmark: {s['task'].upper()} ({s['profile']} profile)", "",
             f"Made by `{results['command']}` at commit `{results['git_commit']}`; every number below is "
             f"recomputed from `results.json` by `python -m benchmarks.report {results_file}`.", "",
             "## Protocol", "",
             f"- {s['seeds']} training seed(s) per method, {s['rounds']} round(s), pairs per round {p['pairs']}, "
             f"{p['steps']} fine-tuning steps per round (batch {p['batch_size']}), {p['rollouts']} evaluation "
             f"rollouts per split (ID after every round, ID and OOD after the last; seeds "
             f"1000–{999 + p['rollouts']}).",
             f"- Policy: built-in, {'state-only (privileged object poses)' if p['state_only'] else 'vision'}; "
             f"SFT base: {base_text}. Backend: {s['backend']}.",
             "- The paper's protocol is 3 seeds × 100 rollouts × 3 rounds (30 pairs each on USB); "
             + ("this profile is smaller to fit a 2-core CPU, so its intervals are wide." if s["profile"] != "paper"
                else "this run follows it."), "",
             "## Scripted expert and SFT base", "",
             "| policy | SR ID % [Wilson 95 %] | SR OOD % | CT s |", "|---|---|---|---|"]
    for name, ev in (("scripted expert", results["expert"]), ("SFT base", results["base"]["evaluation"])):
        if "skipped" in ev:  # the real bench has no scripted expert
            lines.append(f"| {name} | skipped: {ev['skipped']} | – | – |")
            continue
        cells = []
        for split in ("id", "ood"):
            e = ev[split]
            lo, hi = e["wilson95"]
            cells.append(f"{100 * e['success_rate']:.0f} [{100 * lo:.0f}, {100 * hi:.0f}] ({e['successes']}/{e['episodes']})")
        ct = ev["id"].get("mean_completion_time_s")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} | {ct if ct is not None else '–'} |")
    lines += ["", "## Final success rates (Table 1 style)", "",
              "SR % as mean ± std over seeds, [Wilson 95 % interval of the pooled count], (successes/rollouts).", "",
              "| method | SR ID | SR OOD | CT s | paper USB (π0) |", "|---|---|---|---|---|"]
    for m, by_seed in methods.items():
        lines.append(f"| {NAMES.get(m, m)} | {_cell(by_seed, 'id')} | {_cell(by_seed, 'ood')} | {_ct(by_seed)} | "
                     f"{PAPER_USB.get(m, '–') if s['task'] == 'usb' else '–'} |")
    if methods:
        rounds = sorted({r["round"] for by_seed in methods.values() for run in by_seed.values() for r in run["rounds"]})
        lines += ["", "## SR ID per round (paper Fig. 3)", "", "| method | base | " + " | ".join(f"round {k}" for k in rounds) + " |",
                  "|---|---|" + "---|" * len(rounds)]
        base_id = results["base"]["evaluation"]["id"]["success_rate"]
        for m, by_seed in methods.items():
            cells = []
            for k in rounds:
                vals = [r["evaluation"]["id"]["success_rate"] for run in by_seed.values() for r in run["rounds"]
                        if r["round"] == k and "id" in r.get("evaluation", {})]
                cells.append(f"{100 * statistics.mean(vals):.0f}" if vals else "–")
            lines.append(f"| {NAMES.get(m, m)} | {100 * base_id:.0f} | " + " | ".join(cells) + " |")
        pairs_cells = []
        for m, by_seed in methods.items():
            run = next(iter(by_seed.values()))
            kinds: dict[str, int] = {}
            for r in run["rounds"]:
                for kind, v in r["collection"].get("failure_kinds", {}).items():
                    kinds[kind] = kinds.get(kind, 0) + v
            pairs_cells.append(f"| {NAMES.get(m, m)} | " + ", ".join(
                f"{r['collection']['pairs']} pairs / {r['collection']['rollouts']} rollouts"
                if r["collection"].get("rollouts") else f"{r['collection']['pairs']} pairs (the shared round-1 set)"
                for r in run["rounds"])
                + f" | {', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))} |")
        lines += ["", "Interventions (first seed): pairs collected per round and the oracle's reasons.", "",
                  "| method | per round | intervention reasons |", "|---|---|---|", *pairs_cells]
    if "rpro" in methods and len(methods) > 1:
        comparators = [m for m in methods if m != "rpro"]
        alpha = bonferroni(0.05, len(comparators))
        lines += ["", "## FlowPRO (RPRO) against each comparator: Cochran–Mantel–Haenszel", "",
                  f"Strata: {s['task'].upper()} × split (ID, OOD) of the final policies, one 2×2 table each "
                  f"(RPRO vs comparator × success/failure); score test without continuity correction, one-sided p "
                  f"(RPRO better); Mantel–Haenszel pooled OR with Robins–Breslow–Greenland 95 % CI. Bonferroni over "
                  f"{len(comparators)} comparators: α = {alpha:.4f}.", "",
                  "| comparator | χ² | z | p (one-sided) | OR [95 % CI] | significant |", "|---|---|---|---|---|---|"]
        for c in comparators:
            tables = [_table("rpro", c, methods, split) for split in ("id", "ood")]
            tables = [t for t in tables if sum(map(sum, t))]
            r = cmh_test(tables)
            lines.append(f"| {NAMES.get(c, c)} | {r.statistic:.2f} | {r.z:.2f} | {_fmt_p(r.p_one_sided)} | "
                         f"{r.odds_ratio:.2f} [{r.ci95[0]:.2f}, {r.ci95[1]:.2f}] | {'yes' if r.p_one_sided < alpha else 'no'} |")
        best = max(comparators, key=lambda c: sum(_pooled(methods[c], sp)[0] for sp in ("id", "ood")))
        wins = losses = ties = 0
        for split in ("id", "ood"):
            for seed in methods["rpro"]:
                if seed not in methods[best] or split not in methods["rpro"][seed]["final"]:
                    continue
                a = methods["rpro"][seed]["final"][split]["success_rate"]
                b = methods[best][seed]["final"][split]["success_rate"]
                wins, losses, ties = wins + (a > b), losses + (a < b), ties + (a == b)
        st = sign_test(wins, losses, ties)
        lines += ["", f"Sign test against the strongest comparator ({NAMES.get(best, best)}) over seed × split strata: "
                      f"{st.wins} wins, {st.losses} losses, {st.ties} ties; one-sided p = {_fmt_p(st.p_one_sided)}."]
    if results.get("ablations"):
        lines += ["", "## Loss ablations (one round; paper Fig. 4b)", "", "| loss | SR ID | SR OOD | final r_w | final r_l |",
                  "|---|---|---|---|---|"]
        for loss, by_seed in results["ablations"].items():
            run = next(iter(by_seed.values()))
            last = run["curves"][-1] if run.get("curves") else {}
            rw = last.get("r_w", [None])[-1] if last else None
            rl = last.get("r_l", [None])[-1] if last else None
            lines.append(f"| {NAMES.get(loss, loss)} | {_cell(by_seed, 'id')} | {_cell(by_seed, 'ood')} | "
                         f"{'–' if rw is None else f'{rw:.3g}'} | {'–' if rl is None else f'{rl:.3g}'} |")
    made = _plots(results, out)
    lines += ["", "## Plots", ""] + [f"![{m}]({m})" for m in made]
    lines += ["", "## Wall time per stage (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in results.get("stage_seconds", {}).items()]
    lines += ["", f"Versions: {json.dumps(results.get('versions', {}))}", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="path to results.json")
    args = ap.parse_args(argv)
    print(write_report(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
