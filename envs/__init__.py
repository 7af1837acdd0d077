"""Simulated Dobot X-Trainer: MuJoCo bench, tasks, scripted experts, gymnasium envs.

Importing ``envs`` registers ``FlowPRO/<Task>-v0`` for every task in the registry.
"""

from __future__ import annotations

import os

# Headless rendering by default (docs/platform.md §Rendering); must be set before mujoco is first imported.
os.environ.setdefault("MUJOCO_GL", "egl")
# Mesa's llvmpipe: rasterising small images in the calling thread is ~20 % faster than its
# worker threads (measured at 3 x 96x96), and leaves the other core to a parallel rollout.
os.environ.setdefault("LP_NUM_THREADS", "0")

import gymnasium as gym  # noqa: E402

from envs.tasks import TASKS  # noqa: E402

for _cls in TASKS.values():
    _id = f"FlowPRO/{_cls.title}-v0"
    if _id not in gym.registry:
        gym.register(id=_id, entry_point="envs.env:XTrainerEnv", kwargs={"task": _cls.name})
