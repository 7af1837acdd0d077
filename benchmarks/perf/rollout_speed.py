"""Policy rollouts against bare physics, and batched evaluation against one rollout at a time.

    python -m benchmarks.perf.rollout_speed [--rollouts 16] [--env-batch 8] [--workers 2] [--time-limit 10]
                                            [--repeats 2] [--baseline ac987f7]

(a) Policy-driven state-mode USB control steps per second against bare ``mj_step`` of the same
scene: one rollout's ``data.ctrl`` is recorded per substep and replayed through ``mj_step`` alone
from the same start state (the replay must end in the rollout's physics state, bit for bit).
(b) Evaluation rollouts per minute: the baseline path (one environment per worker, a
batch-size-1 policy call per rollout) at the baseline commit (``--baseline``, default ac987f7:
before the environment speed-ups of issue 14, part 4), run from a ``git archive`` of that commit in
a subprocess, against this checkout's one-environment path and its ``env_batch`` environments per
worker in lock-step with one batched policy call per re-plan, all on the same seeds and in one run,
interleaved ``--repeats`` times (each path's fastest repeat counts). The baseline's (a) is measured
there too, on its own code; this script's copy does the measuring in both. Goals (issue 14):
(a) >= 0.5x, (b) >= 3x against the baseline.

The policy is the default profile's state-only built-in architecture, untrained (random weights,
chunks spread 2 cm around the home pose), so every rollout runs to the time limit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import envs  # noqa: F401  (first: selects headless rendering before mujoco loads)

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.evaluate import EVAL_SEED, PolicyRunner, evaluate, sample_chunks  # noqa: E402
from benchmarks.perf import write_result  # noqa: E402
from benchmarks.run import _git_commit  # noqa: E402
from envs.env import XTrainerEnv  # noqa: E402
from envs.rollout import rollout  # noqa: E402
from flowpro.policies import BuiltinConfig, BuiltinVLA, FlowPolicy  # noqa: E402


class CtrlRecordingEnv(XTrainerEnv):
    """The USB environment, keeping the control vector of every physics substep."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ctrls: list[np.ndarray] = []

    def _write_ctrl(self, q_from: dict, q_to: dict, alpha: float) -> None:  # reset
        super()._write_ctrl(q_from, q_to, alpha)
        self.ctrls.append(self.data.ctrl.copy())

    def _servo_ctrls(self, q_from: dict, q_to: dict) -> np.ndarray:  # act: every substep's ctrl
        rows = super()._servo_ctrls(q_from, q_to)
        self.ctrls.extend(row.copy() for row in rows)
        return rows


def untrained_policy(out: Path) -> Path:
    """The default profile's state-only architecture with random weights, saved to ``out``."""
    env = XTrainerEnv(task="usb", obs_mode="state")
    obs, _ = env.reset(seed=0)
    env.close()
    torch.manual_seed(0)
    policy = BuiltinVLA(BuiltinConfig(use_images=False, cameras=(), env_state_dim=obs["environment_state"].shape[0]))
    policy.action_norm.set_stats(torch.tensor(obs["agent_pos"]), torch.full((20,), 0.02))
    policy.save(out)
    return out


