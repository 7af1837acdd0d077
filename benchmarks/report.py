"""The benchmark report, recomputed from ``results.json`` alone.

    python -m benchmarks.report results/usb/results.json

Writes ``report.md`` next to it with a Table-1-style table (SR mean ± std over seeds, Wilson 95 %
interval of the pooled count, completion time, the paper's numbers for orientation), per-round
SR, CMH tests of FlowPRO-RPRO against each comparator, a sign test against the strongest one,
paired exact McNemar tests against each baseline and the SFT base with the minimum detectable
difference, the selection protocol, loss ablations, stage times, and the plots ``sr_per_round.png``
(paper Fig. 3), ``implicit_rewards.png`` (Fig. 4a), ``paired_outcomes.png`` and ``ablations.png`` (Fig. 4b).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks.stats import (
    McNemarResult,
    PairedCounts,
    bonferroni,
    cmh_test,
    mcnemar_exact,
    mdd_mcnemar,
    mdd_unpaired,
    paired_outcomes,
    sign_test,
    wilson_interval,
)

NAMES = {"rpro": "FlowPRO (RPRO)", "dagger": "DAgger", "dagger_buffered": "DAgger-Buffered", "pi06star": "π0.6*",
         "tpo": "TPO", "sft": "SFT only", "base": "SFT base", "dpo": "Flow-DPO", "dpo_sft": "DPO+SFT", "pro": "PRO"}
# The paper's final USB success rates, π0 base (docs/method.md §Reported results).
PAPER_USB = {"rpro": 92, "pi06star": 90, "tpo": 87, "dagger_buffered": 85, "dagger": 80}


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


SPLITS = ("id", "ood")
BASE = "base"  # the SFT base as a comparator of the paired tests


def _final_rollouts(results: dict, policy: str, seed: str, split: str) -> list[dict] | None:
    """Rollouts of a final policy (or of the SFT base, shared by every training seed) on ``split``."""
    if policy == BASE:
        e = results["base"]["evaluation"].get(split)
    else:
        e = results["methods"][policy][seed]["final"].get(split)
    return None if e is None else e["rollouts"]


def _paired_counts(results: dict, comparator: str, split: str) -> PairedCounts | None:
    """RPRO's final rollouts matched by env seed with the comparator's on ``split``, summed over training
    seeds (seed s of RPRO against seed s of a method; every seed against the one SFT base)."""
    rpro = results["methods"]["rpro"]
    if comparator != BASE and set(results["methods"][comparator]) != set(rpro):
        raise ValueError(f"RPRO and {comparator} have different training seeds ({sorted(rpro)} vs "
                         f"{sorted(results['methods'][comparator])}): their rollouts cannot be paired")
    total = None
    for seed in rpro:
        mine, theirs = _final_rollouts(results, "rpro", seed, split), _final_rollouts(results, comparator, seed, split)
        if mine is None or theirs is None:
            return None
        counts = paired_outcomes(mine, theirs)
        total = counts if total is None else total + counts
    return total


def _paired_comparisons(results: dict) -> dict[str, dict[str, McNemarResult]]:
    """Exact McNemar of RPRO against each baseline and the SFT base: per split and pooled over splits."""
    comparisons = {}
    for comparator in [m for m in results["methods"] if m != "rpro"] + [BASE]:
        per_split = {sp: k for sp in SPLITS if (k := _paired_counts(results, comparator, sp)) is not None}
        if per_split:
            pooled = sum(per_split.values(), start=PairedCounts(0, 0, 0, 0))
            comparisons[comparator] = {**{sp: mcnemar_exact(k) for sp, k in per_split.items()},
                                       "pooled": mcnemar_exact(pooled)}
    return comparisons


def _marginal_table(k: PairedCounts) -> list[list[int]]:
    """The unpaired 2×2 table (RPRO, comparator) × (success, failure) behind a paired table, for CMH."""
    mine, theirs = k.both + k.method_only, k.both + k.comparator_only
    return [[mine, k.n - mine], [theirs, k.n - theirs]]


def _fmt_mdd(delta: float) -> str:
    return "none ≤ 100 %" if delta == float("inf") else f"{100 * delta:.0f}"


def _paired_section(results: dict, comparisons: dict[str, dict[str, McNemarResult]]) -> list[str]:
    s = results["settings"]
    alpha = bonferroni(0.05, len(comparisons))
    lines = ["", "## FlowPRO (RPRO) against each comparator: paired exact McNemar", "",
             "Every policy is evaluated on the same initial states (rollout i of a split uses the same env seed for "
             "every policy), so RPRO's rollout and the comparator's on one initial state form a pair. States both "
             "solve or both fail say nothing about which is better; the test uses the discordant ones: b = states "
             "only RPRO solved, c = states only the comparator solved, and the exact binomial test of b out of b + c "
             "against 1/2 (one-sided: RPRO better; two-sided for reference). The ID + OOD row pools the discordant "
             "pairs of the two strata (the stratified exact test for paired data) and is the test of record; the "
             "per-split rows are for reading. ΔSR is RPRO − comparator in percentage points with Newcombe's hybrid "
             "score 95 % interval for paired data. The CMH column is the unpaired test of the same rollouts "
             f"(one-sided p). Bonferroni over {len(comparisons)} comparisons (the baselines and the SFT base) on "
             f"the pooled one-sided p: α = {alpha:.4f}.", ""]
    if s["seeds"] > 1:
        lines += [f"With {s['seeds']} training seeds, seed s of RPRO is paired with seed s of each baseline; the one "
                  "SFT base's rollouts are paired with every RPRO seed, so its pairs are not independent across "
                  "seeds and its p is optimistic.", ""]
    lines += ["| comparator | split | states | b: RPRO only | c: comparator only | ΔSR pp [95 % CI] | p one-sided "
              "| p two-sided | CMH p one-sided | significant |", "|---|---|---|---|---|---|---|---|---|---|"]
    for comparator, by_split in comparisons.items():
        for split, r in by_split.items():
            k = r.counts
            pooled = split == "pooled"
            strata = [by_split[sp].counts for sp in SPLITS if sp in by_split] if pooled else [k]
            cmh = cmh_test([_marginal_table(stratum) for stratum in strata])
            significant = ("yes" if r.p_one_sided < alpha else "no") if pooled else "–"
            lines.append(f"| {NAMES.get(comparator, comparator)} | {'ID + OOD' if pooled else split.upper()} | {k.n} "
                         f"| {k.method_only} | {k.comparator_only} | {100 * r.difference:+.0f} "
                         f"[{100 * r.ci95[0]:+.0f}, {100 * r.ci95[1]:+.0f}] | {_fmt_p(r.p_one_sided)} | "
                         f"{_fmt_p(r.p_two_sided)} | {_fmt_p(cmh.p_one_sided)} | {significant} |")
    lines += ["", "### Minimum detectable difference at this run's size", "",
              f"The smallest true improvement over the comparator's success rate p0 (here its observed rate on the "
              f"pooled states) that a one-sided test at α = {alpha:.4f} detects with 80 % power. Unpaired: the "
              "two-proportion z-test on the arcsine scale (statsmodels `NormalIndPower`). Paired, exact McNemar: the "
              "power depends on how often the two policies disagree, which two success rates do not fix; "
              "'independent' assumes the outcomes are independent on each state (the conservative end when hard "
              "states are hard for both), 'no losses' that RPRO solves every state the comparator solves (the best "
              "case).", "",
              "| comparator | states n | p0 % | MDD unpaired pp | MDD McNemar, independent pp | "
              "MDD McNemar, no losses pp |", "|---|---|---|---|---|---|"]
    for comparator, by_split in comparisons.items():
        k = by_split["pooled"].counts
        n, p0 = k.n, (k.both + k.comparator_only) / k.n
        if p0 >= 1.0:
            cells = ["– (p0 = 100 %)"] * 3
        else:
            cells = [_fmt_mdd(mdd_unpaired(n, p0, alpha)),
                     *(_fmt_mdd(mdd_mcnemar(n, p0, alpha, discordance=d)) for d in ("independent", "no_losses"))]
        lines.append(f"| {NAMES.get(comparator, comparator)} | {n} | {100 * p0:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "How to read a null result: 'not significant' is not evidence that the methods are equal. A true "
              "improvement as large as the MDD would be detected 80 % of the time; smaller ones are missed more "
              "often, so a non-significant comparison argues against improvements of the MDD or more, and says "
              "nothing about smaller ones. The ΔSR interval gives the differences the data are compatible with."]
    return lines


def _selection_section(results: dict) -> list[str]:
    lines = ["", "## Selection protocol", ""]
    selection = results.get("selection")
    if selection is None:
        return lines + ["The profile's values (learning rate, β, steps, pairs) were fixed in advance and not tuned on "
                        "any evaluation seed."]
    lines += ["Values chosen by a sweep, and the seeds they were chosen on (`selection` in `results.json`); the "
              "evaluation above runs on its own seeds.", ""]
    items = selection.items() if isinstance(selection, dict) else [("selection", selection)]
    for key, value in items:  # one level of nesting as sub-items (e.g. one sweep record per method)
        if isinstance(value, dict):
            lines += [f"- {key}:", *(f"  - {k}: {json.dumps(v)}" for k, v in value.items())]
        else:
            lines.append(f"- {key}: {json.dumps(value)}")
    return lines


def _pooled_rate(evaluations: list[dict]) -> tuple[int, int]:
    """Successes and rollouts of several evaluations (one per training seed) pooled."""
    return sum(e["successes"] for e in evaluations), sum(e["episodes"] for e in evaluations)


def _error_bar(k: int, n: int) -> tuple[float, float, float]:
    """SR % and the distances down and up to its Wilson 95 % bounds, for ``errorbar``."""
    lo, hi = wilson_interval(k, n)
    sr = 100 * k / n
    return sr, sr - 100 * lo, 100 * hi - sr


def _plot_sr_per_round(plt, results: dict, out: Path) -> str:
    methods = results.get("methods", {})
    fig, ax = plt.subplots(figsize=(7.5, 4))
    last = max((r["round"] for by_seed in methods.values() for run in by_seed.values() for r in run["rounds"]),
               default=0)
    base = results["base"]["evaluation"]["id"]
    width = 0.3  # the spread of the methods' x offsets around each integer round
    for i, (m, by_seed) in enumerate(methods.items()):
        points = [(0, base["successes"], base["episodes"])]
        for k in range(1, last + 1):
            evals = [r["evaluation"]["id"] for run in by_seed.values() for r in run["rounds"]
                     if r["round"] == k and "id" in r.get("evaluation", {})]
            if evals:
                points.append((k, *_pooled_rate(evals)))
        offset = width * (i / max(1, len(methods) - 1) - 0.5)
        bars = [_error_bar(k, n) for _, k, n in points]
        ax.errorbar([x + offset for x, _, _ in points], [b[0] for b in bars],
                    yerr=[[b[1] for b in bars], [b[2] for b in bars]], marker="o", capsize=3, lw=1.5,
                    label=NAMES.get(m, m))
    ax.set_xticks(range(last + 1), ["SFT base" if k == 0 else str(k) for k in range(last + 1)])
    ax.set_xlim(-0.5, last + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("round")
    ax.set_ylabel("success rate, ID [%]")
    ax.grid(axis="y", alpha=0.3)
    n = base["episodes"]
    ax.set_title(f"ID success rate per round, Wilson 95 % intervals ({n} rollouts per point and seed)", fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.savefig(out / "sr_per_round.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "sr_per_round.png"


def _plot_implicit_rewards(plt, results: dict, out: Path) -> str | None:
    methods = results.get("methods", {})
    curves = {NAMES.get(m, m): by_seed for m, by_seed in methods.items()}
    curves.update({f"{NAMES.get(loss, loss)} (ablation)": by_seed
                   for loss, by_seed in results.get("ablations", {}).items()})
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
    made = None
    if any_curve:
        for ax, name in zip(axes, ("r_w (implicit reward of a^w)", "r_l (implicit reward of a^l)")):
            ax.set_title(name, fontsize=10)
            ax.set_xlabel("training step (rounds concatenated)")
            ax.axhline(0, color="grey", lw=0.5)
        axes[0].legend(fontsize=7)
        fig.savefig(out / "implicit_rewards.png", dpi=110, bbox_inches="tight")
        made = "implicit_rewards.png"
    plt.close(fig)
    return made


def _plot_paired(plt, comparisons: dict[str, dict[str, McNemarResult]], out: Path) -> str:
    splits = [sp for sp in (*SPLITS, "pooled") if any(sp in by_split for by_split in comparisons.values())]
    names = list(comparisons)
    top = max(max(r.counts.method_only, r.counts.comparator_only) for by in comparisons.values() for r in by.values())
    fig, axes = plt.subplots(len(splits), 1, figsize=(8, 2.3 * len(splits)), sharex=True, squeeze=False)
    for ax, split in zip(axes[:, 0], splits):
        for x, name in enumerate(names):
            r = comparisons[name].get(split)
            if r is None:
                continue
            b, c = r.counts.method_only, r.counts.comparator_only
            first = x == 0  # one legend entry per colour
            ax.bar(x - 0.2, b, width=0.4, color="tab:blue", label="b: only RPRO succeeds" if first else None)
            ax.bar(x + 0.2, c, width=0.4, color="tab:orange",
                   label="c: only the comparator succeeds" if first else None)
            # the p sits above the taller bar of its pair so that it is read with that comparison
            ax.text(x, max(b, c) + 0.15 * (top + 1), f"p = {_fmt_p(r.p_one_sided)}", ha="center", fontsize=8)
        ax.set_ylim(0, 1.4 * (top + 1))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylabel("discordant states")
        ax.set_title("ID + OOD pooled (the test of record)" if split == "pooled" else split.upper(), fontsize=9)
    axes[-1, 0].set_xticks(range(len(names)), [NAMES.get(n, n) for n in names], fontsize=9)
    axes[0, 0].legend(loc="lower left", bbox_to_anchor=(0, 1.12), ncol=2, fontsize=8, frameon=False)
    fig.suptitle("RPRO vs each comparator on the same initial states: discordant pairs, exact McNemar one-sided p",
                 fontsize=10, y=1.0)
    fig.tight_layout()
    fig.savefig(out / "paired_outcomes.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "paired_outcomes.png"


def _plot_ablations(plt, results: dict, out: Path) -> str:
    fig, ax = plt.subplots(figsize=(7, 3.8))
    losses = list(results["ablations"])
    for j, split in enumerate(SPLITS):
        xs, bars = [], []
        for i, loss in enumerate(losses):
            k, n, _, _ = _pooled(results["ablations"][loss], split)
            if n:
                xs.append(i + 0.4 * j)
                bars.append(_error_bar(k, n))
        ax.bar(xs, [b[0] for b in bars], width=0.4, label=split.upper(),
               yerr=[[b[1] for b in bars], [b[2] for b in bars]], capsize=3, ecolor="black",
               error_kw={"lw": 1})
    ax.set_xticks([i + 0.2 for i in range(len(losses))], [NAMES.get(x, x) for x in losses], fontsize=8)
    ax.set_ylim(0, 100)
    ax.set_ylabel("success rate after one round [%]")
    ax.set_title("loss ablations, Wilson 95 % intervals", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False)
    fig.savefig(out / "ablations.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "ablations.png"


def _plots(results: dict, comparisons: dict[str, dict[str, McNemarResult]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = [_plot_sr_per_round(plt, results, out)]
    if (rewards := _plot_implicit_rewards(plt, results, out)) is not None:
        made.append(rewards)
    if comparisons:
        made.append(_plot_paired(plt, comparisons, out))
    if results.get("ablations"):
        made.append(_plot_ablations(plt, results, out))
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
                else "this run follows it.")]
    lines += _selection_section(results)
    lines += ["", "## Scripted expert and SFT base", "",
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
    comparisons: dict[str, dict[str, McNemarResult]] = {}
    if "rpro" in methods and s["backend"] == "real":
        lines += ["", "## Paired comparisons", "", "Not made: on the real bench the initial placements are set by hand, "
                  "not by the rollout seed, so rollouts of two policies are not paired."]
    elif "rpro" in methods:
        comparisons = _paired_comparisons(results)
        lines += _paired_section(results, comparisons)
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
    made = _plots(results, comparisons, out)
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
