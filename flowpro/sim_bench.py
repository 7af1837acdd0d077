"""The simulated bench (backend ``"sim"``): the scripted oracle collects, evaluation rollouts run
in parallel processes. It implements :class:`flowpro.benches.Bench`, as the real X-Trainer's
:class:`hardware.bench.RealBench` does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from flowpro.benches import register_bench
from flowpro.collect import collect
from flowpro.rollout import EVAL_SEED, evaluate

if TYPE_CHECKING:
    from flowpro.finetune import RPROConfig


@register_bench("sim")
class SimulatedBench:
    """The simulator: the oracle collects, evaluation rollouts run in parallel."""

    robot_config = None

    def __init__(self, progress: bool = True, *, robot_config: None = None, **_: Any):
        self.progress = progress

    @classmethod
    def check(cls, cfg: RPROConfig) -> None:
        if cfg.robot_config is not None:
            raise ValueError("robot_config is for backend 'real' (pass --backend real to run on the X-Trainer)")

    def collect(self, cfg: RPROConfig, policy_dir: str | Path, round_k: int, root: Path) -> dict:
        return collect(cfg.task, policy_dir, cfg.pairs_in_round(round_k), round_k, root,
                       seed=cfg.collection_seed(round_k), workers=cfg.workers,
                       operator_kwargs={"handback": cfg.handback, "stall_s": cfg.stall_s}, progress=self.progress)

    def evaluate(self, task: str, policy_dir: str | Path, split: str, rollouts: int, record: Path,
                 workers: int | None = None, seed: int | None = None) -> list[dict]:
        """``rollouts`` rollouts on seeds ``seed, seed + 1, ...`` (default ``EVAL_SEED``, the test scenes;
        ``record`` is for real sessions)."""
        first = EVAL_SEED if seed is None else seed
        return evaluate(task, policy_dir, list(range(first, first + rollouts)), split, workers)

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