def control_vs_physics(policy: FlowPolicy, time_limit_s: float, seed: int) -> dict:
    """(a): one policy rollout timed step by step, then its substep controls replayed bare."""
    env = CtrlRecordingEnv(task="usb", obs_mode="state", time_limit_s=time_limit_s)
    env.reset(seed=seed)
    start = env.snapshot().physics  # the rollout's reset puts the environment back here
    env.ctrls.clear()
    runner = PolicyRunner(policy, seed)
    act_s = policy_s = act_cpu = policy_cpu = 0.0
    real_act, real_predict = env.act, runner.predict_chunk

    def timed_act(action):
        nonlocal act_s, act_cpu
        t0, c0 = time.perf_counter(), time.process_time()
        out = real_act(action)
        act_s, act_cpu = act_s + time.perf_counter() - t0, act_cpu + time.process_time() - c0
        return out

    def timed_predict(obs, instruction):
        nonlocal policy_s, policy_cpu
        t0, c0 = time.perf_counter(), time.process_time()
        out = real_predict(obs, instruction)
        policy_s, policy_cpu = policy_s + time.perf_counter() - t0, policy_cpu + time.process_time() - c0
        return out

    env.act, runner.predict_chunk = timed_act, timed_predict
    result = rollout(env, runner, seed=seed, n_action_steps=policy.config.n_action_steps)
    end = env.snapshot().physics
    ctrls = env.ctrls[1:]  # the first came from the rollout's reset
    assert len(ctrls) == result.steps * env.cfg.substeps
    model, data = env.model, mujoco.MjData(env.model)
    mujoco.mj_setState(model, data, start, mujoco.mjtState.mjSTATE_INTEGRATION)
    t0, c0 = time.perf_counter(), time.process_time()
    for ctrl in ctrls:
        data.ctrl[:] = ctrl
        mujoco.mj_step(model, data)
    bare_s, bare_cpu = time.perf_counter() - t0, time.process_time() - c0
    replayed = np.empty_like(end)
    mujoco.mj_getState(model, data, replayed, mujoco.mjtState.mjSTATE_INTEGRATION)
    env.close()
    steps, substeps = result.steps, env.cfg.substeps
    bare_control_steps_per_s = steps / bare_s
    return {
        "control_steps": steps,
        "physics_substeps_per_control_step": substeps,
        "env_act_steps_per_s": round(steps / act_s, 1),
        "policy_driven_steps_per_s": round(steps / (act_s + policy_s), 1),
        "policy_share_of_rollout_pct": round(100 * policy_s / (act_s + policy_s), 1),
        "bare_mj_step_per_s": round(steps * substeps / bare_s, 1),
        "bare_physics_control_steps_per_s": round(bare_control_steps_per_s, 1),
        "ratio_env_act_vs_bare_physics": round(steps / act_s / bare_control_steps_per_s, 3),
        "ratio_policy_driven_vs_bare_physics": round(steps / (act_s + policy_s) / bare_control_steps_per_s, 3),
        # The same on this process's CPU time: what other processes on a shared machine take of
        # the cores between the timed phases moves these less than the wall-clock ones.
        "cpu_time_ratio_env_act_vs_bare_physics": round(bare_cpu / act_cpu, 3),
        "cpu_time_ratio_policy_driven_vs_bare_physics": round(bare_cpu / (act_cpu + policy_cpu), 3),
        "replay_matches_rollout_bitwise": bool(np.array_equal(replayed, end)),
    }


def batch_call_difference(policy: FlowPolicy, seeds: list[int]) -> dict:
    """How far one batched policy call's chunks are from batch-size-1 calls on the same inputs."""
    env = XTrainerEnv(task="usb", obs_mode="state")
    observations = [env.reset(seed=s)[0] for s in seeds]
    env.close()
    t0 = time.perf_counter()
    alone = [PolicyRunner(policy, s).predict_chunk(o, env.task_description) for s, o in zip(seeds, observations)]
    t1 = time.perf_counter()
    together = sample_chunks([PolicyRunner(policy, s) for s in seeds], observations, env.task_description)
    t2 = time.perf_counter()
    diffs = [float(np.abs(a - b).max()) for a, b in zip(alone, together)]
    return {"batch": len(seeds), "rows_bitwise_equal": sum(d == 0.0 for d in diffs),
            "max_abs_action_difference": max(diffs),
            "ms_per_chunk_batch_size_1": round((t1 - t0) / len(seeds) * 1e3, 1),
            "ms_per_chunk_batched": round((t2 - t1) / len(seeds) * 1e3, 1)}


