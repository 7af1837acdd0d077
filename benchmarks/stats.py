"""Statistics for comparing success rates (SPEC §7).

The benchmark reports binary rollout outcomes (success / failure) per cell
(task × base policy × method × split), and compares methods as follows:

* **Wilson score interval** on each cell's success rate, with the rollouts of all
  seeds pooled into one count (:func:`wilson_interval`).
* **Cochran–Mantel–Haenszel test** across strata (task × base policy): one 2×2 table
  per stratum, rows = (method, comparator), columns = (success, failure). The score
  statistic is computed *without* continuity correction; the signed z gives the
  one-sided p that the method is better. The Mantel–Haenszel pooled odds ratio is
  reported with the Robins–Breslow–Greenland 95 % interval (:func:`cmh_test`).
* **Sign test** per stratum against the strongest comparator: a one-sided binomial
  test on strict wins over seeds, ties reported but not used (:func:`sign_test`).
* **Bonferroni** correction across the families of comparisons
  (:func:`bonferroni`, :func:`bonferroni_adjust`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from numbers import Integral, Real

from scipy import stats

__all__ = [
    "CMHResult",
    "SignTestResult",
    "bonferroni",
    "bonferroni_adjust",
    "cmh_test",
    "sign_test",
    "wilson_interval",
]


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


def _check_alpha(alpha: float) -> None:
    if not isinstance(alpha, Real) or not 0.0 < float(alpha) < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")


# --------------------------------------------------------------------------- Wilson


def wilson_interval(successes: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Two-sided ``1 - alpha`` Wilson score interval for ``successes`` out of ``n``."""
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


# --------------------------------------------------------------------------- CMH


@dataclass(frozen=True)
class CMHResult:
    """Cochran–Mantel–Haenszel test of method vs comparator across strata.

    ``statistic`` is chi-square with 1 df (no continuity correction) and equals ``z**2``;
    ``z > 0`` means the method succeeds more often than expected under the null.
    ``odds_ratio`` is the Mantel–Haenszel pooled OR (method vs comparator odds of
    success); ``ci95`` its Robins–Breslow–Greenland 95 % interval.
    """

    statistic: float
    z: float
    p_one_sided: float
    p_two_sided: float
    odds_ratio: float
    ci95: tuple[float, float]


def _validate_tables(tables: Iterable[Sequence[Sequence[int]]]) -> list[tuple[int, int, int, int]]:
    cells: list[tuple[int, int, int, int]] = []
    for k, table in enumerate(tables):
        try:
            rows = [list(row) for row in table]
        except TypeError:
            raise ValueError(f"stratum {k}: table must be 2x2 [[a, b], [c, d]], got {table!r}") from None
        if len(rows) != 2 or any(len(row) != 2 for row in rows):
            raise ValueError(f"stratum {k}: table must be 2x2 [[a, b], [c, d]], got {table!r}")
        flat = rows[0] + rows[1]
        if not all(_is_int(x) and x >= 0 for x in flat):
            raise ValueError(f"stratum {k}: cells must be non-negative integers, got {table!r}")
        a, b, c, d = (int(x) for x in flat)
        cells.append((a, b, c, d))
    if not cells:
        raise ValueError("cmh_test needs at least one 2x2 table")
    return cells


