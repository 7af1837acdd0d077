"""Tasks by name: the registries of ``envs.tasks.base``, filled by importing every task module."""

from __future__ import annotations

from envs.tasks import reach, usb, usb_expert  # noqa: F401  (each registers its task or expert)
from envs.tasks.base import (EXPERTS, SPLITS, TASKS, Expert, Task, TaskSpec, check_split, get_task, register_expert,
                              register_task, spec_text, task_help, task_name, task_options)

__all__ = ["EXPERTS", "SPLITS", "TASKS", "Expert", "Task", "TaskSpec", "check_split", "get_task", "register_expert",
           "register_task", "spec_text", "task_help", "task_name", "task_options"]
