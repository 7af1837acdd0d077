"""Sessions on the real X-Trainer: policy evaluation and human-operator collection (docs/platform.md, issue 8).

    python -m hardware.run evaluate --config robot.json --policy RUN --rollouts N [--out FILE]
    python -m hardware.run collect --config robot.json --policy RUN --pairs N --round K --root DIR

Both run the simulation's code paths unchanged on :class:`~hardware.backend.RealXTrainer` (built
from the robot configuration file, :mod:`hardware.config`):

- **evaluate**: :func:`envs.rollout.rollout` with :class:`flowpro.rollout.PolicyRunner`, one
  JSON line per rollout (``EpisodeResult.summary()``, as ``benchmarks.evaluate`` writes) appended
  to ``--out`` as soon as the rollout ends, and a ``.summary.json`` (:func:`envs.expert_eval.summarize`).
  The real bench has no success predicate: the operator presses ``s`` when the task is done (``f``
  marks a failure, ``x`` aborts the rollout). Rerunning the command continues after the rollouts
  already in ``--out``.
- **collect**: :func:`flowpro.collect.intervention_rollout` with :class:`hardware.human_operator.HumanOperator`
  (keys to intervene and choose the rollback, the leader arms for the correction); each corrected
  pair is written by :class:`flowpro.collect.PairRecorder`, as a simulated pair is, and the
  command resumes after the last written pair.
  One difference: the real bench observes no object poses, and LeRobot cannot store a 0-wide
  feature, so ``observation.environment_state`` is a 1-wide zero placeholder (:data:`REAL_ENV_STATE_DIM`).

A fault during a rollout (a bench error, a timeout, Ctrl-C) stops both arms first, then saves what
the rollout recorded, then ends the session with a clear error (:mod:`hardware.interrupted`: the
finished pairs go to ``--root``; the interrupted pair's frames to ``<root>_interrupted/``, an
interrupted evaluation rollout to ``<out stem>.interrupted.jsonl``). A fault between rollouts stops
both arms too.

Before every rollout the arms go home and stand still (paused) while the operator restores the
scene; ``c`` or Enter starts the rollout, ``q`` ends the session. The space bar is an emergency
stop at any time (stdin keys). Tests and other front ends inject the human: ``keys`` (any
:class:`hardware.keys.KeySource`) and ``teleop`` (any :class:`hardware.teleop.JointTeleoperator`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

import envs  # noqa: F401  (headless rendering before mujoco loads)
from envs.cli import EXIT_INTERRUPTED, run_command
from envs.dataset import finished_episodes
from envs.rollout import StepRecord, rollout
from envs.summary import summarize
from envs.tasks import TaskSpec, get_task
from envs.xtrainer import CAMERAS
from flowpro.collect import (Pair, PairRecorder, RolloutProgress, check_pair_request, intervention_rollout,
                             pair_writer)
from flowpro.rollout import PolicyRunner, resolve_policy_dir
from hardware.backend import RealXTrainer
from hardware.config import RobotConfig, load_robot_config, make_backend, make_leader
from hardware.errors import HardwareError, OperatorTimeout
from hardware.human_operator import HumanOperator, HumanOperatorConfig
from hardware.interrupted import (append_jsonl, interrupted_dir, interrupted_frames, interrupted_writer,
                                  record_interrupted_rollout, stop_then_flush)
from hardware.keys import KeySource, StdinKeys
from hardware.teleop import JointTeleoperator

REAL_ENV_STATE_DIM = 1  # width of the zero observation.environment_state placeholder in real pairs
REAL_SPLIT = "real"  # the "split" of real-bench datasets (their marker refuses simulated pairs)
Log = Callable[[str], None]


@dataclass(frozen=True)
class SessionKeys:
    """Keys of a real-bench session (the operator's own keys are in ``HumanOperatorConfig``)."""

    start: str = "c\n"  # the scene is restored: start the rollout
    quit: str = "q"  # at the start prompt: end the session
    success: str = "s"  # the task is done
    failure: str = "f"  # the rollout failed (evaluate)
    abort: str = "x"  # stop the rollout now (evaluate; counts as not successful)
    emergency_stop: str = " "  # stdin keys only: stops both arms at once


KEYS = SessionKeys()


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- policy
def load_policy(policy: str | Path) -> tuple[Path, Any]:
    """``(policy directory, FlowPolicy)`` of a run or policy directory."""
    from flowpro.policies import FlowPolicy

    policy_dir = resolve_policy_dir(policy)
    return policy_dir, FlowPolicy.load(policy_dir)


def check_policy(policy_config: Any, robot: RobotConfig) -> None:
    """Refuse a policy that reads what the real bench cannot observe, naming what to change."""
    where = robot.path or "the robot config"
    if policy_config.env_state_dim:
        raise ValueError(f"the policy reads privileged object poses (env_state_dim={policy_config.env_state_dim}), "
                         "which the real bench cannot observe; run a vision policy (cameras) on the X-Trainer")
    missing = [cam for cam in policy_config.cameras if cam not in robot.cameras]
    if missing:
        raise ValueError(f"the policy reads camera(s) {missing}; configure them under \"cameras\" in {where} "
                         f"(configured: {sorted(robot.cameras) or 'none'})")
    action_dim = 20 if robot.action_mode == "ee" else 14
    if policy_config.action_dim != action_dim or policy_config.state_dim != 20:
        raise ValueError(f"the policy acts in {policy_config.action_dim} dims from a {policy_config.state_dim}-dim "
                         f"state; action_mode {robot.action_mode!r} in {where} needs {action_dim} from 20")


def resolve_task(task: str | None, robot: RobotConfig, policy_dir: Path) -> str:
    """The session's task: ``task``, else the robot config's, else the policy's training run's."""
    if task is None:
        task = robot.task
    train_config = policy_dir.parent / "train_config.json"
    if task is None and train_config.exists():
        task = json.loads(train_config.read_text()).get("task")
    if task is None:
        raise ValueError(f"no task: pass --task, or set \"task\" in {robot.path or 'the robot config'}")
    spec = TaskSpec.parse(task)
    if spec.options:
        raise ValueError(f"task {task!r}: options of a task are settings of the simulated scene; the real bench runs "
                         f"the task as it stands there: pass --task {spec.name}")
    return get_task(spec).name


def _time_limit(time_limit_s: float | None, robot: RobotConfig, task: str) -> float:
    return time_limit_s or robot.time_limit_s or get_task(task).time_limit_s


# ---------------------------------------------------------------------------------------------- session
@contextmanager
def bench_session(robot: RobotConfig, image_size: tuple[int, int] | None, task: str, time_limit_s: float,
                  keys: KeySource | None = None, backend: RealXTrainer | None = None
                  ) -> Iterator[tuple[RealXTrainer, KeySource]]:
    """The connected backend (built from ``robot`` unless given) and the operator's keys (stdin with
    the space bar as emergency stop unless given); both released at the end if opened here."""
    own = backend is None
    if backend is None:
        backend = make_backend(robot, image_size, task_description=get_task(task).instruction,
                               time_limit_s=time_limit_s)
    else:
        backend.task_description, backend.time_limit_s = get_task(task).instruction, time_limit_s
    stdin = None
    if keys is None:
        b = backend
        stdin = keys = StdinKeys(immediate={KEYS.emergency_stop: lambda: b.emergency_stop("keyboard emergency stop")})
    try:
        yield backend, keys
    except BaseException as e:  # between rollouts too: never an arm left moving (issue 8)
        backend.emergency_stop(f"session ended by {type(e).__name__}: {e}")
        raise
    finally:
        if stdin is not None:
            stdin.close()
        if own:
            backend.close()


def wait_for_start(backend: RealXTrainer, keys: KeySource, what: str, *, timeout_s: float | None = None,
                   poll_s: float = 0.02, log: Log = _stderr) -> bool:
    """Drive home, stand still, and wait for the operator: True on a start key, False on quit."""
    backend.reset()
    backend.pause()
    log(f"[session] {what}: restore the scene, then press 'c' (or Enter) to start, 'q' to end the session")
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while deadline is None or time.monotonic() < deadline:
        key = keys.poll()
        if key is None:
            time.sleep(poll_s)
        elif key in KEYS.start:
            return True
        elif key == KEYS.quit:
            return False
    raise OperatorTimeout(f"the operator did not start {what} within {timeout_s} s")


class OperatorMarks:
    """The rollout hook of a real evaluation: the operator's keys mark success or failure."""

    def __init__(self, keys: KeySource, log: Log = _stderr):
        self.keys, self.log = keys, log

    def __call__(self, backend: RealXTrainer, step: StepRecord) -> str | None:
        while (key := self.keys.poll()) is not None:
            if key == KEYS.success:
                backend.mark_success()  # the next step ends the rollout as a success
                self.log(f"[session] success marked at {backend.time_s:.2f} s")
            elif key == KEYS.failure:
                backend.mark_failure("operator")
                self.log(f"[session] failure marked at {backend.time_s:.2f} s")
            elif key == KEYS.abort:
                self.log("[session] rollout aborted")
                return "stop"
        return None


# ---------------------------------------------------------------------------------------------- evaluate
def read_results(out: Path) -> list[dict]:
    """The rollouts already in a results file (none when it does not exist)."""
    if not out.exists():
        return []
    results = []
    for n, line in enumerate(out.read_text().splitlines(), 1):
        if line.strip():
            try:
                results.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{out} line {n} is not a rollout result ({e.msg}); move the file away") from None
    return results


def evaluate_real(robot: RobotConfig, policy: str | Path, rollouts: int, out: str | Path, *,
                  task: str | None = None, seed: int = 0, n_action_steps: int | None = None,
                  time_limit_s: float | None = None, keys: KeySource | None = None,
                  backend: RealXTrainer | None = None, start_timeout_s: float | None = None,
                  log: Log = _stderr) -> list[dict]:
    """Closed-loop rollouts of a saved policy on the real bench until ``out`` holds ``rollouts`` results
    (rollout ``i`` uses seed ``seed + i``); returns all results in ``out``."""

    policy_dir, flow_policy = load_policy(policy)
    check_policy(flow_policy.config, robot)
    task = resolve_task(task, robot, policy_dir)
    out = Path(out)
    results = read_results(out)
    if len(results) >= rollouts:
        log(f"[session] {out} already holds {len(results)} rollouts")
        return results
    c = flow_policy.config
    image_size = tuple(c.image_size) if c.cameras else None
    out.parent.mkdir(parents=True, exist_ok=True)
    time_limit_s = _time_limit(time_limit_s, robot, task)
    with bench_session(robot, image_size, task, time_limit_s, keys, backend) as (bench, human):
        hook = OperatorMarks(human, log)
        for i in range(len(results), rollouts):
            if not wait_for_start(bench, human, f"rollout {i + 1}/{rollouts}", timeout_s=start_timeout_s, log=log):
                break
            with stop_then_flush(bench, lambda fault: record_interrupted_rollout(out, i, seed + i, bench, fault), log):
                result = rollout(bench, PolicyRunner(flow_policy, seed + i), seed=seed + i,
                                 n_action_steps=n_action_steps or c.n_action_steps, hook=hook)
            bench.pause()
            results.append(result.summary())
            append_jsonl(out, results[-1])
            log(f"[session] rollout {i + 1}: {result.terminated_by} after {result.time_s:.1f} s")
    return results


# ---------------------------------------------------------------------------------------------- collect
def real_pair(pair: Pair) -> Pair:
    """A copy of a real-bench pair whose observations carry the zero ``environment_state`` placeholder."""

    def steps(records: list[StepRecord]) -> list[StepRecord]:
        return [StepRecord({**s.obs, "environment_state": np.zeros(REAL_ENV_STATE_DIM)}, s.action, s.info)
                for s in records]

    return Pair(pair.seed, pair.intervention, steps(pair.loser), steps(pair.winner), pair.corrected, pair.pictures)


def collect_real(robot: RobotConfig, policy: str | Path, pairs: int, round_k: int, root: str | Path, *,
                 task: str | None = None, seed: int | None = None, n_action_steps: int | None = None,
                 time_limit_s: float | None = None, keys: KeySource | None = None,
                 teleop: JointTeleoperator | None = None, operator_config: HumanOperatorConfig | None = None,
                 max_interventions: int = 3, correction_limit_s: float = 30.0, pictures: int = 2,
                 max_rollouts: int | None = None, backend: RealXTrainer | None = None,
                 start_timeout_s: float | None = None, log: Log = _stderr) -> dict:
    """Human-operator intervention-and-rollback collection until ``root`` holds ``pairs`` corrected
    pairs (resumable), the operator ends the session, or ``max_rollouts`` (default
    ``ROLLOUTS_PER_PAIR * pairs``) rollouts have run; returns a summary of this session."""

    check_pair_request(pairs, round_k)
    policy_dir, flow_policy = load_policy(policy)
    c = flow_policy.config
    check_policy(c, robot)
    task = resolve_task(task, robot, policy_dir)
    if robot.cameras and set(robot.cameras) != set(CAMERAS):
        raise ValueError(f"pairs record all three cameras or none; {robot.path or 'the robot config'} configures "
                         f"{sorted(robot.cameras)} (add the others or set \"cameras\" to null)")
    image_size = tuple(c.image_size) if robot.cameras else None
    recorder = PairRecorder(pair_writer(root, task, round_k, image_size, REAL_ENV_STATE_DIM, round(robot.control_hz),
                                        REAL_SPLIT), pairs, round_k, seed, max_rollouts)
    if recorder.full:
        return {"root": str(root), "task": task, "round": round_k, "pairs": recorder.done, "new_pairs": 0}
    frames_dir = Path(root).with_name(Path(root).name + "_rollback_frames")  # not inside the dataset
    operator_config = replace(operator_config or HumanOperatorConfig(), frames_dir=str(frames_dir))
    own_teleop = teleop is None
    teleop = teleop if teleop is not None else make_leader(robot)
    stats, t0 = recorder.stats, time.perf_counter()

    def write_pairs(found: list[Pair], task_text: str) -> int:
        """Write the corrected pairs among ``found`` (up to ``pairs`` in all); returns how many."""
        written = 0
        for p in found:
            if recorder.full:
                break
            if p.corrected and not p.loser:  # the rollback returned to the rollout's first step
                stats["discarded_empty"] += 1
            elif recorder.write(real_pair(p), task_text):
                written += 1
                log(f"[session] pair {recorder.done}/{pairs} written to {root}")
        return written

    def flush(progress: RolloutProgress, seed: int, task_text: str, fault: str) -> str:
        """After a fault (the arms already stopped): the rollout's finished pairs to ``root``, the
        frames of the pair in progress to ``<root>_interrupted``; returns where they went."""
        written = write_pairs(progress.pairs, task_text)
        iv, loser, winner = progress.unfinished()
        frames = interrupted_frames(progress, seed, task_text, round_k, fault, np.zeros(REAL_ENV_STATE_DIM))
        episode = None
        if frames:
            side = interrupted_writer(root, task, round_k, image_size, round(robot.control_hz), REAL_ENV_STATE_DIM,
                                      REAL_SPLIT)
            episode = side.num_episodes
            side.write_episode(frames)
        where = interrupted_dir(root)
        append_jsonl(where / "log.jsonl", {
            "seed": seed, "round": round_k, "fault": fault, "pairs_written": written, "pairs_in_root": recorder.done,
            "frames": len(frames), "frames_l": len(loser), "frames_w": len(winner),
            "rollback_index": iv.rollback_index if iv is not None else None,
            "episode": episode, "when": time.strftime("%Y-%m-%dT%H:%M:%S")})
        kept = (f"its {len(frames)} unpaired frames ({len(loser)} tau^l + {len(winner)} correction) are episode "
                f"{episode} of {where / 'frames'}") if frames else "it had no unpaired frames"
        return (f"rollout {seed} was interrupted: {written} finished pair(s) of it written to {root} "
                f"({recorder.done} in all); {kept}; the fault is logged in {where / 'log.jsonl'}")

    try:
        time_limit_s = _time_limit(time_limit_s, robot, task)
        with bench_session(robot, image_size, task, time_limit_s, keys, backend) as (bench, human):
            operator = HumanOperator(teleop, human, operator_config, log=log)
            while recorder.session_open():
                next_seed = recorder.next_seed
                if not wait_for_start(bench, human, f"rollout {next_seed} (pairs {recorder.done}/{pairs})",
                                      timeout_s=start_timeout_s, log=log):
                    break
                progress = RolloutProgress()
                with stop_then_flush(bench, lambda fault: flush(progress, next_seed, bench.task_description, fault),
                                     log):
                    found, summary = intervention_rollout(
                        bench, PolicyRunner(flow_policy, next_seed), operator, seed=next_seed, split=REAL_SPLIT,
                        n_action_steps=n_action_steps or c.n_action_steps, max_interventions=max_interventions,
                        correction_limit_s=correction_limit_s, pictures="top" in robot.cameras and recorder.done < pictures,
                        progress=progress)
                bench.pause()
                stats["rollouts"] += 1
                stats["interventions"] += summary["interventions"]
                stats[f"outcome_{summary['outcome']}"] += 1
                write_pairs(found, bench.task_description)
                recorder.next_seed = next_seed + 1
    finally:
        if own_teleop:
            teleop.close()
    return {"root": str(root), "task": task, "round": round_k, "pairs": finished_episodes(root),
            "rollback_frames": str(frames_dir), **dict(stats), "seconds": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------------------------------------- CLI
def bench_error_message(e: BaseException) -> str:
    """The clear error of a session a fault ended: the fault, where the interrupted record went
    (the exception's notes, :func:`hardware.interrupted.stop_then_flush`), what to do next."""
    return "\n".join([f"error on the bench: {type(e).__name__}: {e}", *getattr(e, "__notes__", []),
                      "what was finished is saved; check the bench and run the same command again to continue"])


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hardware.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    for name, help_text in (("evaluate", "closed-loop rollouts of a saved policy, success marked by the operator"),
                            ("collect", "intervention-and-rollback pairs with a human operator")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="robot configuration file (hardware/config.py)")
        p.add_argument("--policy", required=True, help="run directory or policy directory")
        p.add_argument("--task", default=None, help="default: the config's, else the policy's training run's")
        p.add_argument("--seed", type=int, default=None)
        p.add_argument("--n-action-steps", type=int, default=None, help="re-plan period (default: the policy's)")
        p.add_argument("--time-limit", type=float, default=None, help="episode length in s (default: the task's)")
    ev = sub.choices["evaluate"]
    ev.add_argument("--rollouts", type=int, required=True, help="rollouts the results file should hold")
    ev.add_argument("--out", default=None, help="JSON lines (default <run>/eval_real.jsonl); resumed if it exists")
    co = sub.choices["collect"]
    co.add_argument("--pairs", type=int, required=True)
    co.add_argument("--round", type=int, required=True, dest="round_k")
    co.add_argument("--root", required=True)
    co.add_argument("--k-back", type=int, default=30, help="default rollback in steps ('+'/'-' change it)")
    co.add_argument("--max-interventions", type=int, default=3)
    co.add_argument("--correction-limit", type=float, default=30.0, help="longest correction in s")
    return ap


def main(argv: list[str] | None = None, *, keys: KeySource | None = None,
         teleop: JointTeleoperator | None = None, log: Log = _stderr) -> int:
    """The command line; ``keys`` and ``teleop`` replace the stdin keys and the leader arms."""
    args = _parser().parse_args(argv)

    def body() -> dict:
        robot = load_robot_config(args.config)
        if args.command == "collect":
            return collect_real(robot, args.policy, args.pairs, args.round_k, args.root, task=args.task,
                                seed=args.seed, n_action_steps=args.n_action_steps, time_limit_s=args.time_limit,
                                keys=keys, teleop=teleop, operator_config=HumanOperatorConfig(k_back=args.k_back),
                                max_interventions=args.max_interventions,
                                correction_limit_s=args.correction_limit, log=log)
        out = Path(args.out) if args.out else resolve_policy_dir(args.policy).parent / "eval_real.jsonl"
        results = evaluate_real(robot, args.policy, args.rollouts, out, task=args.task, seed=args.seed or 0,
                                n_action_steps=args.n_action_steps, time_limit_s=args.time_limit, keys=keys, log=log)
        command = "python -m hardware.run " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        summary = {"command": command, "config": str(args.config), "policy": str(args.policy), "backend": "real",
                   **(summarize(results) if results else {"episodes": 0})}
        out.with_suffix(".summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary

    # A DatasetMismatch is a ValueError: bad input. On a fault or Ctrl-C the arms are stopped and
    # what was finished is saved (bench_error_message says so for a fault).
    return run_command(body, faults=(HardwareError,), fault_message=bench_error_message,
                       hint=lambda code: "what was finished is saved; run the same command again to continue"
                       if code == EXIT_INTERRUPTED else None)


if __name__ == "__main__":
    sys.exit(main())
