"""Task registry: name -> Task class. Importing a task module registers it."""

from __future__ import annotations

from envs.tasks.base import SPLITS, Expert, Task, check_split

TASKS: dict[str, type[Task]] = {}


def register_task(cls: type[Task]) -> type[Task]:
    TASKS[cls.name] = cls
    return cls


def get_task(name: str | Task) -> Task:
    """A fresh task instance by name (a configured instance, e.g. ``UsbTask(lead_m=0.002)``, is
    used as it is); unknown names list the valid ones."""
    if isinstance(name, Task):
        return name
    key = name.lower()
    if key not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(sorted(TASKS))}")
    return TASKS[key]()


from envs.tasks import reach, usb  # noqa: E402,F401  (registers)

__all__ = ["SPLITS", "TASKS", "Expert", "Task", "check_split", "get_task", "register_task"]