def cmh_test(tables: Iterable[Sequence[Sequence[int]]]) -> CMHResult:
    """CMH score test, signed z, MH pooled odds ratio and RBG 95 % CI over 2×2 tables.

    Each table is ``[[a, b], [c, d]]``: row 0 the method, row 1 the comparator,
    column 0 successes, column 1 failures.

    Degenerate cases (documented behaviour, never an exception):

    * strata with ``n_k <= 1`` carry no information and are skipped entirely;
    * if the summed null variance is 0 (a margin is empty in every stratum, e.g. all
      rollouts succeed), there is no evidence either way: ``statistic = z = 0``,
      ``p_one_sided = 0.5``, ``p_two_sided = 1``;
    * zero cells need no correction for the score test. For the odds ratio,
      with ``R = Σ a d / n`` and ``S = Σ b c / n``: ``S = 0 < R`` gives ``odds_ratio = inf``
      and ``ci95 = (nan, inf)`` (the RBG lower bound is undefined); ``R = 0 < S`` gives
      ``odds_ratio = 0`` and ``ci95 = (0, nan)``; ``R = S = 0`` gives nan and ``(nan, nan)``.
    """
    cells = _validate_tables(tables)

    dev = var = 0.0  # Σ (a - E[a]) and Σ Var[a]
    r_sum = s_sum = 0.0  # Σ a d / n and Σ b c / n
    pr = ps_qr = qs = 0.0  # RBG sums: Σ P R, Σ (P S + Q R), Σ Q S
    for a, b, c, d in cells:
        n = a + b + c + d
        if n <= 1:
            continue
        dev += a - (a + b) * (a + c) / n
        var += (a + b) * (c + d) * (a + c) * (b + d) / (n * n * (n - 1))
        p_k, q_k = (a + d) / n, (b + c) / n
        r_k, s_k = a * d / n, b * c / n
        r_sum += r_k
        s_sum += s_k
        pr += p_k * r_k
        ps_qr += p_k * s_k + q_k * r_k
        qs += q_k * s_k

    if var > 0:
        z = dev / math.sqrt(var)
        statistic = z * z
        p_one = float(stats.norm.sf(z))
        p_two = float(stats.chi2.sf(statistic, 1))
    else:
        z = statistic = 0.0
        p_one, p_two = 0.5, 1.0

    if r_sum > 0 and s_sum > 0:
        odds_ratio = r_sum / s_sum
        se = math.sqrt(pr / (2 * r_sum**2) + ps_qr / (2 * r_sum * s_sum) + qs / (2 * s_sum**2))
        zc = float(stats.norm.isf(0.025))
        log_or = math.log(odds_ratio)
        ci95 = (math.exp(log_or - zc * se), math.exp(log_or + zc * se))
    elif r_sum > 0:
        odds_ratio, ci95 = math.inf, (math.nan, math.inf)
    elif s_sum > 0:
        odds_ratio, ci95 = 0.0, (0.0, math.nan)
    else:
        odds_ratio, ci95 = math.nan, (math.nan, math.nan)

    return CMHResult(
        statistic=float(statistic),
        z=float(z),
        p_one_sided=p_one,
        p_two_sided=p_two,
        odds_ratio=float(odds_ratio),
        ci95=ci95,
    )


# --------------------------------------------------------------------------- sign test


@dataclass(frozen=True)
class SignTestResult:
    """One-sided sign test: ``p_one_sided`` that the method wins more often than it loses."""

    wins: int
    losses: int
    ties: int
    p_one_sided: float


def sign_test(wins: int, losses: int, ties: int = 0) -> SignTestResult:
    """Binomial test of ``wins`` out of ``wins + losses`` against 1/2, alternative "greater".

    Ties are reported but do not enter the test; with no strict wins or losses, p = 1.
    """
    for name, value in (("wins", wins), ("losses", losses), ("ties", ties)):
        if not _is_int(value) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    trials = wins + losses
    p = 1.0 if trials == 0 else float(stats.binomtest(wins, trials, 0.5, alternative="greater").pvalue)
    return SignTestResult(wins=int(wins), losses=int(losses), ties=int(ties), p_one_sided=p)


# --------------------------------------------------------------------------- Bonferroni


def bonferroni(alpha: float, comparisons: int) -> float:
    """Per-comparison significance level: ``alpha / comparisons``."""
    _check_alpha(alpha)
    if not _is_int(comparisons) or comparisons < 1:
        raise ValueError(f"comparisons must be an integer >= 1, got {comparisons!r}")
    return alpha / comparisons


def bonferroni_adjust(pvalues: Iterable[float]) -> list[float]:
    """Bonferroni-adjusted p-values: ``min(1, p * m)`` with ``m`` the number of p-values."""
    ps = [float(p) for p in pvalues]
    for i, p in enumerate(ps):
        if not 0.0 <= p <= 1.0:  # also rejects nan
            raise ValueError(f"p-value {i} must be in [0, 1], got {p!r}")
    m = len(ps)
    return [min(1.0, p * m) for p in ps]
