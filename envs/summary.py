"""Episode summaries: the success rate with its Wilson 95 % interval, completion times and failures.

One implementation for every layer: the expert's evaluation (:mod:`envs.expert_eval`), the
policy's (:mod:`benchmarks.evaluate`, the rounds of :mod:`flowpro.finetune`, the real bench) and
the statistics of the report (:mod:`benchmarks.stats` re-exports :func:`wilson_interval`).
"""

from __future__ import annotations

import math
from collections import Counter
from numbers import Integral, Real


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _check_alpha(alpha: float) -> None:
    if not isinstance(alpha, Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Wilson score interval for ``successes`` out of ``n``."""
    from scipy import stats

    if not _is_int(successes) or not _is_int(n):
        raise ValueError(f"successes and n must be integers, got successes={successes!r}, n={n!r}")
    if n <= 0:
        raise ValueError(f"Wilson interval needs n >= 1 trials, got n={n}")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got successes={successes}, n={n}")
    _check_alpha(alpha)

    z = float(stats.norm.isf(alpha / 2))
    p = successes / n
    z2n = z * z / n
    center = (p + z2n / 2) / (1 + z2n)
    half = z * math.sqrt(p * (1 - p) / n + z2n / (4 * n)) / (1 + z2n)
    return max(0.0, center - half), min(1.0, center + half)


def summarize(results: list[dict]) -> dict:
    """Success rate (Wilson 95 %), mean completion time of the successes, failure kinds (each once
    per episode in which it was seen), how the episodes ended and the stages they reached."""
    n = len(results)
    k = sum(r["success"] for r in results)
    rate = k / n  # no episodes: ZeroDivisionError, before the interval's ValueError
    lo, hi = wilson_interval(int(k), n)
    times = [r["completion_time_s"] for r in results if r["success"]]
    fails = Counter(kind for r in results for kind in r["failures_seen"])
    return {
        "episodes": n,
        "successes": k,
        "success_rate": rate,
        "wilson95": [round(lo, 4), round(hi, 4)],
        "mean_completion_time_s": round(sum(times) / len(times), 3) if times else None,
        "failures": dict(sorted(fails.items())),
        "terminated_by": dict(Counter(r["terminated_by"] for r in results)),
        "reached_stage": dict(Counter(s for r in results for s in r.get("stages_seen", []))),
    }
