"""Seed ranges that never overlap, and the hyperparameter sweep on the tuning scenes (issue 14)."""

import csv
import json
from dataclasses import replace

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from benchmarks.evaluate import EVAL_SEED
from benchmarks.run import PROFILES, check_seed_ranges, main as run_main
from benchmarks.sweep import BETAS, best_trial, main as sweep_main
from flowpro.finetune import RPROConfig
from test_finetune import usb_base  # noqa: F401  (the tiny state-only SFT base on one USB demonstration)


def test_every_profile_keeps_its_seed_ranges_apart():
    for profile in PROFILES.values():
        check_seed_ranges(profile)
        check_seed_ranges(profile, seed=2, seeds=3, rounds=3)


def test_overlapping_ranges_are_named():
    default = PROFILES["default"]
    with pytest.raises(ValueError, match=r"test evaluation \[1000, 1100\) and tuning evaluation \[1000, 1100\)"):
        check_seed_ranges(replace(default, rollouts=100, tuning_seed=1000, tuning_rollouts=100))
    with pytest.raises(ValueError, match=r"demos \[950, 1050\) and test evaluation \[1000, 1100\)"):
        check_seed_ranges(default, seed=950)
    with pytest.raises(ValueError, match=r"tuning evaluation \[110000, 110050\) and collection \(seed 0, round 1\)"):
        check_seed_ranges(replace(default, tuning_seed=110_000))
    with pytest.raises(ValueError, match=r"test evaluation \[5000, 5100\) and tuning evaluation \[5000, 5050\)"):
        check_seed_ranges(replace(default, test_seed=5000))
    check_seed_ranges(replace(default, test_seed=2000))  # the test scenes can move where nothing else is


def test_runner_refuses_an_overlapping_profile_before_any_work(tmp_path, capsys):
    out, data, runs = tmp_path / "results", tmp_path / "data", tmp_path / "runs"
    # 4001 test rollouts reach the default profile's tuning scenes from 5000.
    assert run_main(["--task", "usb", "--rollouts", "4001", "--out", str(out), "--data", str(data),
                     "--runs", str(runs)]) == 2
    err = capsys.readouterr().err
    assert "profile 'default'" in err and "test evaluation [1000, 5001) and tuning evaluation [5000, 5050)" in err
    assert not any(p.exists() for p in (out, data, runs))


def test_test_scenes_keep_the_run_records_of_before():
    assert RPROConfig.eval_seed == EVAL_SEED
    cfg = RPROConfig(task="usb", base="b", out="o")
    assert "eval_seed" not in cfg.record()  # the runner's cache keys of existing runs hold
    assert replace(cfg, eval_seed=5000).record()["eval_seed"] == 5000


def test_selection_prefers_the_higher_rate_then_fewer_steps_then_the_earlier_trial():
    dist = {"beta": CategoricalDistribution(BETAS), "lr": FloatDistribution(3e-6, 1e-4, log=True),
            "steps": CategoricalDistribution((100, 300))}

    def trial(number, sr, steps):
        t = create_trial(params={"beta": 10, "lr": 1e-5, "steps": steps}, distributions=dist, value=sr)
        t.number = number
        return t

    profile = PROFILES["default"]
    assert best_trial([trial(0, 0.4, 100), trial(1, 0.5, 300)], profile).number == 1
    assert best_trial([trial(0, 0.5, 300), trial(1, 0.5, 100), trial(2, 0.5, 100)], profile).number == 1
    failed = create_trial(params={}, distributions={}, state=TrialState.FAIL)
    assert best_trial([failed], profile) is None


def _sweep_argv(base, tmp_path, trials, *extra, method="rpro"):
    return ["--task", "usb", "--method", method, "--base", str(base / "sft"), "--trials", str(trials),
            "--profile", "smoke", "--rollouts", "1", "--steps-choices", "2,3", "--workers", "1",
            "--out", str(tmp_path / "out"), "--runs", str(tmp_path / "runs"), *extra]


def _rows(tmp_path, method="rpro"):
    with (tmp_path / f"out/{method}_trials.csv").open() as f:
        return list(csv.DictReader(f))


def test_sweep_refuses_scenes_that_overlap_the_test_scenes(usb_base, tmp_path, capsys):  # noqa: F811
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 2, "--tuning-seed", str(EVAL_SEED))) == 2
    err = capsys.readouterr().err
    assert "tuning evaluation [1000, 1001)" in err and "test evaluation [1000, 1001)" in err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()


