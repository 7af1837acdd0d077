"""FlowPRO stage 2: rounds of intervention-and-rollback and preference fine-tuning (paper
Algorithm 2; docs/method.md §Pipeline, §Losses, §Batch mixing).

    python -m flowpro.train rpro --task usb --base runs/usb/sft_xxx --rounds 3 --out runs/usb/rpro
    python -m flowpro.train rpro --task usb --base runs/usb/sft_real --rounds 3 --out runs/usb/rpro_real \
        --backend real --robot-config my_xtrainer.json

Each round ``k``: collect pairs using the current policy (in simulation with the oracle, on the
real X-Trainer with a human operator: :mod:`flowpro.benches`), build the tuples
(:class:`~flowpro.data.PreferenceDataset`), fine-tune on batches mixed from ``D^k_pref``,
``D^{<k}_pref`` and ``D_SFT`` (:mod:`flowpro.mixing`) against a reference frozen for the round
(the policy at the round's start, or the SFT base with ``--reference sft``), then evaluate (on the
real robot the operator marks each rollout's success). Everything a round makes stays under
``<out>/round_<k>/``; a finished round has ``round.json`` and is skipped on a rerun, an unfinished
one resumes from its last checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import json
import platform
import shutil
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from envs.dataset import finished_episodes
from envs.tasks import check_split
from flowpro.benches import Bench, bench_class, make_bench
from flowpro.data import ACTION_L, ChunkDataset, PreferenceDataset
from flowpro.losses import get_loss
from flowpro.methods import (Method, get_method, preference_losses,  # noqa: F401  (importable from here too)
                             register_method, select_rows)
from flowpro.mixing import MixingSampler
from flowpro.policies import FlowPolicy
from flowpro.policies.base import ACTION
from flowpro.training import StepOutput, fit


@dataclass
class RPROConfig:
    task: str
    base: str  # the SFT run (or its policy directory)
    out: str
    rounds: int = 3
    method: str = "flowpro"  # flowpro | dagger | dagger_buffered | pi06star | tpo (baselines/)
    loss: str = "rpro"  # flowpro's loss: rpro | pro | dpo | dpo_sft | sft (the ablations, same data and schedule)
    beta: float = 1000.0
    lambda_pro: float = 1.0
    lambda_sft: float = 1.0
    reg_weight: float = 1.0
    reference: str = "previous"  # "previous": the policy at the round's start; "sft": always the base
    pairs: str = "30,30,30"  # pairs per round (paper App. G, USB: docs/method.md §Training schedule); the last repeats
    steps: int = 1000  # fine-tuning steps per round
    batch_size: int = 32
    lr: float = 3e-5
    lr_min: float | None = None  # cosine floor; default lr / 4 (the paper: 1e-5 -> 2.5e-6)
    warmup: int = 100
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    eval_rollouts: int = 50  # per split, after every round (0: no evaluation)
    round_eval_rollouts: int | None = None  # after the rounds before the last (default: eval_rollouts)
    eval_splits: str = "id,ood"
    eval_seed: int = 1000  # rollout i of an evaluation uses eval_seed + i: flowpro.rollout.EVAL_SEED, the test
    #                        scenes, unless a hyperparameter sweep evaluates on its tuning scenes (benchmarks/sweep.py)
    handback: str = "completion"
    stall_s: float = 8.0  # the oracle's patience without stage progress
    hack_r_w_min: float = -5.0  # reward-hacking monitor: running-mean r_w below this ...
    hack_r_l_min: float = -50.0  # ... or r_l below this (running away) raises a warning
    stop_on_hacking: bool = False
    skip_empty_rounds: bool = False  # a round that collects no pair: skip it (else an error)
    save_every: int = 250
    log_every: int = 25
    workers: int | None = None  # evaluation and collection processes (default: one per core)
    threads: int = 1  # torch threads while fine-tuning, pinned as in SFT (flowpro.train.SFTConfig.threads)
    demos: str | None = None  # D_SFT (default: the base run's dataset)
    shared_pairs: str | None = None  # a cache of round-1 pairs for runs from the same base, seed and oracle
    cfg_weight: float = 1.0  # pi06star: classifier-free guidance weight at inference (1 = plain conditional)
    tpo_states: int = 8  # tpo: states sub-sampled per trajectory for the trajectory-summed reward
    # Clamp every normalised training target to +-b (PolicyConfig.target_bound), for the policy and
    # its reference alike, every method and buffer; None keeps the base's own setting.
    target_bound: float | None = None
    # The share of each batch drawn from D_SFT, for every buffered method (flowpro, dagger_buffered,
    # tpo); None: the paper's 20 % (round 1) and 15 % (later rounds). results/usb/README.md.
    sft_share: float | None = None
    # Case-1 bridges only from states whose tools lie within this many metres of the correction
    # (flowpro.tuples.build_pair_tuples), for every method that trains on them; None: every state.
    max_bridge_gap: float | None = None
    backend: str = "sim"  # sim | real: the X-Trainer of robot_config with a human operator (flowpro.benches)
    robot_config: str | None = None  # backend real: the robot configuration file (hardware/config.py)

    def pairs_in_round(self, k: int) -> int:
        counts = [int(x) for x in self.pairs.split(",")]
        return counts[min(k, len(counts)) - 1]

    def collection_seed(self, k: int) -> int:
        """The first rollout seed of round ``k``'s collection."""
        return 100_000 * (self.seed + 1) + 10_000 * k

    def record(self) -> dict[str, Any]:
        """The configuration as ``config.json`` holds it and the benchmark runner hashes it. A
        simulated run leaves the real-bench fields out, and a run on the test scenes ``eval_seed``, so
        runs made before they existed keep their identity (a rerun resumes them, the runner's caches
        stay valid); so does a run without a ``target_bound``, ``sft_share`` or ``max_bridge_gap``."""
        out = asdict(self)
        if self.backend == "sim":
            del out["backend"], out["robot_config"]
        if self.eval_seed == RPROConfig.eval_seed:
            del out["eval_seed"]
        for optional in ("target_bound", "sft_share", "max_bridge_gap"):
            if out[optional] is None:
                del out[optional]
        return out

    def __post_init__(self) -> None:
        if self.lr_min is None:
            self.lr_min = self.lr / 4

    def validate(self) -> None:
        get_loss(self.loss)
        get_method(self.method)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.sft_share is not None and not 0.0 <= self.sft_share < 1.0:
            raise ValueError(f"sft_share must be in [0, 1) (or None: the paper's ratios), got {self.sft_share}")
        if self.target_bound is not None and not self.target_bound > 0:
            raise ValueError(f"target_bound must be > 0 (or None: the base's setting), got {self.target_bound}")
        if self.max_bridge_gap is not None and not self.max_bridge_gap > 0:
            raise ValueError(f"max_bridge_gap must be > 0 metres (or None: every state bridges), got {self.max_bridge_gap}")
        if self.reference not in ("previous", "sft"):
            raise ValueError(f"reference must be 'previous' or 'sft', got {self.reference!r}")
        if self.round_eval_rollouts is not None and self.round_eval_rollouts < 1:
            raise ValueError(f"round_eval_rollouts must be >= 1, got {self.round_eval_rollouts}")
        if self.rounds < 1 or self.steps < 1:
            raise ValueError(f"need rounds >= 1 and steps >= 1, got {self.rounds}, {self.steps}")
        for split in self.eval_splits.split(","):
            check_split(split)  # on the real bench too, where the split labels the scenes set up
        bench_class(self.backend).check(self)  # backend sim: no robot_config; real: a valid one