_AT_BASELINE = """
import json, sys, time
args = json.loads(sys.argv[1])
import envs
assert envs.__file__.startswith(args["root"]), envs.__file__  # the baseline's code, not this checkout's
import torch
from benchmarks.evaluate import evaluate
from benchmarks.perf.rollout_speed import control_vs_physics
from flowpro.policies import FlowPolicy
torch.set_num_threads(1)
if args["what"] == "physics":
    print(json.dumps(control_vs_physics(FlowPolicy.load(args["policy_dir"]), args["time_limit_s"], args["seed"])))
else:
    t0 = time.perf_counter()
    results = evaluate("usb", args["policy_dir"], args["seeds"], "id", workers=args["workers"],
                       time_limit_s=args["time_limit_s"])
    print(json.dumps({"wall_s": time.perf_counter() - t0, "results": results}))
"""


@contextmanager
def baseline_checkout(rev: str) -> Iterator[tuple[str, str]]:
    """``(commit, folder)``: a ``git archive`` of ``rev`` with this checkout's copy of this script, so
    that both commits are measured by the same code."""
    commit = subprocess.run(["git", "rev-parse", rev], capture_output=True, text=True, check=True).stdout.strip()
    with tempfile.TemporaryDirectory() as root:
        archive = subprocess.run(["git", "archive", commit], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", root], input=archive, check=True)
        shutil.copy(__file__, Path(root) / "benchmarks" / "perf" / "rollout_speed.py")
        yield commit, root


def at_baseline(root: str, what: str, **args) -> dict:
    """Run ``what`` ("physics": (a); "evaluate": one-env-per-worker (b)) on the baseline's code in a
    subprocess that imports it (its evaluation workers inherit its PYTHONPATH)."""
    out = subprocess.run([sys.executable, "-c", _AT_BASELINE, json.dumps({"root": root, "what": what, **args})],
                         cwd=root, check=True, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": root}).stdout
    return json.loads(out.splitlines()[-1])


def evaluation_speed(policy_dir: Path, seeds: list[int], workers: int, env_batch: int, time_limit_s: float,
                     baseline: tuple[str, str], repeats: int) -> dict:
    """(b): the same seeds through the baseline commit's path, this checkout's same path and the
    batched one, interleaved ``repeats`` times; rates from each path's fastest repeat."""
    commit, root = baseline
    walls: dict[str, list[float]] = {"baseline_one_env_per_worker": [], "one_env_per_worker": [], "batched": []}
    results = {}
    for _ in range(repeats):
        run = at_baseline(root, "evaluate", policy_dir=str(policy_dir), seeds=seeds, workers=workers,
                          time_limit_s=time_limit_s)
        walls["baseline_one_env_per_worker"].append(run["wall_s"])
        results["baseline_one_env_per_worker"] = run["results"]
        for name, kw in (("one_env_per_worker", {}), ("batched", {"env_batch": env_batch})):
            t0 = time.perf_counter()
            results[name] = evaluate("usb", policy_dir, seeds, "id", workers=workers, time_limit_s=time_limit_s, **kw)
            walls[name].append(time.perf_counter() - t0)
    old, now, new = (results["baseline_one_env_per_worker"], json.loads(json.dumps(results["one_env_per_worker"])),
                     results["batched"])
    per_min = {k: len(seeds) / min(t) * 60 for k, t in walls.items()}
    return {
        "rollouts": len(seeds), "workers": workers, "env_batch": env_batch, "time_limit_s": time_limit_s,
        "repeats": repeats, "baseline_commit": commit,
        "baseline_rollouts_per_min": round(per_min["baseline_one_env_per_worker"], 2),
        "one_env_per_worker_rollouts_per_min": round(per_min["one_env_per_worker"], 2),
        "batched_rollouts_per_min": round(per_min["batched"], 2),
        "speed_up_batched_vs_baseline": round(per_min["batched"] / per_min["baseline_one_env_per_worker"], 2),
        "speed_up_one_env_vs_baseline": round(per_min["one_env_per_worker"] / per_min["baseline_one_env_per_worker"], 2),
        "speed_up_batched_vs_one_env": round(per_min["batched"] / per_min["one_env_per_worker"], 2),
        "wall_s": {k: [round(t, 1) for t in v] for k, v in walls.items()},
        "one_env_identical_result_dicts_vs_baseline": sum(a == b for a, b in zip(old, now)),
        "same_outcomes": sum((a["success"], a["terminated_by"]) == (b["success"], b["terminated_by"])
                             for a, b in zip(now, new)),
        "identical_result_dicts": sum(a == b for a, b in zip(results["one_env_per_worker"], new)),
        "note": ("result dicts hold seed, outcome, steps, failures and stages, not trajectories; this untrained "
                 "policy's rollouts all run to the time limit, so its outcomes cannot tell the paths apart"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rollouts", type=int, default=16)
    ap.add_argument("--env-batch", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--time-limit", type=float, default=10.0, help="episode length (s) of every rollout")
    ap.add_argument("--out", default="results/perf/rollout_speed.json")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved repeats of (b); the fastest of each counts")
    ap.add_argument("--baseline", default="ac987f7",
                    help="commit whose one-env-per-worker path (b) and env.act (a) are measured beside this checkout")
    args = ap.parse_args()

    torch.set_num_threads(1)  # as in the evaluation workers
    load_before = os.getloadavg()
    seeds = list(range(EVAL_SEED, EVAL_SEED + args.rollouts))
    with tempfile.TemporaryDirectory() as tmp:
        policy_dir = untrained_policy(Path(tmp) / "policy")
        policy = FlowPolicy.load(policy_dir)
        with baseline_checkout(args.baseline) as baseline:
            base_physics = at_baseline(baseline[1], "physics", policy_dir=str(policy_dir),
                                       time_limit_s=args.time_limit, seed=EVAL_SEED)
            physics = control_vs_physics(policy, args.time_limit, EVAL_SEED)
            physics["baseline_commit"] = baseline[0]
            physics["baseline"] = {k: v for k, v in base_physics.items()
                                   if k not in ("control_steps", "physics_substeps_per_control_step")}
            physics["env_act_speed_up_vs_baseline"] = round(
                physics["env_act_steps_per_s"] / base_physics["env_act_steps_per_s"], 2)
            difference = batch_call_difference(policy, seeds[:args.env_batch])
            evaluation = evaluation_speed(policy_dir, seeds, args.workers, args.env_batch, args.time_limit,
                                          baseline, args.repeats)
    result = {
        "command": (f"python -m benchmarks.perf.rollout_speed --rollouts {args.rollouts} --env-batch {args.env_batch} "
                    f"--workers {args.workers} --time-limit {args.time_limit} --repeats {args.repeats} --baseline {args.baseline}"),
        "git_commit": _git_commit(),
        "task": "usb", "obs_mode": "state",
        "policy": ("untrained built-in state-only policy, default architecture (d_model 128, 4 layers, 10 Euler "
                   "steps, chunk 30, re-plan every 15), action std 0.02 around the home pose"),
        "control_vs_bare_physics": physics,
        "batched_policy_call": difference,
        "evaluation": evaluation,
        "goals": {"ratio_env_act_vs_bare_physics": 0.5, "ratio_policy_driven_vs_bare_physics": 0.5,
                  "speed_up_batched_vs_baseline": 3.0},
        "note": ("one run on a shared 2-core machine: the paths run one after another, so what other processes "
                 "take of the cores moves the ratios; (a) is also given on this process's CPU time, (b) takes "
                 "each path's fastest of its interleaved repeats"),
        "load_average_before_after": [[round(x, 2) for x in load_before], [round(x, 2) for x in os.getloadavg()]],
        "machine": {"cpu_count": os.cpu_count(), "python": platform.python_version(), "mujoco": mujoco.__version__,
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
    }
    write_result(args.out, result)


if __name__ == "__main__":
    main()