def test_sweep_writes_its_outputs_and_resumes(usb_base, tmp_path):  # noqa: F811
    argv = _sweep_argv(usb_base, tmp_path, 2)
    assert sweep_main(argv) == 0
    rows = _rows(tmp_path)
    assert [r["trial"] for r in rows] == ["0", "1"]
    for r in rows:
        assert int(r["beta"]) in BETAS and 3e-6 <= float(r["lr"]) <= 1e-4 and r["steps"] in ("2", "3")
        assert r["n"] == "1" and float(r["wilson_low"]) <= float(r["success_rate"]) <= float(r["wilson_high"])
        assert r["evaluated_on"].startswith("selection used tuning seeds [5000, 5001) (ID) only")
        round1 = json.loads((tmp_path / "runs" / r["run_dir"].split("/")[-1] / "round_1/round.json").read_text())
        assert [x["seed"] for x in round1["evaluation"]["id"]["rollouts"]] == [5000]  # tuning scenes only
        assert set(round1["evaluation"]) == {"id"} and round1["collection"]["pairs"] == 1
    assert len(list((tmp_path / "runs").glob("pairs_round1_*"))) == 1  # one collection for every trial
    best = json.loads((tmp_path / "out/rpro_best.json").read_text())
    assert best["tuning_seeds"] == {"split": "id", "first": 5000, "rollouts": 1}
    assert best["note"].startswith("selection used tuning seeds") and "fewer steps" in best["selection_rule"]
    assert best["best"]["config"]["eval_seed"] == 5000 and best["command"].startswith("python -m benchmarks.sweep")
    assert (tmp_path / "out/rpro_sweep.png").stat().st_size > 0

    # More trials with the same command add exactly the missing one; the finished ones stay as they were.
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 3)) == 0
    again = _rows(tmp_path)
    assert len(again) == 3 and again[:2] == rows

    # A trial a killed process left running runs again with its parameters.
    study = optuna.load_study(study_name="usb_rpro", storage=f"sqlite:///{tmp_path / 'runs/rpro_sweep.db'}")
    stale = study.ask()
    stale.suggest_categorical("beta", BETAS)
    stale.suggest_float("lr", 3e-6, 1e-4, log=True)
    stale.suggest_categorical("steps", (2, 3))
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 4)) == 0
    last = _rows(tmp_path)
    assert len(last) == 4 and last[:3] == again
    assert {k: last[3][k] for k in ("beta", "steps")} == {k: str(v) for k, v in stale.params.items() if k != "lr"}
    assert float(last[3]["lr"]) == pytest.approx(stale.params["lr"])
    assert study.get_trials()[stale.number].state == TrialState.FAIL

    # Other settings into the same study are refused rather than mixed.
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 4, "--seed", "1")) == 2


def test_a_sweep_over_a_few_values_tries_each_once_and_refuses_more_trials_than_values(usb_base, tmp_path,  # noqa: F811
                                                                                     capsys):
    """TPO searches beta alone: a grid in a seeded order, so no value is drawn twice, a resumed
    sweep goes on with the values not yet tried, and asking more trials than values is refused."""
    assert sweep_main(_sweep_argv(usb_base, tmp_path, len(BETAS) + 1, method="tpo")) == 2
    assert f"at most {len(BETAS)} trials" in capsys.readouterr().err and not (tmp_path / "runs").exists()
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 2, method="tpo")) == 0
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 3, method="tpo")) == 0
    betas = [int(r["beta"]) for r in _rows(tmp_path, "tpo")]
    assert len(betas) == len(set(betas)) == 3 and set(betas) <= set(BETAS)
    assert "lr" not in _rows(tmp_path, "tpo")[0] and "steps" not in _rows(tmp_path, "tpo")[0]  # beta alone


def test_a_grid_sweep_resumed_after_every_trial_tries_each_value_once():
    """The runner's loop: a fresh sampler for every trial (as after a resume) over one study."""
    from benchmarks.sweep import grid, sampler

    study = optuna.create_study(direction="maximize")
    for done in range(len(BETAS)):
        study.sampler = sampler("tpo", 0, done)
        study.optimize(lambda t: float(t.suggest_categorical("beta", BETAS)), n_trials=1)
    assert sorted(t.params["beta"] for t in study.trials) == sorted(BETAS) == sorted(grid("tpo")["beta"])