class RewardHacking(RuntimeError):
    """The implicit rewards left their healthy range and the run was configured to stop."""


class RewardHackingMonitor:
    """Watches running means of the implicit rewards (docs/method.md §Diagnostics: healthy RPRO keeps |r| = O(1);
    Flow-DPO collapses with r_w << 0, DPO+SFT lets r_l run away)."""

    def __init__(self, r_w_min: float, r_l_min: float, momentum: float = 0.95):
        self.r_w_min, self.r_l_min, self.m = r_w_min, r_l_min, momentum
        self.r_w = self.r_l = 0.0
        self.warned = False

    def update(self, r_w: float, r_l: float) -> str | None:
        self.r_w = self.m * self.r_w + (1 - self.m) * r_w
        self.r_l = self.m * self.r_l + (1 - self.m) * r_l
        if self.r_w < self.r_w_min:
            return f"reward hacking: running r_w = {self.r_w:.3g} fell below {self.r_w_min}"
        if self.r_l < self.r_l_min:
            return f"reward hacking: running r_l = {self.r_l:.3g} ran away below {self.r_l_min}"
        return None


def frozen_reference(policy: FlowPolicy) -> FlowPolicy:
    return copy.deepcopy(policy).eval().requires_grad_(False)


def check_reference(policy: FlowPolicy, reference: FlowPolicy) -> None:
    """The reference must be the same architecture as the policy (same config and tensors)."""
    a, b = asdict(policy.config), asdict(reference.config)
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    shapes = {k: tuple(v.shape) for k, v in policy.state_dict().items()}
    ref_shapes = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    if type(policy) is not type(reference) or diff or shapes != ref_shapes:
        raise ValueError(f"the reference policy's architecture differs from the policy's "
                         f"({type(reference).__name__} vs {type(policy).__name__}; config fields differing: {diff})")


