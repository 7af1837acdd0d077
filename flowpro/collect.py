"""Intervention-and-rollback data collection (paper §3.3 and Algorithm 2; docs/method.md §Pipeline).

    python -m flowpro.collect --task usb --policy runs/usb/sft_xxx --pairs 30 --round 1 --root data/usb/pairs_r1

Rolls out the policy under an operator (the simulated :class:`~flowpro.operator.OracleOperator`
here; a human on the real robot). At an intervention the backend is rolled back ``k_back`` steps
(``restore``: exact in simulation), the operator demonstrates the correction from that state, and
the pair is written:

- one LeRobotDataset episode per pair: the frames of ``tau^l`` (the policy's executed segment
  ``s_{t-k_back} .. s_t``, ``role = "l"``) followed by those of ``tau^w`` (the correction from the
  same state, ``role = "w"``, ``intervention = True``); columns ``pair_id``, ``round``,
  ``rollback_index`` (the rollout step ``t - k_back + 1`` the robot returned to), ``failure``.
- a pair whose correction does not reach its hand-back point is discarded (and counted).

Resumable: each pair is written and finalized on its own; rerunning the command continues with
the rollout after the last written pair's seed. Pictures of the first pairs (the rollback moment
and the Smooth-Interpolation bridges) go to ``<root>/pictures``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

import envs  # noqa: F401  (headless rendering before mujoco loads)
from envs.dataset import (BASE_COLUMNS, EpisodeWriter, dataset_features, finished_episodes, make_frame,
                          run_recording_command)
from envs.rollout import StepRecord, worker_pool
from envs.tasks import TaskSpec, check_split, get_task, spec_text, task_help, task_name
from flowpro.operator import Intervention, Operator, OracleOperator

PAIR_COLUMNS: dict[str, tuple[str, Any]] = {
    **BASE_COLUMNS,
    "pair_id": ("int64", 0),
    "round": ("int64", 0),
    "rollback_index": ("int64", 0),
    "failure": ("string", ""),
}
PICTURE_CAMERA, PICTURE_SIZE = "top", (240, 320)


@dataclass
class Pair:
    seed: int
    intervention: Intervention
    loser: list[StepRecord]  # tau^l
    winner: list[StepRecord]  # tau^w
    corrected: bool  # the correction reached its hand-back point
    pictures: dict[str, np.ndarray] = field(default_factory=dict)  # "rollback" (t - k_back) and "intervention" (t)


@dataclass
class RolloutProgress:
    """What :func:`intervention_rollout` has recorded so far, kept up to date while it runs, so a
    caller whose rollout is interrupted (a fault on the real robot, issue 8) can still save the
    finished pairs and the frames of the record in progress. One per rollout."""

    pairs: list[Pair] = field(default_factory=list)  # finished pairs (corrected or not), in order
    history: list[StepRecord] = field(default_factory=list)  # the rollout's timeline (rollbacks cut it)
    pending: Pair | None = None  # the pair being corrected: its tau^l and the correction so far
    since: int = 0  # history[since:]: policy steps after the last finished pair (none is pending)

    def unfinished(self) -> tuple[Intervention | None, list[StepRecord], list[StepRecord]]:
        """``(intervention, tau^l, tau^w so far)`` of the record in progress: the pending pair, else
        the policy steps since the last pair (no intervention, no correction)."""
        if self.pending is not None:
            return self.pending.intervention, list(self.pending.loser), list(self.pending.winner)
        return None, self.history[self.since:], []


def intervention_rollout(backend: Any, policy: Any, operator: Operator, *, seed: int, split: str = "id",
                         n_action_steps: int = 15, max_interventions: int = 3, correction_limit_s: float = 30.0,
                         pictures: bool = False, progress: RolloutProgress | None = None
                         ) -> tuple[list[Pair], dict[str, Any]]:
    """One supervised rollout; returns its pairs and a summary.

    The policy runs chunked (re-plan every ``n_action_steps``); after every step the operator may
    intervene. Rolling back truncates the timeline, so a later intervention (after a hand-back)
    can never rewind past the correction. ``progress`` (a fresh :class:`RolloutProgress`) is kept
    up to date as the rollout runs, for a caller that must save what an interruption left.
    """
    progress = RolloutProgress() if progress is None else progress
    if progress.history or progress.pairs or progress.pending is not None:
        raise ValueError("pass a fresh RolloutProgress to each intervention_rollout")
    obs, info = backend.reset(seed=seed, options={"split": split})
    policy.reset()
    operator.reset(backend, seed)
    history, pairs = progress.history, progress.pairs
    snapshots: list[Any] = []  # snapshots[i]: the state before history[i]
    queue: list[np.ndarray] = []
    outcome = "time_limit"
    while backend.time_s < backend.time_limit_s - 1e-9:
        if not queue:
            queue = list(np.asarray(policy.predict_chunk(obs, backend.task_description))[:n_action_steps])
        snapshots.append(backend.snapshot())
        action = queue.pop(0)
        prev, (obs, info) = obs, backend.act(action)
        history.append(StepRecord(prev, np.asarray(action), info))
        if info["is_success"]:
            outcome = "success"
            break
        iv = operator.watch(backend, history) if len(pairs) < max_interventions else None
        if iv is None:
            if info["terminal_failure"]:
                outcome = f"failure:{info['terminal_failure']}"
                break
            continue
        # Intervention-and-rollback: tau^l is what the policy did since the rollback state.
        loser = history[iv.rollback_index: iv.step + 1]
        shots = {"intervention": backend.render_camera(PICTURE_CAMERA, PICTURE_SIZE)} if pictures else {}
        obs = backend.restore(snapshots[iv.rollback_index])
        if pictures:
            shots["rollback"] = backend.render_camera(PICTURE_CAMERA, PICTURE_SIZE)
        del history[iv.rollback_index:], snapshots[iv.rollback_index:]
        winner: list[StepRecord] = []
        progress.pending = Pair(seed, iv, loser, winner, False, shots)  # winner grows in place
        operator.begin_correction(backend, iv)
        c_info: dict[str, Any] | None = None
        deadline = backend.time_s + correction_limit_s
        corrected = False
        while backend.time_s < deadline:
            action = operator.correction_action(backend, c_info)
            if action is None:
                corrected = True
                break
            snapshots.append(backend.snapshot())
            prev, (obs, c_info) = obs, backend.act(action)
            winner.append(StepRecord(prev, np.asarray(action), c_info))
            history.append(winner[-1])
            if c_info["terminal_failure"]:
                break
        pairs.append(Pair(seed, iv, loser, winner, corrected, shots))
        progress.pending, progress.since = None, len(history)
        if not corrected or (c_info is not None and c_info["is_success"]):
            outcome = "corrected" if corrected else "correction_failed"
            break
        queue = []  # hand back: the policy re-plans from where the correction left the robot
        policy.reset()
    summary = {"seed": seed, "outcome": outcome, "interventions": len(pairs),
               "reasons": [p.intervention.reason for p in pairs], "k_back": [p.intervention.k_back for p in pairs],
               "corrected": [p.corrected for p in pairs], "time_s": round(backend.time_s, 3)}
    return pairs, summary


def pair_frames(pair: Pair, task_text: str, round_k: int, pair_id: int) -> list[dict[str, Any]]:
    """The dataset frames of one pair: ``tau^l`` then ``tau^w``."""
    common = {"episode_seed": pair.seed, "pair_id": pair_id, "round": round_k,
              "rollback_index": pair.intervention.rollback_index, "failure": pair.intervention.reason}
    frames = []
    for role, steps in (("l", pair.loser), ("w", pair.winner)):
        cols = {**common, "role": role, "intervention": role == "w"}
        frames += [make_frame(s.obs, s.action, s.obs["environment_state"], task_text, cols) for s in steps]
    return frames


# A session ends after this many rollouts per pair asked for: a policy that no longer fails gives
# no pairs, and its round would otherwise never end (simulated and real collection alike).
ROLLOUTS_PER_PAIR = 20


def pair_writer(root: str | Path, task: str, round_k: int, image_size: tuple[int, int] | None, env_dim: int,
                fps: int, split: str, model_fingerprint: str | None = None) -> EpisodeWriter:
    """The :class:`~envs.dataset.EpisodeWriter` of one round's pairs, named after the task; it refuses
    a directory holding another dataset (another task, round, split, bench model or image size)."""
    layout = {"kind": "preference_pairs", "round": round_k, "split": split,
              **({"model_fingerprint": model_fingerprint} if model_fingerprint else {}),
              "obs_mode": "rgb" if image_size else "state", "image_size": list(image_size) if image_size else None}
    return EpisodeWriter(root, f"flowpro/{task_name(task)}_pairs_round{round_k}", task=task, fps=fps,
                         features=dataset_features(image_size, env_dim, PAIR_COLUMNS), layout=layout)


def check_pair_request(pairs: int, round_k: int) -> None:
    """Refuse a request for no pairs or round 0, before anything is loaded or written."""
    if pairs < 1 or round_k < 1:
        raise ValueError(f"need pairs >= 1 and round >= 1, got pairs={pairs}, round={round_k}")


class PairRecorder:
    """One round's pairs on disk as a session adds them, for the simulated and the real collection:
    where a rerun resumes (the rollout after the last written pair's seed), which pairs are kept
    (corrected ones, up to ``pairs``), their pictures, and when the session ends."""

    def __init__(self, writer: EpisodeWriter, pairs: int, round_k: int, seed: int | None = None,
                 max_rollouts: int | None = None):
        check_pair_request(pairs, round_k)
        self.writer, self.pairs, self.round_k = writer, pairs, round_k
        self.done = writer.num_episodes
        self.base_seed = 10_000 * round_k if seed is None else seed
        self.next_seed = self.base_seed if self.done == 0 else int(writer.last_value("episode_seed")) + 1
        self.max_rollouts = ROLLOUTS_PER_PAIR * pairs if max_rollouts is None else max_rollouts
        self.stats: Counter = Counter()  # rollouts, new_pairs, discarded_* and what the session adds

    @property
    def full(self) -> bool:
        return self.done >= self.pairs

    def session_open(self) -> bool:
        """Pairs are still missing and the session's rollouts are not used up."""
        return not self.full and self.stats["rollouts"] < self.max_rollouts

    def write(self, pair: Pair, task_text: str) -> bool:
        """Write ``pair`` as the next episode if it is corrected and pairs are missing; its pictures
        (if it has any) go to ``<root>/pictures``. Returns whether it was written."""
        if not pair.corrected:
            self.stats["discarded_uncorrected"] += 1
            return False
        if self.full:
            return False
        self.writer.write_episode(pair_frames(pair, task_text, self.round_k, self.done))
        if pair.pictures:
            save_rollback_sheet(pair, self.writer.root / "pictures" / f"pair_{self.done:06d}_rollback.png")
        self.done += 1
        self.stats["new_pairs"] += 1
        return True


# ---------------------------------------------------------------------------------------------- workers
_WORKER: dict[str, Any] = {}


def _collect_seed(task: str, split: str, policy_dir: str, operator_kwargs: dict, n_action_steps: int | None,
                  pictures_for: int, seed: int) -> dict:
    """One supervised rollout in a worker process; pairs come back as plain data."""
    from flowpro.rollout import PolicyRunner, worker_env_policy

    env, policy = worker_env_policy(_WORKER, task, split, policy_dir, privileged_obs=True)
    if _WORKER.get("operator_kwargs") != operator_kwargs:
        _WORKER["operator"], _WORKER["operator_kwargs"] = OracleOperator(env.task, **operator_kwargs), operator_kwargs
    pairs, summary = intervention_rollout(env, PolicyRunner(policy, seed), _WORKER["operator"], seed=seed, split=split,
                                          n_action_steps=n_action_steps or policy.config.n_action_steps,
                                          pictures=seed < pictures_for)
    return {"summary": summary, "task_text": env.task_description, "pairs": pairs}


def collect(task: str | TaskSpec, policy_dir: str | Path, pairs: int, round_k: int, root: str | Path, *,
            split: str = "id", seed: int | None = None, workers: int | None = None, n_action_steps: int | None = None,
            operator_kwargs: dict | None = None, progress: bool = True, pictures: int = 2,
            max_rollouts: int | None = None) -> dict:
    """Collect until ``root`` holds ``pairs`` corrected pairs, or ``max_rollouts`` rollouts of
    this session (default ``ROLLOUTS_PER_PAIR * pairs``) have run (a policy that no longer fails gives no pairs);
    returns a summary of this session. ``task``: a name or a variant (``"usb:clearance_m=0.001"``),
    which the workers receive as its text and the dataset's marker records; the dataset is named
    after the task (``flowpro/usb_pairs_round1``)."""
    from flowpro.rollout import resolve_policy_dir
    from flowpro.policies import FlowPolicy

    task = spec_text(task)
    check_split(split)
    check_pair_request(pairs, round_k)
    policy_dir = str(resolve_policy_dir(policy_dir))
    config = FlowPolicy.load(policy_dir).config
    image_size = tuple(config.image_size) if config.cameras else None
    operator_kwargs = dict(operator_kwargs or {})
    OracleOperator(get_task(task), **operator_kwargs)  # validate the settings before any rollout
    env_dim, fps, model = _env_spec(task)
    recorder = PairRecorder(pair_writer(root, task, round_k, image_size, env_dim, fps, split, model), pairs, round_k,
                            seed, max_rollouts)
    workers = workers or os.cpu_count() or 1
    fn = partial(_collect_seed, task, split, policy_dir, operator_kwargs, n_action_steps,
                 recorder.base_seed + pictures)
    stats, reasons = recorder.stats, Counter()
    t0 = time.perf_counter()
    bar = tqdm(total=pairs, initial=min(recorder.done, pairs), desc=f"pairs {task} round {round_k}", unit="pair",
               disable=not progress)
    try:
        with worker_pool(workers) as pool:  # one set of workers for the whole session
            while recorder.session_open():
                seeds = list(range(recorder.next_seed, recorder.next_seed + workers))
                for out in pool.map(fn, seeds):
                    s = out["summary"]
                    stats["rollouts"] += 1
                    stats["interventions"] += s["interventions"]
                    stats["policy_successes"] += s["outcome"] == "success"
                    reasons.update(s["reasons"])
                    for p in out["pairs"]:
                        if recorder.write(p, out["task_text"]):
                            bar.update(1)
                        elif recorder.full and p.corrected:
                            break
                    recorder.next_seed = s["seed"] + 1
                    if recorder.full:
                        break
                bar.set_postfix(rollouts=stats["rollouts"],
                                per_rollout=f"{stats['interventions'] / max(1, stats['rollouts']):.2f}",
                                kinds=",".join(f"{k}:{v}" for k, v in reasons.most_common(3)))
    finally:
        bar.close()
    if finished_episodes(root) and not (Path(root) / "pictures" / "pair_000000_bridges.png").exists():
        save_bridge_plot(root, 0, Path(root) / "pictures" / "pair_000000_bridges.png", config.chunk_size)
    elapsed = time.perf_counter() - t0
    new_pairs = stats.pop("new_pairs", 0)
    return {"root": str(root), "task": task, "round": round_k, "pairs": recorder.done, "new_pairs": new_pairs,
            **dict(stats), "failure_kinds": dict(reasons), "seconds": round(elapsed, 1),
            "pairs_per_min": round(60 * new_pairs / elapsed, 2) if new_pairs else 0.0}


def _env_spec(task: str) -> tuple[int, int, str]:
    """Privileged-state width, control rate and model fingerprint of the task's environment."""
    from envs.env import XTrainerEnv

    env = XTrainerEnv(task=task, obs_mode="state", privileged_obs=True)
    try:
        return env.observation_space["environment_state"].shape[0], int(round(env.cfg.control_hz)), env.fingerprint
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------- pictures
def save_rollback_sheet(pair: Pair, path: Path) -> None:
    """Contact sheet of the rollback moment: the scene at ``t - k_back`` (restored) and at ``t``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iv = pair.intervention
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
    for ax, key, title in ((axes[0], "rollback", f"rollback state (step {iv.rollback_index})"),
                           (axes[1], "intervention", f"intervention (step {iv.step}): {iv.reason}")):
        ax.imshow(pair.pictures[key])
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"seed {pair.seed}: k_back = {iv.k_back} steps, stage {iv.stage}", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def save_bridge_plot(root: str | Path, pair_id: int, path: Path, h: int, n_bridges: int = 6) -> None:
    """3D end-effector paths of one pair per arm: ``tau^w``, ``tau^l`` and Smooth-Interpolation
    bridges (``a^w`` of Case-1 tuples) from several states on ``tau^l``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowpro.tuples import build_pair_tuples, load_pairs

    pair = load_pairs(root)[pair_id]
    tup = build_pair_tuples(pair.states_l, pair.actions_l, pair.states_w, pair.actions_w, h)
    case1 = np.flatnonzero(tup.source == "l")
    picks = case1[np.linspace(0, len(case1) - 1, min(n_bridges, len(case1))).astype(int)] if len(case1) else []
    fig = plt.figure(figsize=(10, 4.5))
    for k, (arm, col) in enumerate((("left", 0), ("right", 10))):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        ax.plot(*pair.states_w[:, col:col + 3].T, color="tab:green", label="tau^w (correction)")
        ax.plot(*pair.states_l[:, col:col + 3].T, color="tab:red", label="tau^l (policy)")
        for n, i in enumerate(picks):
            ax.plot(*tup.a_w[i, :, col:col + 3].T, color="tab:blue", lw=0.8, label="bridges a^w" if n == 0 else None)
            ax.scatter(*pair.states_l[tup.frame[i], col:col + 3], color="tab:blue", s=8)
        ax.set_title(f"{arm} arm", fontsize=9)
        ax.set_xlabel("x [m]", fontsize=7)
        ax.set_ylabel("y [m]", fontsize=7)
        ax.set_zlabel("z [m]", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"pair {pair_id}: {len(case1)} Case-1 tuples (bridges from states on tau^l)", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", required=True, help=task_help() + " (variants: --backend sim only)")
    ap.add_argument("--policy", required=True, help="run directory or policy directory")
    ap.add_argument("--pairs", type=int, required=True)
    ap.add_argument("--round", type=int, required=True, dest="round_k")
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="id")
    ap.add_argument("--seed", type=int, default=None, help="first rollout seed (default 10000 * round)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--n-action-steps", type=int, default=None)
    ap.add_argument("--handback", default="completion", choices=("completion", "stage"))
    ap.add_argument("--margin", type=int, nargs=2, default=(15, 45), metavar=("MIN", "MAX"),
                    help="random extra rollback before the estimated error onset, in steps")
    ap.add_argument("--max-back", type=int, default=90, help="longest rollback, in steps")
    ap.add_argument("--stall", type=float, default=8.0, help="seconds without stage progress that count as a failure")
    ap.add_argument("--persist", type=float, default=1.0,
                    help="seconds a non-terminal failure predicate must hold before the oracle intervenes")
    ap.add_argument("--backend", default="sim", choices=("sim", "real"),
                    help="real: a human operator on the X-Trainer (hardware.run.collect_real)")
    ap.add_argument("--robot-config", default=None, help="--backend real: the X-Trainer configuration file")
    args = ap.parse_args(argv)
    if args.backend == "real":
        if not args.robot_config:
            print("error: --backend real needs --robot-config FILE: the arms' addresses and firmware, the grippers' "
                  "serial ports and calibration, the cameras and the leader arms (see hardware/xtrainer.example.json)",
                  file=sys.stderr)
            return 2
        from flowpro.benches import bench_class

        return bench_class(args.backend).collect_command(args)  # hardware.bench.RealBench
    kwargs = {"handback": args.handback, "margin_steps": tuple(args.margin), "max_back": args.max_back,
              "stall_s": args.stall, "persist_s": args.persist}
    return run_recording_command(
        lambda: collect(args.task, args.policy, args.pairs, args.round_k, args.root, split=args.split, seed=args.seed,
                        workers=args.workers, n_action_steps=args.n_action_steps, operator_kwargs=kwargs),
        args.root, "pairs")


if __name__ == "__main__":
    sys.exit(main())