def test_runner_refuses_a_sweep_without_a_scored_trial_before_any_work(tmp_path, capsys, monkeypatch):
    import benchmarks.run as runner

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "rpro_best.json").write_text(json.dumps({"method": "rpro", "best": None}))
    monkeypatch.setitem(runner.PROFILES, "smoke", replace(runner.PROFILES["smoke"], sweep=str(sweep)))
    out = tmp_path / "results"
    assert run_main(["--task", "usb", "--profile", "smoke", "--out", str(out), "--data", str(tmp_path / "d"),
                     "--runs", str(tmp_path / "r")]) == 2
    assert "no finished trial" in capsys.readouterr().err and not out.exists()


def test_the_default_profile_runs_and_reports_the_protocol_values_it_chose_on_tuning_scenes(tmp_path):
    """sft_share and the bridge limit of the default profile reach every method's run and every sweep
    trial, and results.json's selection names them with the tuning scenes they were chosen on."""
    import argparse
    from pathlib import Path

    from benchmarks.report import _selection_section
    from benchmarks.run import method_config, selection_record
    from benchmarks.sweep import trial_config
    from flowpro.sim_bench import SimulatedBench

    profile = PROFILES["default"]
    assert (profile.sft_share, profile.max_bridge_gap) == (0.8, 0.01)
    for method in ("flowpro", "dagger", "dagger_buffered"):
        cfg = method_config("usb", method, "rpro", 0, Path("base"), Path("demos"), tmp_path, profile, 3,
                            SimulatedBench())
        assert (cfg.sft_share, cfg.max_bridge_gap) == (0.8, 0.01)
    smoke = method_config("usb", "flowpro", "rpro", 0, Path("base"), Path("demos"), tmp_path, PROFILES["smoke"], 1,
                          SimulatedBench())
    assert (smoke.sft_share, smoke.max_bridge_gap) == (None, None) and smoke.out != cfg.out
    args = argparse.Namespace(task="usb", method="rpro", base=str(tmp_path), seed=0, workers=1)
    (tmp_path / "policy").mkdir()
    (tmp_path / "policy/config.json").write_text("{}")
    (tmp_path / "policy/model.safetensors").write_bytes(b"")  # only its path is read here
    trial = trial_config(args, profile, {"beta": 100, "lr": 3e-5, "steps": 300}, tmp_path)
    assert (trial.sft_share, trial.max_bridge_gap) == (0.8, 0.01)

    record = selection_record(profile)["protocol"]
    assert record["chosen"] == {"sft_share": profile.sft_share, "max_bridge_gap": profile.max_bridge_gap}
    first, last = (int(x) for x in record["tuning_seeds"].strip("[ id").replace(")", "").split(","))
    assert last <= profile.test_seed or first >= profile.test_seed + profile.rollouts  # never a test scene
    text = "\n".join(_selection_section({"selection": selection_record(profile)}))
    assert "sft_share" in text and "[5000, 5100)" in text and "fifth diagnosis" in text
    assert selection_record(PROFILES["smoke"]) is None


def test_each_training_seed_records_its_own_demonstrations(tmp_path):
    """A run from --seed 1 next to one from seed 0 must not silently train on seed 0's episodes."""
    from benchmarks.run import demos_root

    roots = {s: demos_root(tmp_path, "e9ad089f5d0123", 48, s) for s in (0, 1, 2)}
    assert roots[0] == tmp_path / "demos_e9ad089f5d_env48"  # the name runs before this change used
    assert len(set(roots.values())) == 3 and roots[1].name.endswith("_s1")