# ---------------------------------------------------------------------------------------------- one round
def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of tuples; a demonstration sample is the identical pair (Case 3: ``a^l = a^w``)."""
    rows = []
    for x in samples:
        row = {k: v for k, v in x.items() if k not in ("source", "index")}
        row.setdefault(ACTION_L, x[ACTION])
        rows.append(row)
    return torch.utils.data.default_collate(rows)


def finetune_round(cfg: RPROConfig, k: int, method: Method, policy: FlowPolicy, reference: FlowPolicy | None,
                   buffers: dict[str, Any], out: Path, progress: bool = True) -> FlowPolicy:
    """Fine-tune ``policy`` for ``cfg.steps`` steps on mixed batches (paper Algorithm 2, line 9) in
    the one training loop (:func:`flowpro.training.fit`); resumable from ``out``."""
    if reference is not None:
        check_reference(policy, reference)
    sampler = MixingSampler({n: len(d) for n, d in buffers.items()}, method.ratios(k, buffers),
                            method.items_per_batch, seed=cfg.seed * 1000 + k)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + k)
    monitor = RewardHackingMonitor(cfg.hack_r_w_min, cfg.hack_r_l_min)

    def step_fn(policy: FlowPolicy, step: int, log: bool) -> StepOutput:
        batch = collate([buffers[name][i] for name, i in sampler.next_batch()])
        loss, stats, terms = method.batch_loss(policy, reference, batch, gen, log)
        return StepOutput(loss, stats, terms)

    def after_step(step: int, stats: dict[str, float]) -> Exception | None:
        alarm = monitor.update(stats["r_w"], stats["r_l"]) if "r_w" in stats else None
        if alarm and not monitor.warned:
            monitor.warned = True
            warnings.warn(f"round {k} step {step}: {alarm}", stacklevel=1)
            (out / "reward_hacking.txt").write_text(f"step {step}: {alarm}\n")
        return RewardHacking(f"round {k} step {step}: {alarm} (--stop-on-hacking)") \
            if alarm and cfg.stop_on_hacking else None

    fields = ["step", "loss", "lr", "r_w", "r_l", "margin", "accuracy", "l_theta_w", "l_theta_l", "l_ref_w",
              "l_ref_l", "contrastive", "regulariser", "sft", "grad_contrastive", "grad_regulariser", "grad_sft",
              "grad_norm", "elapsed_s"]
    return fit(cfg, out, policy, gen, step_fn, fields=fields, desc=f"{cfg.loss} round {k}", progress=progress,
               extra_state=lambda: {"sampler": sampler.state()}, on_resume=lambda s: sampler.set_state(s["sampler"]),
               after_step=after_step)


# ---------------------------------------------------------------------------------------------- the rounds
def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "mujoco", "lerobot", "numpy", "mink", "gymnasium"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def run_rounds(cfg: RPROConfig, progress: bool = True, bench: Bench | None = None) -> dict:
    """Paper Algorithm 2: ``cfg.rounds`` rounds of collect -> tuples -> fine-tune -> evaluate, on
    ``bench`` (default: the bench of ``cfg.backend``, opened and closed here)."""
    cfg.validate()
    if bench is not None and bench.backend != cfg.backend:
        raise ValueError(f"a {bench.backend!r} bench was given for a run with backend {cfg.backend!r}")
    with contextlib.ExitStack() as stack:
        if bench is None:
            bench = stack.enter_context(make_bench(cfg, progress))
        return _run_rounds(cfg, bench, progress)


def _run_rounds(cfg: RPROConfig, bench: Bench, progress: bool) -> dict:
    from flowpro.rollout import resolve_policy_dir
    from envs.summary import summarize

    out = Path(cfg.out)
    base_dir = resolve_policy_dir(cfg.base)
    base_cfg_file = base_dir.parent / "train_config.json"
    demos = cfg.demos or (json.loads(base_cfg_file.read_text())["dataset"] if base_cfg_file.exists() else None)
    if demos is None:
        raise ValueError(f"no --demos given and {base_cfg_file} does not name the SFT dataset")
    out.mkdir(parents=True, exist_ok=True)
    record = {"config": cfg.record(), "versions": package_versions(), "base_policy": str(base_dir), "demos": demos}
    config_file = out / "config.json"
    if config_file.exists() and json.loads(config_file.read_text())["config"] != record["config"]:
        raise ValueError(f"{out} holds a run with a different configuration; choose another --out")
    config_file.write_text(json.dumps(record, indent=2) + "\n")

    def load(directory: Path) -> FlowPolicy:
        policy = FlowPolicy.load(directory)
        if cfg.target_bound is not None:
            policy.config.target_bound = cfg.target_bound
        return policy

    base = load(base_dir)
    c = base.config
    method = get_method(cfg.method)(cfg)
    label = cfg.loss if cfg.method == "flowpro" else cfg.method
    use_images, env_state = bool(c.cameras), bool(c.env_state_dim)
    # Datasets are read (and tuples built) only when a round trains: a rerun of finished rounds
    # costs nothing.
    loaded: dict[Path, Any] = {}

    def preferences(root: Path) -> PreferenceDataset:
        if root not in loaded:
            loaded[root] = PreferenceDataset(root, c, use_images=use_images, env_state=env_state,
                                             max_bridge_gap=cfg.max_bridge_gap)
        return loaded[root]

    def demonstrations() -> ChunkDataset:
        if "sft" not in loaded:
            loaded["sft"] = ChunkDataset(demos, c, use_images=use_images, env_state=env_state)
        return loaded["sft"]

    policy_dir, previous, summary = base_dir, [], {"rounds": []}  # previous: earlier rounds' pair roots
    for k in range(1, cfg.rounds + 1):
        rdir = out / f"round_{k}"
        done_file = rdir / "round.json"
        if done_file.exists():
            summary["rounds"].append(json.loads(done_file.read_text()))
            policy_dir = rdir / "train" / "policy" if (rdir / "train" / "policy").exists() else policy_dir
            if (rdir / "pairs" / "meta/info.json").exists():
                previous.append(rdir / "pairs")
            continue
        t0 = time.perf_counter()
        print(f"[round {k}/{cfg.rounds}] collecting {cfg.pairs_in_round(k)} pairs with {policy_dir}", file=sys.stderr)
        shared = Path(cfg.shared_pairs) if (cfg.shared_pairs and k == 1) else None
        if shared is not None and finished_episodes(shared) >= cfg.pairs_in_round(k) and not (rdir / "pairs").exists():
            # Round 1 starts from the same base for every method: the same pairs, collected once.
            shutil.copytree(shared, rdir / "pairs")
        coll = bench.collect(cfg, policy_dir, k, rdir / "pairs")
        if shared is not None and not shared.exists() and coll["pairs"] >= cfg.pairs_in_round(k):
            tmp = shared.with_name(shared.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(rdir / "pairs", tmp)
            tmp.replace(shared)
        row: dict[str, Any] = {"round": k, "collection": coll}
        if coll["pairs"] == 0:
            if not cfg.skip_empty_rounds:
                raise ValueError(f"round {k} collected no pairs in {coll.get('rollouts', 0)} rollouts "
                                 "(pass --skip-empty-rounds to go on)")
            warnings.warn(f"round {k}: no pairs; skipping its training", stacklevel=1)
            row["skipped"] = True
        else:
            current = preferences(rdir / "pairs")
            row["tuples"] = {"total": len(current), "case1": int((current.source == "l").sum()),
                             "short_pairs": current.short_pairs}
            earlier = [preferences(root) for root in previous]
            sft_data = demonstrations()
            buffers = method.buffers(current, earlier, sft_data)
            policy = load(policy_dir) if policy_dir != base_dir else method.prepare(load(base_dir))
            reference = None
            if method.uses_reference:
                reference = frozen_reference(method.prepare(base) if cfg.reference == "sft" else policy)
            print(f"[round {k}/{cfg.rounds}] {label}: {cfg.steps} steps on {len(current)} tuples "
                  f"(+{sum(len(p) for p in earlier)} earlier, {len(sft_data)} SFT)", file=sys.stderr)
            finetune_round(cfg, k, method, policy, reference, buffers, rdir / "train", progress)
            policy_dir = rdir / "train" / "policy"
            previous.append(rdir / "pairs")
        if cfg.eval_rollouts:
            row["evaluation"] = {}
            for split in cfg.eval_splits.split(","):
                rollouts = cfg.eval_rollouts if k == cfg.rounds or cfg.round_eval_rollouts is None \
                    else cfg.round_eval_rollouts
                results = bench.evaluate(cfg.task, policy_dir, split, rollouts, rdir / f"eval_{split}.jsonl",
                                         cfg.workers, seed=cfg.eval_seed)
                row["evaluation"][split] = {**summarize(results), "rollouts": results}
                print(f"[round {k}/{cfg.rounds}] {split}: SR {row['evaluation'][split]['success_rate']:.2f}",
                      file=sys.stderr)
        row["policy"] = str(policy_dir)
        row["seconds"] = round(time.perf_counter() - t0, 1)
        done_file.write_text(json.dumps(row, indent=2) + "\n")
        summary["rounds"].append(row)
    sr = {r["round"]: {s: e["success_rate"] for s, e in r.get("evaluation", {}).items()} for r in summary["rounds"]}
    result = {"out": str(out), "method": cfg.method, "loss": cfg.loss, "success_rate_per_round": sr,
              "policy": str(policy_dir)}
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
