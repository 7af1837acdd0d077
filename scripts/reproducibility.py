"""Is the closed-loop evaluation bitwise reproducible, and what changes it across CPUs? (issue 14)

    python scripts/reproducibility.py --policy /tmp/repro/sft/policy --rollouts 20 \
        --out results/usb/reproducibility.json

On one machine it evaluates the policy several ways that differ only in scheduling (a rerun,
1 vs 2 workers, the seeds in reverse order so each worker sees other predecessors, a seed alone
in a fresh process) and compares every rollout's result dict, executed actions and first chunk.
Then it emulates other CPUs on this one: the same evaluation in fresh processes under settings
that change which kernels torch (``ATEN_CPU_CAPABILITY``), oneDNN (``ONEDNN_MAX_CPU_ISA``), MKL
(``MKL_CBWR``) and numpy (``NPY_DISABLE_CPU_FEATURES``) pick, and other torch thread counts; for
each it counts the rollouts whose outcome, result dict or trajectory differ from the default and
how far the first predicted chunk moves. ``--setting NAME=VAR=VALUE[,VAR=VALUE]`` adds a setting.

The traced rollout below is ``flowpro.rollout._rollout_one`` plus a record of what the policy
predicted and the arms executed; it shares that module's per-worker cache, so a worker keeps its
environment and policy across seeds exactly as in ``evaluate``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import shlex
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages sit beside scripts/
    sys.path.insert(0, str(ROOT))

# Kernels an AVX2-only x86 machine would run, asked for on this one. numpy's list names every
# AVX-512 group it dispatches on (unknown names on a given CPU are ignored with a warning).
NUMPY_NO_AVX512 = "AVX512F AVX512CD AVX512_KNL AVX512_KNM AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
PIN_AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2,STRICT",
            "NPY_DISABLE_CPU_FEATURES": NUMPY_NO_AVX512}
# name -> (environment overrides, torch threads in the worker; None: what evaluate sets, i.e. 1)
SETTINGS: dict[str, tuple[dict[str, str], int | None]] = {
    "aten_default": ({"ATEN_CPU_CAPABILITY": "default"}, None),
    "aten_avx2": ({"ATEN_CPU_CAPABILITY": "avx2"}, None),
    "mkl_cbwr_compatible": ({"MKL_CBWR": "COMPATIBLE"}, None),
    "onednn_avx2": ({"ONEDNN_MAX_CPU_ISA": "AVX2"}, None),
    "numpy_no_avx512": ({"NPY_DISABLE_CPU_FEATURES": NUMPY_NO_AVX512}, None),
    "torch_threads_2": ({}, 2),
    "pin_avx2": (PIN_AVX2, None),
}


CHILD_TIMEOUT_S = 600  # 2 workers x 2 torch threads on 2 busy cores ran > 12 min for 6 rollouts (vs ~60 s)


class ChunkRecorder:
    """Wraps a ChunkPolicy and keeps every chunk it predicts (the rollout loop sees no difference)."""

    def __init__(self, runner: Any):
        self.runner, self.chunks = runner, []

    def reset(self) -> None:
        self.runner.reset()
        self.chunks = []

    def predict_chunk(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        chunk = self.runner.predict_chunk(obs, instruction)
        self.chunks.append(np.array(chunk))
        return chunk


def traced_rollout(task: str, split: str, policy_dir: str, torch_threads: int | None, seed: int) -> dict[str, Any]:
    """One rollout as ``evaluate`` runs it, with its executed actions, chunks and the worker's state."""
    import torch

    from flowpro.rollout import _WORKER, PolicyRunner, worker_env_policy
    from envs.rollout import rollout

    env, policy = worker_env_policy(_WORKER, task, split, policy_dir)
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    recorder = ChunkRecorder(PolicyRunner(policy, seed))
    result = rollout(env, recorder, seed=seed, options={"split": split}, n_action_steps=policy.config.n_action_steps,
                     record=True)
    actions = np.stack([s.action for s in result.trajectory]).astype(np.float64)
    final_state = env.snapshot().physics
    return {"summary": result.summary(), "actions": actions, "first_chunk": recorder.chunks[0],
            "final_physics": final_state, "torch_threads": torch.get_num_threads(),
            "torch_interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "pid": os.getpid()}


def traced_evaluate(task: str, policy_dir: str, seeds: list[int], split: str = "id", workers: int = 2,
                    torch_threads: int | None = None) -> list[dict[str, Any]]:
    """:func:`traced_rollout` over ``seeds`` on ``evaluate``'s worker pool, in the order given."""
    from benchmarks.evaluate import resolve_policy_dir
    from envs.rollout import parallel_map

    policy_dir = str(resolve_policy_dir(policy_dir))
    return parallel_map(partial(traced_rollout, task, split, policy_dir, torch_threads), seeds, workers)


def trajectory_digest(trace: dict[str, Any]) -> str:
    """Bitwise fingerprint of a rollout: its result dict, executed actions and final physics state."""
    h = hashlib.sha256(json.dumps(trace["summary"], sort_keys=True).encode())
    h.update(np.ascontiguousarray(trace["actions"]).tobytes())
    h.update(np.ascontiguousarray(trace["final_physics"]).tobytes())
    return h.hexdigest()[:16]


def by_seed(traces: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {t["summary"]["seed"]: t for t in traces}


def first_divergence(a: np.ndarray, b: np.ndarray) -> int | None:
    """The first control step whose executed action differs bitwise (None: identical)."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(np.any(a[:n] != b[:n], axis=1))
    if len(differ):
        return int(differ[0])
    return None if len(a) == len(b) else n


def compare(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """How ``other`` differs from ``reference``, seed by seed."""
    ref, oth = by_seed(reference), by_seed(other)
    if set(ref) != set(oth):
        raise ValueError(f"different seeds: {sorted(ref)} vs {sorted(oth)}")
    outcome, summary, trajectory, chunk_diff, diverge, flips = 0, 0, 0, [], [], []
    for seed in sorted(ref):
        a, b = ref[seed], oth[seed]
        ends = [(t["summary"]["success"], t["summary"]["terminated_by"]) for t in (a, b)]
        if ends[0] != ends[1]:
            outcome += 1
            flips.append({"seed": seed, "reference": ends[0][1], "other": ends[1][1]})
        summary += a["summary"] != b["summary"]
        trajectory += trajectory_digest(a) != trajectory_digest(b)
        chunk_diff.append(float(np.max(np.abs(a["first_chunk"] - b["first_chunk"]))))
        step = first_divergence(a["actions"], b["actions"])
        if step is not None:
            diverge.append(step)
    return {"rollouts": len(ref), "outcome_changed": outcome, "result_dict_changed": summary,
            "trajectory_changed": trajectory, "outcome_flips": flips,
            "first_chunk_max_abs_diff": max(chunk_diff),
            "first_chunk_rollouts_differing": sum(d > 0 for d in chunk_diff),
            "first_divergent_step": {"min": min(diverge), "median": float(np.median(diverge)), "max": max(diverge)}
            if diverge else None,
            "successes": [sum(t["summary"]["success"] for t in reference), sum(t["summary"]["success"] for t in other)]}


def worker_state(traces: list[dict[str, Any]]) -> dict[str, Any]:
    return {"torch_threads": sorted({t["torch_threads"] for t in traces}),
            "torch_interop_threads": sorted({t["torch_interop_threads"] for t in traces}),
            "cpu_capability": sorted({t["cpu_capability"] for t in traces}),
            "seeds_per_worker": sorted(np.unique([t["pid"] for t in traces], return_counts=True)[1].tolist())}


# ---------------------------------------------------------------------- fresh processes
def run_child(env_overrides: dict[str, str], task: str, policy: str, seeds: list[int], workers: int,
              torch_threads: int | None) -> list[dict[str, Any]]:
    """:func:`traced_evaluate` in a fresh interpreter whose environment (hence its workers') has the overrides."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "traces.pkl"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(out), "--task", task, "--policy", policy,
               "--seeds", *map(str, seeds), "--workers", str(workers)]
        if torch_threads is not None:
            cmd += ["--torch-threads", str(torch_threads)]
        subprocess.run(cmd, env={**os.environ, **env_overrides}, check=True, cwd=ROOT, timeout=CHILD_TIMEOUT_S)
        return pickle.loads(out.read_bytes())


def parent_threads() -> dict[str, Any]:
    """What the calling process (the benchmark runner's, where SFT trains) uses."""
    import torch

    return {"torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "os_cpu_count": os.cpu_count()}


def _git_commit() -> str | None:
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, cwd=ROOT)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True, cwd=ROOT)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def parse_setting(text: str) -> tuple[str, dict[str, str]]:
    """``NAME=VAR=VALUE[,VAR=VALUE]`` -> (name, {VAR: VALUE})."""
    name, _, assignments = text.partition("=")
    pairs = [a.split("=", 1) for a in assignments.split(",") if a]
    if not name or not pairs or any(len(p) != 2 for p in pairs):
        raise argparse.ArgumentTypeError(f"expected NAME=VAR=VALUE[,VAR=VALUE], got {text!r}")
    return name, dict(pairs)


# ---------------------------------------------------------------------- the measurement
def measure(task: str, policy: str, seeds: list[int], fresh_seeds: list[int], settings: dict) -> dict[str, Any]:
    from benchmarks.evaluate import evaluate

    timings: dict[str, float] = {}

    def timed(name: str, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"[repro] {name}: {timings[name]} s", file=sys.stderr, flush=True)
        return value

    # One machine: the code path itself (result dicts of evaluate), then traces.
    evaluated = timed("evaluate", evaluate, task, policy, seeds, "id", workers=2)
    base = timed("traced_w2", traced_evaluate, task, policy, seeds, "id", workers=2)
    reverse = timed("traced_w2_reversed", traced_evaluate, task, policy, seeds[::-1], "id", workers=2)
    one = timed("traced_w1_fresh_process", run_child, {}, task, policy, seeds, 1, None)
    fresh = [timed(f"fresh_{s}", run_child, {}, task, policy, [s], 1, None)[0] for s in fresh_seeds]
    one_machine = {
        "evaluate_rerun_result_dicts_identical": evaluated == [t["summary"] for t in base],
        "w1_vs_w2": compare(base, one),
        "reversed_order_w2": compare(base, reverse),
        "seed_alone_in_fresh_process_vs_after_others": compare([by_seed(base)[s] for s in fresh_seeds], fresh),
        "worker_state_w2": worker_state(base),
        "worker_state_w1": worker_state(one),
        "parent_process": parent_threads(),
    }
    across: dict[str, Any] = {}
    default = timed("child_default", run_child, {}, task, policy, seeds, 2, None)
    across["default_child_vs_in_process"] = {"env": {}, **compare(base, default), "worker_state": worker_state(default)}
    for name, (env_overrides, threads) in settings.items():
        try:
            traces = timed(f"child_{name}", run_child, env_overrides, task, policy, seeds, 2, threads)
        except subprocess.TimeoutExpired:
            across[name] = {"env": env_overrides, "torch_threads": threads, "error": f"over {CHILD_TIMEOUT_S} s"}
            continue
        across[name] = {"env": env_overrides, "torch_threads": threads, **compare(default, traces),
                        "worker_state": worker_state(traces)}
    return {"one_machine": one_machine, "across_cpus_vs_default": across, "seconds": timings,
            "successes_default": sum(t["summary"]["success"] for t in default)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="usb")
    ap.add_argument("--policy", required=True, help="run directory or policy directory")
    ap.add_argument("--rollouts", type=int, default=10, help="seeds 1000, 1001, ... (the benchmark's ID seeds)")
    ap.add_argument("--fresh-seeds", type=int, nargs="*", default=[1000, 1002],
                    help="seeds also run alone, each in a fresh process")
    ap.add_argument("--setting", type=parse_setting, action="append", default=[],
                    help="an extra emulated machine: NAME=VAR=VALUE[,VAR=VALUE]")
    ap.add_argument("--only", nargs="*", default=None, help="run only these built-in settings")
    ap.add_argument("--out", default="results/usb/reproducibility.json")
    # internal: one traced evaluation in this (fresh) process
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workers", type=int, default=2, help=argparse.SUPPRESS)
    ap.add_argument("--torch-threads", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        traces = traced_evaluate(args.task, args.policy, args.seeds, "id", args.workers, args.torch_threads)
        Path(args.child).write_bytes(pickle.dumps(traces))
        return 0
    from benchmarks.evaluate import EVAL_SEED

    seeds = list(range(EVAL_SEED, EVAL_SEED + args.rollouts))
    settings = {k: v for k, v in SETTINGS.items() if args.only is None or k in args.only}
    settings.update({name: (env, None) for name, env in args.setting})
    t0 = time.perf_counter()
    result = measure(args.task, args.policy, seeds, [s for s in args.fresh_seeds if s in seeds], settings)
    command = "python scripts/reproducibility.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    record = {"command": command, "commit": _git_commit(), "task": args.task, "policy": args.policy, "seeds": seeds,
              "cpu": _cpu_name(), "inherited_env": {k: os.environ.get(k) for k in _KERNEL_VARS},
              **result, "total_seconds": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({k: record[k] for k in ("commit", "successes_default", "total_seconds")}))
    return 0


_KERNEL_VARS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "NPY_DISABLE_CPU_FEATURES", "OMP_NUM_THREADS")


def _cpu_name() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


if __name__ == "__main__":
    sys.exit(main())
