"""Run the hardware tests N times while M busy processes pin the cores; report failures per test.

The real-robot path has real-time limits (100 ms feedback age, 50 ms servo replies). The tests
must hold when the machine is loaded, as CI's 2-core machine is: this is the check that they do.
Each busy process is a Python busy loop at normal priority. The result (per run: passed, failed,
wall time; per test: failures) is printed and written to ``--out`` as JSON.

    python scripts/stress_hardware_tests.py --runs 5 --busy 2 --out results/reliability/stress_hardware_tests.json
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from script_output import provenance, write_result

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TESTS = sorted(str(Path(p).relative_to(REPO)) for p in glob.glob(str(REPO / "tests/hardware/test_*.py")))
BUSY_LOOP = "while True: pass"


def _outcomes(junit: Path) -> dict[str, str]:
    """``{test id: passed | failed | error | skipped}`` from a pytest JUnit XML report."""
    out = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        tags = {child.tag for child in case}
        out[name] = "failed" if "failure" in tags else "error" if "error" in tags else \
            "skipped" if "skipped" in tags else "passed"
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--busy", type=int, default=2, help="busy processes pinning the cores during the runs")
    ap.add_argument("--tests", nargs="*", default=DEFAULT_TESTS)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    record = provenance("stress_hardware_tests.py", argv)  # the tree the runs test, not the one at the end
    busy = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(args.busy)]
    runs, failures = [], collections.Counter()
    try:
        for i in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                junit = Path(tmp) / "junit.xml"
                t0 = time.monotonic()
                proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                       f"--junitxml={junit}", *args.tests], cwd=REPO, capture_output=True, text=True)
                wall = time.monotonic() - t0
                outcomes = _outcomes(junit) if junit.exists() else {}
            bad = sorted(t for t, o in outcomes.items() if o in ("failed", "error"))
            failures.update(bad)
            counts = collections.Counter(outcomes.values())
            runs.append({"run": i, "exit_code": proc.returncode, "wall_s": round(wall, 1),
                         "load_average_1min_after": round(os.getloadavg()[0], 2), **dict(counts), "failed_tests": bad})
            print(f"run {i}: exit {proc.returncode}, {dict(counts)} in {wall:.0f} s; failed: {bad}", flush=True)
            if not outcomes:
                print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    result = {**record, "cores": os.cpu_count(), "busy_processes": args.busy,
              "runs": runs, "failures_per_test": dict(failures.most_common()),
              "runs_with_a_failure": sum(1 for r in runs if r["failed_tests"] or r["exit_code"] != 0)}
    write_result(result, args.out)
    return result


if __name__ == "__main__":
    main()
