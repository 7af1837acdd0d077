"""Pytest plugin: the garbage collector's pauses over a test run, and the test each fell in.

    PYTHONPATH=benchmarks/perf python -m pytest -q -p gc_pauses   # -> results/perf/gc_pauses.json

Why it exists: the hardware tests run the controller emulator in the pytest process under a 100 ms
feedback limit, and CI saw ~400 ms stalls of the whole process. This records every collection
longer than 20 ms (duration, generation, objects collected, test), so the stall's cause can be
checked rather than guessed; ``tests/conftest.py`` freezes the heap during the hardware tests.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path

OUT = Path(os.environ.get("GC_PAUSES_OUT", "results/perf/gc_pauses.json"))
MIN_MS = 20.0
_state = {"t": 0.0, "test": "(collection or teardown)"}
_pauses: list[dict] = []


def _callback(phase: str, info: dict) -> None:
    if phase == "start":
        _state["t"] = time.perf_counter()
        return
    ms = (time.perf_counter() - _state["t"]) * 1000
    if ms >= MIN_MS:
        _pauses.append({"ms": round(ms, 1), "generation": info["generation"], "collected": info["collected"],
                        "test": _state["test"]})


gc.callbacks.append(_callback)


def pytest_runtest_setup(item) -> None:
    _state["test"] = item.nodeid


def pytest_sessionfinish(session) -> None:
    pauses = sorted(_pauses, key=lambda p: -p["ms"])
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({
        "command": "PYTHONPATH=benchmarks/perf python -m pytest -q -p gc_pauses",
        "threshold_ms": MIN_MS,
        "tracked_objects_at_end": len(gc.get_objects()),
        "pauses": pauses,
        "in_hardware_tests": [p for p in pauses if "test_hardware" in p["test"]],
    }, indent=1))
