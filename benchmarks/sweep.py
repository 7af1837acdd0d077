"""Hyperparameter sweep of one method on the tuning scenes (Optuna, TPE).

    python -m benchmarks.sweep --task usb --method rpro|dagger|dagger_buffered|pi06star|tpo --base RUN --trials N
                               [--rollouts N] [--profile default] [--out results/usb/sweep] [--runs runs/usb/sweep]
                               [--tuning-seed S] [--steps-choices 100,200,...] [--seed N] [--workers N]

The benchmark's report is computed on the test scenes (seeds from ``Profile.test_seed``), so nothing
may be chosen on them. A trial here is one round of :func:`flowpro.finetune.run_rounds` from
``--base`` with the trial's hyperparameters (the rest from the profile), evaluated on the ID
tuning scenes ``[tuning_seed, tuning_seed + rollouts)`` only; its objective is the success rate
there. A sweep whose scenes overlap the test scenes (or any other seed range of the profile:
:func:`benchmarks.run.check_seed_ranges`) is refused. Every trial trains on the same round-1 pairs
(the profile's round-1 pair count, collected once with the base and shared).

Search spaces (beta scales the implicit reward, paper Eq. 4): RPRO beta in {1, 3, 10, 30, 100, 300,
1000}, lr log-uniform in [3e-6, 1e-4], steps per round in {100, 200, 300, 500, 800}; DAgger(-Buffered)
lr and steps; pi0.6* its guidance weight w in [1, 2.5] (``RPROConfig.cfg_weight``, used at inference
only); TPO its beta, each of the seven values once (a grid in a seeded order, so ``--trials`` <= 7).

Resuming: the study lives in ``<runs>/<method>_sweep.db`` (SQLite), so the same command continues
an interrupted sweep and a larger ``--trials`` adds trials. An interrupted trial runs again with
the same hyperparameters (its run directory, named by its configuration, resumes from its last
checkpoint). The sampler of a trial is seeded with ``--sampler-seed`` plus the number of finished
trials, so a resumed sweep proposes what an uninterrupted one would have. Run one process per sweep
(a second would take the first's running trial for an interrupted one).

Outputs (each says that selection used the tuning scenes only): ``<out>/<method>_trials.csv``,
``<out>/<method>_sweep.png`` and ``<out>/<method>_best.json``. Selection rule: the highest tuning
success rate, then the fewest steps per round, then the earliest trial.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shlex
import sys
from dataclasses import asdict, replace
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, Trial, TrialState

from benchmarks.evaluate import resolve_policy_dir
from benchmarks.run import PROFILES, Profile, _digest, check_seed_ranges, with_shared_pairs
from envs.tasks import TASKS
from flowpro.sim_bench import SimulatedBench
from flowpro.finetune import RPROConfig, run_rounds

BETAS = (1, 3, 10, 30, 100, 300, 1000)
STEPS = (100, 200, 300, 500, 800)
LR_RANGE = (3e-6, 1e-4)
CFG_WEIGHT_RANGE = (1.0, 2.5)
SPACES = {"rpro": ("beta", "lr", "steps"), "dagger": ("lr", "steps"), "dagger_buffered": ("lr", "steps"),
          "pi06star": ("cfg_weight",), "tpo": ("beta",)}  # the searched RPROConfig fields of each method
LOG_SCALE = {"beta", "lr"}
SELECTION_RULE = ("the highest success rate on the tuning scenes; ties: fewer steps per round, then the earlier trial "
                  "(test scenes never evaluated)")


def grid(method: str) -> dict[str, list] | None:
    """The whole space of a method whose every searched value is one of a few (TPO: beta): each is
    tried once, in a seeded order (Optuna's GridSampler), instead of TPE drawing some twice."""
    return {"beta": list(BETAS)} if SPACES[method] == ("beta",) else None


def sampler(method: str, sampler_seed: int, done: int) -> optuna.samplers.BaseSampler:
    """The sampler of the trial after ``done`` finished ones. TPE is seeded with ``sampler_seed + done``,
    so a resumed sweep proposes what an uninterrupted one would have; a grid keeps ``sampler_seed``,
    since its seed orders the grid and each trial takes a point no finished trial has."""
    space = grid(method)
    if space is None:
        return optuna.samplers.TPESampler(seed=sampler_seed + done)
    return optuna.samplers.GridSampler(space, seed=sampler_seed)


def _suggest(trial: Trial, name: str, steps_choices: tuple[int, ...]) -> float | int:
    if name == "beta":
        return trial.suggest_categorical("beta", BETAS)
    if name == "lr":
        return trial.suggest_float("lr", *LR_RANGE, log=True)
    if name == "steps":
        return trial.suggest_categorical("steps", steps_choices)
    if name == "cfg_weight":
        return trial.suggest_float("cfg_weight", *CFG_WEIGHT_RANGE)
    raise ValueError(f"no search space for {name!r}")


def trial_config(args: argparse.Namespace, profile: Profile, params: dict[str, Any], runs: Path) -> RPROConfig:
    """One round from the base with ``params`` over the profile's settings, evaluated on the tuning scenes."""
    values = {"beta": profile.beta, "lr": profile.lr, "steps": profile.steps, "cfg_weight": RPROConfig.cfg_weight,
              **params}
    method, loss = ("flowpro", "rpro") if args.method == "rpro" else (args.method, "rpro")
    steps = values["steps"]
    cfg = RPROConfig(task=args.task, base=str(resolve_policy_dir(args.base)), out="", rounds=1, method=method,
                     loss=loss, pairs=profile.pairs.split(",")[0], steps=steps, batch_size=profile.batch_size,
                     lr=values["lr"], beta=float(values["beta"]), cfg_weight=values["cfg_weight"],
                     sft_share=profile.sft_share, max_bridge_gap=profile.max_bridge_gap,
                     warmup=max(1, steps // 10), save_every=max(1, steps // 2), seed=args.seed,
                     eval_rollouts=profile.tuning_rollouts, eval_splits="id", eval_seed=profile.tuning_seed,
                     workers=args.workers)
    cfg = with_shared_pairs(cfg, runs)
    return replace(cfg, out=str(runs / f"{args.method}_{_digest({**cfg.record(), 'out': None})}"))


def _objective(args: argparse.Namespace, profile: Profile, runs: Path, bench: SimulatedBench
               ) -> Callable[[Trial], float]:
    """A trial: its parameters, one round on the bench, its tuning success rate."""
    steps_choices = tuple(args.steps_choices)

    def objective(trial: Trial) -> float:
        params = {name: _suggest(trial, name, steps_choices) for name in SPACES[args.method]}
        cfg = trial_config(args, profile, params, runs)
        trial.set_user_attr("run_dir", cfg.out)
        try:
            run_rounds(cfg, progress=False, bench=bench)
        except FloatingPointError as e:  # these hyperparameters diverged: a finished trial without a score
            trial.set_user_attr("error", str(e))
            raise
        row = json.loads((Path(cfg.out) / "round_1/round.json").read_text())
        ev = row["evaluation"]["id"]
        trial.set_user_attr("successes", ev["successes"])
        trial.set_user_attr("n", ev["episodes"])
        trial.set_user_attr("wilson95", ev["wilson95"])
        trial.set_user_attr("seconds", row["seconds"])  # the round's time, kept across a resume
        return ev["success_rate"]

    return objective


def _finished(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """Trials with an outcome: scored, or failed with a recorded error (diverged)."""
    return [t for t in trials
            if t.state == TrialState.COMPLETE or (t.state == TrialState.FAIL and "error" in t.user_attrs)]


def _requeue_interrupted(study: optuna.Study) -> None:
    """Trials a stopped process left running (or that failed without an outcome) run again with their
    parameters; each is queued once."""
    trials = study.get_trials(deepcopy=False)
    queued = {t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs}
    for t in trials:
        interrupted = t.state == TrialState.RUNNING or (t.state == TrialState.FAIL and "error" not in t.user_attrs)
        if interrupted and t.number not in queued:
            if t.state == TrialState.RUNNING:
                study.tell(t.number, state=TrialState.FAIL)
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def best_trial(trials: list[FrozenTrial], profile: Profile) -> FrozenTrial | None:
    """:data:`SELECTION_RULE` over the scored trials."""
    scored = [t for t in trials if t.state == TrialState.COMPLETE]
    if not scored:
        return None
    return min(scored, key=lambda t: (-t.value, t.params.get("steps", profile.steps), t.number))


def _tuning_note(profile: Profile) -> str:
    first, last = profile.tuning_seed, profile.tuning_seed + profile.tuning_rollouts
    return (f"selection used tuning seeds [{first}, {last}) (ID) only; test seeds "
            f"[{profile.test_seed}, {profile.test_seed + profile.rollouts}) never evaluated")


def write_outputs(study: optuna.Study, args: argparse.Namespace, profile: Profile, out: Path, command: str
                  ) -> FrozenTrial | None:
    """``<method>_trials.csv``, ``<method>_sweep.png`` and ``<method>_best.json`` from the study."""
    trials = _finished(study.get_trials(deepcopy=False))
    names = SPACES[args.method]
    note = _tuning_note(profile)
    out.mkdir(parents=True, exist_ok=True)
    table = io.StringIO(newline="")
    w = csv.writer(table)
    w.writerow(["trial", *names, "successes", "n", "success_rate", "wilson_low", "wilson_high", "run_dir",
                "seconds", "error", "evaluated_on"])
    for t in trials:
        a = t.user_attrs
        lo, hi = a.get("wilson95", ("", ""))
        w.writerow([t.number, *(t.params.get(n, "") for n in names), a.get("successes", ""), a.get("n", ""),
                    "" if t.value is None else t.value, lo, hi, a.get("run_dir", ""), a.get("seconds", ""),
                    a.get("error", ""), note])
    _write_whole(out / f"{args.method}_trials.csv", table.getvalue())
    best = best_trial(trials, profile)
    space = _space_record(args)
    _plot(trials, best, names, args.method, note, space, out / f"{args.method}_sweep.png")
    record = {
        "method": args.method, "task": args.task, "profile": args.profile, "base": args.base,
        "best": None if best is None else {
            "trial": best.number, "params": best.params, "success_rate": best.value,
            **{k: best.user_attrs[k] for k in ("successes", "n", "wilson95", "run_dir")},
            # the trial's whole configuration (the rest from the profile)
            "config": json.loads((Path(best.user_attrs["run_dir"]) / "config.json").read_text())["config"]},
        "tuning_seeds": {"split": "id", "first": profile.tuning_seed, "rollouts": profile.tuning_rollouts},
        "test_seeds_not_used": {"first": profile.test_seed, "rollouts": profile.rollouts},
        "selection_rule": SELECTION_RULE, "note": note, "search_space": space,
        "finished_trials": len(trials), "command": command,
    }
    _write_whole(out / f"{args.method}_best.json", json.dumps(record, indent=2) + "\n")
    return best


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file, so an interrupted sweep leaves the old
    file or the new one, never half of one (the runner reads ``*_best.json``)."""
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(text)
    tmp.replace(path)


def _space_record(args: argparse.Namespace) -> dict[str, Any]:
    spaces = {"beta": list(BETAS), "lr": {"log_uniform": list(LR_RANGE)}, "steps": list(args.steps_choices),
              "cfg_weight": {"uniform": list(CFG_WEIGHT_RANGE)}}
    return {n: spaces[n] for n in SPACES[args.method]}


def _plot(trials: list[FrozenTrial], best: FrozenTrial | None, names: tuple[str, ...], method: str, note: str,
          space: dict[str, Any], path: Path) -> None:
    """Tuning success rate (Wilson 95 % bars) against each searched parameter over its whole search
    range; the selected trial is the red star."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [t for t in trials if t.state == TrialState.COMPLETE]
    fig, axes = plt.subplots(1, len(names), figsize=(max(7, 4 * len(names)), 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    for ax, name in zip(axes[0], names):
        for t in sorted(scored, key=lambda t: best is not None and t.number == best.number):  # the selected on top
            sr, (lo, hi) = 100 * t.value, t.user_attrs["wilson95"]
            chosen = best is not None and t.number == best.number
            ax.errorbar([t.params[name]], [sr], yerr=[[sr - 100 * lo], [100 * hi - sr]], fmt="*" if chosen else "o",
                        color="tab:red" if chosen else "tab:blue", ms=11 if chosen else 5, capsize=3, clip_on=False)
        bounds = space[name] if isinstance(space[name], list) else next(iter(space[name].values()))
        lo_x, hi_x = min(bounds), max(bounds)
        if name in LOG_SCALE:
            ax.set_xscale("log")
            ax.set_xlim(lo_x / 1.5, hi_x * 1.5)
        else:
            pad = 0.05 * (hi_x - lo_x or 1)
            ax.set_xlim(lo_x - pad, hi_x + pad)
        ax.set_ylim(0, 100)
        ax.set_xlabel(name)
    axes[0][0].set_ylabel("success rate on tuning seeds [%]")
    fig.suptitle(f"{method}: {len(scored)} scored trial(s), Wilson 95 % bars, selected: red star\n{note}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _steps_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"steps per round must be >= 1, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--method", required=True, choices=sorted(SPACES))
    ap.add_argument("--base", required=True, help="the SFT base (run or policy directory)")
    ap.add_argument("--trials", type=int, required=True, help="finished trials wanted in all (a rerun adds the rest)")
    ap.add_argument("--rollouts", type=int, default=None, help="tuning rollouts per trial (profile's tuning_rollouts)")
    ap.add_argument("--tuning-seed", type=int, default=None, help="first tuning seed (profile's tuning_seed)")
    ap.add_argument("--profile", default="default", choices=sorted(PROFILES))
    ap.add_argument("--steps-choices", type=_steps_list, default=list(STEPS), metavar="N,N,...",
                    help=f"steps per round searched (default {','.join(map(str, STEPS))})")
    ap.add_argument("--seed", type=int, default=0, help="training seed (also picks the collection seeds)")
    ap.add_argument("--sampler-seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="rollout processes (default: all cores)")
    ap.add_argument("--out", default=None, help="default results/<task>/sweep")
    ap.add_argument("--runs", default=None, help="default runs/<task>/sweep")
    args = ap.parse_args(argv)
    args.task = args.task.lower()

    problems = []
    if args.task not in TASKS:
        problems.append(f"unknown task {args.task!r}; valid tasks: {', '.join(sorted(TASKS))}")
    if args.trials < 1 or (args.rollouts is not None and args.rollouts < 1):
        problems.append(f"--trials and --rollouts must be >= 1, got {args.trials} and {args.rollouts}")
    if (space := grid(args.method)) is not None and args.trials > (size := len(next(iter(space.values())))):
        problems.append(f"--method {args.method} searches only {space}: at most {size} trials, got {args.trials}")
    try:
        resolve_policy_dir(args.base)
    except FileNotFoundError as e:
        problems.append(f"--base: {e}")
    profile = PROFILES[args.profile]
    profile = replace(profile, tuning_seed=profile.tuning_seed if args.tuning_seed is None else args.tuning_seed,
                      tuning_rollouts=args.rollouts or profile.tuning_rollouts)
    try:
        check_seed_ranges(profile, args.seed)
    except ValueError as e:
        problems.append(f"a sweep evaluates on tuning scenes apart from every other seed range of profile "
                        f"{args.profile!r}: {e}")
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2

    out = Path(args.out or f"results/{args.task}/sweep")
    runs = Path(args.runs or f"runs/{args.task}/sweep")
    runs.mkdir(parents=True, exist_ok=True)
    settings = {"task": args.task, "method": args.method, "base": args.base, "profile": args.profile,
                "profile_settings": asdict(profile), "steps_choices": args.steps_choices, "seed": args.seed,
                "sampler_seed": args.sampler_seed}
    db = runs / f"{args.method}_sweep.db"
    study = optuna.create_study(study_name=f"{args.task}_{args.method}", storage=f"sqlite:///{db}",
                                direction="maximize", load_if_exists=True)
    previous = study.user_attrs.get("settings")
    if previous is not None and previous != json.loads(json.dumps(settings)):
        print(f"error: {db} holds a sweep of other settings ({previous}); choose another --runs (nothing was mixed)",
              file=sys.stderr)
        return 2
    study.set_user_attr("settings", settings)
    command = "python -m benchmarks.sweep " + shlex.join(argv if argv is not None else sys.argv[1:])
    _requeue_interrupted(study)
    with SimulatedBench(progress=False) as bench:
        objective = _objective(args, profile, runs, bench)
        while (done := len(_finished(study.get_trials(deepcopy=False)))) < args.trials:
            study.sampler = sampler(args.method, args.sampler_seed, done)
            study.optimize(objective, n_trials=1, catch=(FloatingPointError,))
            write_outputs(study, args, profile, out, command)  # after every trial: a stopped sweep shows its trials
    best = write_outputs(study, args, profile, out, command)
    if best is None:
        print("error: no trial was scored (every one diverged); see the trials CSV", file=sys.stderr)
        return 1
    print(json.dumps({"method": args.method, "best_params": best.params, "tuning_success_rate": best.value,
                      "trials": len(_finished(study.get_trials(deepcopy=False))), "note": _tuning_note(profile)}))
    print(f"wrote {out / f'{args.method}_trials.csv'}, {out / f'{args.method}_sweep.png'} and "
          f"{out / f'{args.method}_best.json'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
