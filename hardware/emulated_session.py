"""What a session on the emulated X-Trainer starts from: the shipped example configuration pointed at
emulators on free ports, and a tiny policy that holds the home pose. The hardware tests, the
fault-injection soak (``scripts/soak_real_path.py``) and a first dry run of ``python -m hardware.run``
use these, so that the path they exercise is the one a user configures for the real arms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import envs  # noqa: F401  (headless rendering before mujoco loads)
from envs.geometry import ARMS
from envs.xtrainer import BenchConfig, home_qpos
from hardware.backend import tool_pose_row
from hardware.config import EXAMPLE


def emulated_config(path: str | Path, bench: Any, **overrides: Any) -> Path:
    """Write ``hardware/xtrainer.example.json`` pointed at ``bench`` (an emulated X-Trainer with
    grippers, in process or an :class:`~hardware.emulator_process.EmulatorProcess`) to ``path``:
    its controllers' ports, the leader arms' feedback on the same controllers, its grippers' ptys;
    ``overrides`` replace top-level fields (``task``, ``time_limit_s``, ...)."""
    raw = json.loads(EXAMPLE.read_text())
    for arm, e in bench.arms.items():
        ports = e.ports
        raw["arms"][arm].update(dashboard_port=ports["dashboard"], motion_port=ports["motion"],
                                feedback_port=ports["feedback"], timeout_s=1.0)
        raw["leader"]["arms"][arm]["feedback_port"] = ports["feedback"]
        raw["grippers"][arm]["port"] = bench.grippers[arm].path
    raw.update(overrides)
    path = Path(path)
    path.write_text(json.dumps(raw))
    return path


def save_still_policy(out: str | Path, **config: Any) -> Path:
    """A tiny policy that holds the X-Trainer's home pose (action mean = home pose, tiny std),
    saved to ``out``; ``config`` overrides :class:`~flowpro.policies.BuiltinConfig` fields."""
    import torch

    from flowpro.policies import BuiltinConfig, BuiltinVLA

    home = tool_pose_row(BenchConfig(), {a: home_qpos(a) for a in ARMS}, dict.fromkeys(ARMS, 1.0))
    cfg = BuiltinConfig(**{"d_model": 32, "n_layers": 1, "n_heads": 2, "chunk_size": 4, "n_action_steps": 2,
                           "num_inference_steps": 2, **config})
    policy = BuiltinVLA(cfg)
    policy.action_norm.set_stats(torch.tensor(home), torch.zeros(20))
    policy.save(out)
    return Path(out)
