"""The real X-Trainer as a bench of the FlowPRO rounds (:class:`flowpro.benches.Bench`, backend ``"real"``).

A human operator collects on the robot (:func:`hardware.run.collect_real`: keys to intervene and
choose the rollback, the leader arms for the correction) and marks each evaluation rollout's
success (:func:`hardware.run.evaluate_real`). The split of a real evaluation is a label: the
operator sets up in- or out-of-distribution scenes. Importing this module registers the bench
(:func:`flowpro.benches.register_bench`); :func:`flowpro.benches.open_bench` builds it.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from flowpro.benches import BenchStopped, register_bench
from hardware.errors import HardwareError

if TYPE_CHECKING:
    from flowpro.finetune import RPROConfig
    from hardware.keys import KeySource
    from hardware.teleop import JointTeleoperator


@register_bench("real")
class RealBench:
    """The real X-Trainer of a robot configuration file, driven by a human operator.

    One connection to the robot and one keyboard (with the space bar as emergency stop) serve
    every session of a run: collecting, evaluating, and the rounds and methods in between. They
    open at the first session, so a rerun of finished rounds never connects, and stay open while
    a policy fine-tunes, the arms paused at home (two stdin readers would split the operator's
    keys between them). ``keys`` and ``teleop`` replace the keyboard and the leader arms (tests,
    other front ends)."""

    def __init__(self, robot_config: str | Path, *, keys: KeySource | None = None,
                 teleop: JointTeleoperator | None = None, progress: bool = True):
        from hardware.config import load_robot_config

        self.robot_config = str(robot_config)
        self.robot = load_robot_config(robot_config)
        self.keys, self.teleop = keys, teleop
        self._stack = contextlib.ExitStack()
        self._session: tuple[Any, Any, tuple[int, int] | None] | None = None  # backend, keys, image size

    @classmethod
    def check(cls, cfg: RPROConfig) -> None:
        """A real run names a robot configuration file, and the file is valid."""
        if not cfg.robot_config:
            raise ValueError("backend 'real' needs robot_config: the X-Trainer's configuration file (the arms' "
                             "addresses, the grippers' serial ports and calibration, the cameras and the leader "
                             "arms; see hardware/xtrainer.example.json)")
        from hardware.config import load_robot_config

        load_robot_config(cfg.robot_config)  # names every missing or invalid field

    @staticmethod
    def collect_command(args: Any) -> int:
        """``python -m flowpro.collect --backend real``: one round's pairs by a human operator."""
        from envs.dataset import run_recording_command
        from hardware.config import load_robot_config
        from hardware.run import collect_real

        return run_recording_command(
            lambda: collect_real(load_robot_config(args.robot_config), args.policy, args.pairs, args.round_k,
                                 args.root, task=args.task, seed=args.seed, n_action_steps=args.n_action_steps),
            args.root, "pairs", faults=(HardwareError,))

    def collect(self, cfg: RPROConfig, policy_dir: str | Path, round_k: int, root: Path) -> dict:
        from flowpro.collect import ROLLOUTS_PER_PAIR
        from hardware.run import collect_real

        pairs = cfg.pairs_in_round(round_k)
        max_rollouts = ROLLOUTS_PER_PAIR * pairs  # as in simulation (flowpro.collect)
        with self._faults():
            out = collect_real(self.robot, policy_dir, pairs, round_k, root, task=cfg.task,
                               seed=cfg.collection_seed(round_k), teleop=self.teleop, max_rollouts=max_rollouts,
                               **self._open(cfg.task, policy_dir))
        if out["pairs"] < pairs and out.get("rollouts", 0) < max_rollouts:
            raise BenchStopped(f"the operator ended the session with {out['pairs']} of {pairs} pairs in {root}; "
                               "run the same command again to continue")
        return out

    def evaluate(self, task: str, policy_dir: str | Path, split: str, rollouts: int, record: Path,
                 workers: int | None = None, seed: int | None = None) -> list[dict]:
        """``rollouts`` rollouts (seeds ``seed, ...``, default ``EVAL_SEED``, seed the policy's noise), each
        appended to ``record`` (JSON lines) as it ends, so an interrupted evaluation continues where it stopped."""
        from flowpro.rollout import EVAL_SEED
        from hardware.run import evaluate_real

        print(f"[bench] evaluating {policy_dir}: {rollouts} rollout(s) of split {split!r}; set up "
              f"{'out-of-distribution' if split == 'ood' else 'in-distribution'} scenes", file=sys.stderr, flush=True)
        with self._faults():
            results = evaluate_real(self.robot, policy_dir, rollouts, record, task=task,
                                    seed=EVAL_SEED if seed is None else seed,
                                    **self._open(task, policy_dir))
        if len(results) < rollouts:
            raise BenchStopped(f"the operator ended the session with {len(results)} of {rollouts} rollouts in "
                               f"{record}; run the same command again to continue")
        return results[:rollouts]

    def close(self) -> None:
        self._stack.close()
        self._session = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, task: str, policy_dir: str | Path) -> dict[str, Any]:
        """``backend`` and ``keys`` for :mod:`hardware.run`'s sessions, connected on first use."""
        from flowpro.rollout import resolve_policy_dir
        from envs.tasks import get_task
        from hardware.run import bench_session

        policy = json.loads((resolve_policy_dir(policy_dir) / "config.json").read_text())
        image_size = tuple(policy["image_size"]) if self.robot.cameras else None
        if self._session is None:
            # The sessions set the task's instruction and time limit on the backend themselves.
            time_limit_s = self.robot.time_limit_s or get_task(task).time_limit_s
            backend, keys = self._stack.enter_context(bench_session(self.robot, image_size, task, time_limit_s,
                                                                    self.keys))
            self._session = backend, keys, image_size
        backend, keys, opened_size = self._session
        if image_size != opened_size:
            raise ValueError(f"{policy_dir} reads {image_size} images but the cameras were opened at "
                             f"{opened_size} for an earlier policy of this run")
        return {"backend": backend, "keys": keys}

    @contextlib.contextmanager
    def _faults(self) -> Iterator[None]:
        """A fault of the bench stops the run with what to do next (the work done is saved)."""
        from hardware.run import bench_error_message

        try:
            yield
        except HardwareError as e:
            raise BenchStopped(bench_error_message(e)) from e
