"""Performance benchmarks; outputs are committed to results/perf/."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(out: str | Path, result: dict) -> None:
    """Write a benchmark's result as indented JSON to ``out`` (creating its folder) and print it."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
