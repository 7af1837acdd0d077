"""Re-run a sweep's best trials on fresh tuning scenes, from one or more bases (issue 14, part 2).

    python -m benchmarks.recheck --task usb --method rpro --base RUN [--base RUN ...] [--top 3]
                                 [--rollouts 100] [--sweep-runs runs/usb/sweep] [--out results/usb/sweep] [--workers N]

A sweep (:mod:`benchmarks.sweep`) scores every trial on a few tuning scenes and keeps the highest,
so its best is partly luck: among ten trials whose true rates are equal, the top one still scores
above them on the scenes it was chosen on. The second stage here removes that bias. It takes the
``--top`` trials of the sweep's study by the sweep's selection rule, and the values of the sweep's
profile as the incumbent; the training seed and scenes are the sweep's. Each one is re-run for one round (the sweep's :func:`benchmarks.sweep.trial_config`)
from every ``--base``, and evaluated on ``--rollouts`` ID tuning scenes that the sweep did not use:
``[tuning_seed + tuning_rollouts, ... + rollouts)``. Each base is evaluated on the same scenes, so
every comparison is paired (exact McNemar, :func:`benchmarks.stats.mcnemar_exact`).

Choice: the most successes summed over the bases; ties go to the incumbent, then to fewer steps.
The test scenes are never evaluated, and every range is checked against the profile's others
(:func:`benchmarks.run.check_seed_ranges`). Writes ``<out>/<method>_recheck.json`` and ``.md``.
Run directories are named by configuration, so an interrupted recheck resumes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

import optuna

from benchmarks.run import PROFILES, check_seed_ranges
from benchmarks.stats import mcnemar_exact, paired_outcomes
from benchmarks.sweep import SPACES, _finished, _write_whole, best_trial, trial_config
from envs.summary import summarize
from flowpro.sim_bench import SimulatedBench
from flowpro.finetune import run_rounds
from flowpro.rollout import resolve_policy_dir

INCUMBENT = "profile"


def candidates(study: optuna.Study, method: str, profile, top: int) -> dict[str, dict]:
    """The ``top`` trials by the sweep's rule (``trial <n>``) and the profile's values (``profile``)."""
    trials = [t for t in _finished(study.get_trials(deepcopy=False)) if t.value is not None]
    ranked = []
    while trials and len(ranked) < top:
        best = best_trial(trials, profile)
        ranked.append(best)
        trials = [t for t in trials if t.number != best.number]
    out = {INCUMBENT: {n: getattr(profile, n) for n in SPACES[method] if n != "cfg_weight"}}
    out.update({f"trial {t.number}": dict(t.params) for t in ranked})
    return out


def _paired(a: list[dict], b: list[dict]) -> dict:
    r = mcnemar_exact(paired_outcomes(a, b))
    return {"only_first": r.counts.method_only, "only_second": r.counts.comparator_only,
            "p_two_sided": round(r.p_two_sided, 4), "difference": round(r.difference, 3)}


def recheck(args: argparse.Namespace, profile, names: dict[str, dict], bench: SimulatedBench) -> dict:
    """Every candidate from every base on the recheck scenes, with paired tests against the base and
    the incumbent."""
    first = profile.tuning_seed + profile.tuning_rollouts  # the profile the sweep ran under: after its scenes
    rows: dict[str, dict] = {}
    for base in args.base:
        tag = resolve_policy_dir(base).parent.name
        runs = Path(args.sweep_runs)
        cache = runs / f"recheck_base_{tag}_{first}_{args.rollouts}.json"  # a rerun resumes without re-evaluating
        if not cache.exists():
            rollouts = bench.evaluate(args.task, resolve_policy_dir(base), "id", args.rollouts,
                                      cache.with_suffix(".jsonl"), args.workers, seed=first)
            _write_whole(cache, json.dumps(rollouts))
        base_eval = json.loads(cache.read_text())
        rows.setdefault("base", {})[tag] = {**summarize(base_eval), "rollouts": base_eval}
        run_args = replace_ns(args, base=base)
        recheck_profile = replace(profile, tuning_seed=first, tuning_rollouts=args.rollouts)
        for name, params in names.items():
            cfg = trial_config(run_args, recheck_profile, params, runs)
            run_rounds(cfg, progress=False, bench=bench)
            ev = json.loads((Path(cfg.out) / "round_1/round.json").read_text())["evaluation"]["id"]
            rows.setdefault(name, {})[tag] = {**{k: ev[k] for k in ("successes", "episodes", "success_rate", "wilson95")},
                                              "run_dir": cfg.out, "rollouts": ev["rollouts"]}
    for name, by_base in rows.items():
        for tag, row in by_base.items():
            if name != "base":
                row["against_base"] = _paired(row["rollouts"], rows["base"][tag]["rollouts"])
            if name not in ("base", INCUMBENT):
                row["against_incumbent"] = _paired(row["rollouts"], rows[INCUMBENT][tag]["rollouts"])
    order = [n for n in names]
    total = {n: sum(r["successes"] for r in rows[n].values()) for n in order}
    steps = {n: names[n].get("steps", profile.steps) for n in order}
    chosen = min(order, key=lambda n: (-total[n], n != INCUMBENT, steps[n]))
    return {"rows": rows, "total_successes": total, "chosen": chosen, "chosen_params": names[chosen],
            "scenes": {"split": "id", "first": first, "rollouts": args.rollouts},
            "rule": "the most successes summed over the bases on the recheck scenes; ties: the incumbent "
                    "(the profile's values), then fewer steps per round"}


def replace_ns(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


def markdown(record: dict) -> str:
    sc = record["scenes"]
    tags = list(record["rows"]["base"])
    lines = [f"# {record['method']} recheck on fresh tuning scenes [{sc['first']}, {sc['first'] + sc['rollouts']}) ID",
             "", f"`{record['command']}`", "",
             f"Rule: {record['rule']}. Chosen: **{record['chosen']}** {record['chosen_params']}.", "",
             "| candidate | params | " + " | ".join(f"{t}: SR, vs base (+/−, p), vs incumbent (+/−, p)" for t in tags)
             + " | total |", "|---|---|" + "---|" * len(tags) + "---|"]
    for name, by_base in record["rows"].items():
        cells = []
        for t in tags:
            r = by_base[t]
            cell = f"{r['successes']}/{r['episodes']}"
            for key in ("against_base", "against_incumbent"):
                if key in r:
                    c = r[key]
                    cell += f"; {c['only_first']}/{c['only_second']}, p {c['p_two_sided']:.2g}"
            cells.append(cell)
        total = record["total_successes"].get(name, sum(by_base[t]["successes"] for t in tags))
        params = record["candidates"].get(name, "the SFT base")
        lines.append(f"| {name} | {params} | " + " | ".join(cells) + f" | {total} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--method", required=True, choices=sorted(SPACES))
    ap.add_argument("--base", action="append", required=True, help="an SFT base (repeat for more)")
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--rollouts", type=int, default=100, help="fresh tuning scenes per candidate and base")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--sweep-runs", default=None, help="the sweep's runs directory (default runs/<task>/sweep)")
    ap.add_argument("--out", default=None, help="default results/<task>/sweep")
    args = ap.parse_args(argv)
    args.sweep_runs = args.sweep_runs or f"runs/{args.task}/sweep"
    db = Path(args.sweep_runs) / f"{args.method}_sweep.db"
    if not db.exists():
        print(f"error: no sweep study at {db}: run benchmarks.sweep first", file=sys.stderr)
        return 2
    study = optuna.load_study(study_name=f"{args.task}_{args.method}", storage=f"sqlite:///{db}")
    settings = study.user_attrs["settings"]
    args.seed = settings["seed"]  # the sweep's training seed: the same shared pairs from its base
    # The sweep's own tuning scenes (its --rollouts/--tuning-seed may differ from the profile's).
    args.profile = settings["profile"]
    profile = replace(PROFILES[args.profile], tuning_seed=settings["profile_settings"]["tuning_seed"],
                      tuning_rollouts=settings["profile_settings"]["tuning_rollouts"])
    problems = []
    if args.top < 1 or args.rollouts < 1:
        problems.append(f"--top and --rollouts must be >= 1, got {args.top} and {args.rollouts}")
    for base in args.base:
        try:
            resolve_policy_dir(base)
        except FileNotFoundError as e:
            problems.append(f"--base: {e}")
    fresh = replace(profile, tuning_rollouts=profile.tuning_rollouts + args.rollouts)  # the sweep's and these
    try:
        check_seed_ranges(fresh, args.seed)
    except ValueError as e:
        problems.append(f"the recheck scenes must lie apart from every other seed range: {e}")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    names = candidates(study, args.method, profile, args.top)
    with SimulatedBench(progress=False) as bench:
        record = {"method": args.method, "task": args.task, "profile": args.profile, "bases": args.base,
                  "candidates": names, "sweep": str(db),
                  "test_seeds_not_used": {"first": profile.test_seed, "rollouts": profile.rollouts},
                  "command": "python -m benchmarks.recheck " + shlex.join(argv if argv is not None else sys.argv[1:]),
                  **recheck(args, profile, names, bench)}
    out = Path(args.out or f"results/{args.task}/sweep")
    out.mkdir(parents=True, exist_ok=True)
    _write_whole(out / f"{args.method}_recheck.json", json.dumps(record, indent=2) + "\n")
    _write_whole(out / f"{args.method}_recheck.md", markdown(record))
    print(json.dumps({"chosen": record["chosen"], "params": record["chosen_params"],
                      "total_successes": record["total_successes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