def test_recheck_reruns_the_best_trials_on_fresh_tuning_scenes_against_the_incumbent(usb_base, tmp_path):  # noqa: F811
    from benchmarks.recheck import main as recheck_main

    assert recheck_main(["--method", "rpro", "--base", str(usb_base / "sft"), "--sweep-runs",
                         str(tmp_path / "runs")]) == 2  # no sweep yet: named, nothing written
    assert not (tmp_path / "out").exists()
    assert sweep_main(_sweep_argv(usb_base, tmp_path, 2)) == 0
    best = json.loads((tmp_path / "out/rpro_best.json").read_text())["best"]
    argv = ["--method", "rpro", "--base", str(usb_base / "sft"), "--top", "1", "--rollouts", "2", "--workers", "1",
            "--sweep-runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]
    assert recheck_main(argv) == 0
    record = json.loads((tmp_path / "out/rpro_recheck.json").read_text())
    smoke = PROFILES["smoke"]
    assert record["candidates"] == {"profile": {"beta": smoke.beta, "lr": smoke.lr, "steps": smoke.steps},
                                    f"trial {best['trial']}": best["params"]}
    assert record["scenes"] == {"split": "id", "first": 5001, "rollouts": 2}  # after the sweep's scene 5000
    rows = record["rows"]
    assert set(rows) == {"base", "profile", f"trial {best['trial']}"}
    for name, by_base in rows.items():
        (row,) = by_base.values()
        assert [r["seed"] for r in row["rollouts"]] == [5001, 5002]  # never the test scenes nor the sweep's
        if name != "base":
            assert set(row["against_base"]) >= {"only_first", "only_second", "p_two_sided"}
            assert row["successes"] == sum(r["success"] for r in row["rollouts"])
    assert record["chosen"] in record["candidates"] and record["command"].startswith("python -m benchmarks.recheck")
    assert "| profile |" in (tmp_path / "out/rpro_recheck.md").read_text()
    # A second run resumes from the run directories: the same record.
    assert recheck_main(argv) == 0
    assert json.loads((tmp_path / "out/rpro_recheck.json").read_text())["rows"] == rows


def test_the_runner_takes_each_methods_values_from_its_sweep_and_the_recheck_over_the_best_trial(tmp_path,
                                                                                                  monkeypatch):
    """Profile.sweep: RPRO (and the loss ablations, which differ from it in the loss alone) run at the
    values its recheck chose, or its sweep's best trial without one; a method without a sweep keeps the
    profile's; results.json's selection names where each came from."""
    from pathlib import Path

    from benchmarks.run import method_config, selection_record
    from flowpro.sim_bench import SimulatedBench

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    best = {"method": "rpro", "best": {"params": {"beta": 10, "lr": 2e-5, "steps": 300}, "successes": 22, "n": 50},
            "tuning_seeds": {"split": "id", "first": 5000, "rollouts": 50}, "finished_trials": 10,
            "selection_rule": "highest"}
    (sweep / "rpro_best.json").write_text(json.dumps(best))
    profile = replace(PROFILES["default"], sweep=str(sweep))

    def values(method, loss="rpro"):
        cfg = method_config("usb", method, loss, 0, Path("base"), Path("demos"), tmp_path, profile, 3, SimulatedBench())
        return cfg.beta, cfg.lr, cfg.steps, cfg.warmup

    default = PROFILES["default"]
    assert values("flowpro") == values("flowpro", "dpo_sft") == (10.0, 2e-5, 300, 30)
    assert values("dagger") == (default.beta, default.lr, default.steps, default.steps // 10)
    recheck = {"chosen": "trial 8", "chosen_params": {"beta": 3, "lr": 1.2e-5, "steps": 800},
               "total_successes": {"trial 8": 80, "profile": 60}, "bases": ["a", "b"], "rule": "most successes",
               "scenes": {"split": "id", "first": 5050, "rollouts": 100}}
    (sweep / "rpro_recheck.json").write_text(json.dumps(recheck))
    assert values("flowpro") == (3.0, 1.2e-5, 800, 80)
    record = selection_record(profile)["rpro"]
    assert record["chosen"] == recheck["chosen_params"] and record["recheck_success"] == "80/200"
    assert record["recheck_seeds"] == "[5050, 5150) id" and record["sweep"]["tuning_success"] == "22/50"
    # no sweep: exactly the configuration (and run directory) of before
    plain = method_config("usb", "flowpro", "rpro", 0, Path("base"), Path("demos"), tmp_path,
                          replace(default, sweep=None), 3, SimulatedBench())
    assert (plain.beta, plain.lr, plain.steps) == (default.beta, default.lr, default.steps)
    # the default profile takes the committed recheck's choice, from whatever directory it runs in
    monkeypatch.chdir(tmp_path)
    committed = json.loads((Path(__file__).parents[1] / "results/usb/sweep/rpro_recheck.json").read_text())
    assert selection_record(default)["rpro"]["chosen"] == committed["chosen_params"]
    assert selection_record(default)["rpro"]["recheck_source"] == "results/usb/sweep/rpro_recheck.json"
