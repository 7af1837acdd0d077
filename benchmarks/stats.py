"""Statistics for comparing success rates (paper App. L; docs/method.md §Statistics).

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
* **Exact McNemar test** on paired outcomes: every policy runs on the same initial states
  (rollout ``i`` of a split has the same env seed for every policy), so outcomes are matched by seed
  (:func:`paired_outcomes`) and only the discordant states carry information (:func:`mcnemar_exact`);
  the paired difference in success rate gets Newcombe's hybrid score interval
  (:func:`newcombe_paired_interval`). Summing :class:`PairedCounts` over strata gives the stratified
  exact test for paired data.
* **Minimum detectable difference** at a run's sample size, for the unpaired two-proportion test
  (:func:`mdd_unpaired`) and for the paired exact McNemar test under a stated discordance model
  (:func:`mcnemar_power`, :func:`mdd_mcnemar`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Real
from typing import Literal

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.power import NormalIndPower

from envs.summary import _check_alpha, _is_int, wilson_interval

__all__ = [
    "CMHResult",
    "McNemarResult",
    "PairedCounts",
    "SignTestResult",
    "bonferroni",
    "bonferroni_adjust",
    "cmh_test",
    "mcnemar_exact",
    "mcnemar_power",
    "mdd_mcnemar",
    "mdd_unpaired",
    "newcombe_paired_interval",
    "paired_outcomes",
    "sign_test",
    "wilson_interval",
]


# --------------------------------------------------------------------------- Wilson
# One implementation for the episode summaries and the report: envs.summary.wilson_interval.


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


# --------------------------------------------------------------------------- paired outcomes: McNemar


@dataclass(frozen=True)
class PairedCounts:
    """Paired binary outcomes on the same initial states: the 2×2 table of (method, comparator).

    ``method_only`` is McNemar's b (states only the method solved), ``comparator_only`` its c.
    Counts of several strata add up (``a + b``): the McNemar test of the sum is the stratified
    exact test for paired data, since each stratum's discordant pairs are fair coins under the null.
    """

    both: int
    method_only: int
    comparator_only: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.method_only + self.comparator_only + self.neither

    def __add__(self, other: PairedCounts) -> PairedCounts:
        return PairedCounts(self.both + other.both, self.method_only + other.method_only,
                            self.comparator_only + other.comparator_only, self.neither + other.neither)


def _outcomes_by_seed(rollouts: Sequence[Mapping], name: str) -> dict[int, bool]:
    by_seed: dict[int, bool] = {}
    repeated = set()
    for i, r in enumerate(rollouts):
        if "seed" not in r or "success" not in r:
            raise ValueError(f"{name} rollout {i} needs 'seed' and 'success' keys, got {sorted(r)}")
        if not isinstance(r["success"], bool):
            raise ValueError(f"{name} rollout {i}: 'success' must be a bool, got {r['success']!r}")
        if r["seed"] in by_seed:
            repeated.add(r["seed"])
        by_seed[r["seed"]] = r["success"]
    if repeated:
        raise ValueError(f"{name} rollouts repeat seeds {sorted(repeated)}: each initial state must be run once")
    return by_seed


def paired_outcomes(method: Sequence[Mapping], comparator: Sequence[Mapping]) -> PairedCounts:
    """Match two policies' rollouts by their env ``seed`` (the initial state) and count the 2×2 table.

    Each rollout is a mapping with ``seed`` and a bool ``success``. The two seed sets must be equal and
    free of repeats, otherwise the outcomes are not paired and a ValueError says which seeds differ.
    """
    a, b = _outcomes_by_seed(method, "method"), _outcomes_by_seed(comparator, "comparator")
    if not a:
        raise ValueError("paired_outcomes needs at least one rollout per policy")
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"the two policies were not run on the same seeds: only the method has {only_a[:10]}, "
                         f"only the comparator has {only_b[:10]}")
    pairs = [(a[s], b[s]) for s in a]
    return PairedCounts(both=sum(x and y for x, y in pairs), method_only=sum(x and not y for x, y in pairs),
                        comparator_only=sum(y and not x for x, y in pairs),
                        neither=sum(not x and not y for x, y in pairs))


def _check_counts(counts: PairedCounts) -> None:
    cells = (counts.both, counts.method_only, counts.comparator_only, counts.neither)
    if not all(_is_int(x) and x >= 0 for x in cells):
        raise ValueError(f"paired counts must be non-negative integers, got {counts!r}")
    if counts.n == 0:
        raise ValueError("paired counts are empty: no initial state was run by both policies")


def newcombe_paired_interval(counts: PairedCounts, alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe's hybrid score interval (Newcombe 1998, Stat. Med. 17:2635, method 10) for the paired
    difference in success rate ``p1 - p2 = (method_only - comparator_only) / n``.

    With Wilson intervals ``(l1, u1)``, ``(l2, u2)`` of the two marginal rates and ``phi`` the
    correlation of the 2×2 table, ``A = both·neither − method_only·comparator_only`` shrunk towards 0 by
    ``n/2`` when positive (``phi = 0`` for ``0 <= A <= n/2`` or an empty margin), the interval is
    ``D − sqrt((p1−l1)² − 2 phi (p1−l1)(u2−p2) + (u2−p2)²)`` to
    ``D + sqrt((u1−p1)² − 2 phi (u1−p1)(p2−l2) + (p2−l2)²)``. With ``phi = 0`` it is the unpaired
    Newcombe interval. Neither scipy nor statsmodels provides a paired difference interval.
    """
    _check_counts(counts)
    n = counts.n
    k1, k2 = counts.both + counts.method_only, counts.both + counts.comparator_only
    p1, p2 = k1 / n, k2 / n
    (l1, u1), (l2, u2) = wilson_interval(k1, n, alpha), wilson_interval(k2, n, alpha)
    margins = k1 * (n - k1) * k2 * (n - k2)
    a = counts.both * counts.neither - counts.method_only * counts.comparator_only
    numerator = a - n / 2 if a > n / 2 else (a if a < 0 else 0.0)
    phi = numerator / math.sqrt(margins) if margins else 0.0
    d = p1 - p2
    lower = d - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = d + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)


@dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of a method against a comparator on paired initial states.

    ``p_one_sided`` is the exact binomial p that the method is better (``method_only`` out of the
    discordant pairs against 1/2, alternative "greater"); ``p_two_sided`` the two-sided exact p.
    ``difference`` is the paired difference in success rate (method − comparator) and ``ci95`` its
    Newcombe hybrid score interval (:func:`newcombe_paired_interval`).
    """

    counts: PairedCounts
    p_one_sided: float
    p_two_sided: float
    difference: float
    ci95: tuple[float, float]


def mcnemar_exact(counts: PairedCounts, alpha: float = 0.05) -> McNemarResult:
    """Exact McNemar test on ``counts``; with no discordant pair there is no evidence: both p = 1.

    ``alpha`` sets the level of the difference interval only (the test reports p-values).
    """
    _check_counts(counts)
    b, c = counts.method_only, counts.comparator_only
    if b + c == 0:
        p_one = p_two = 1.0
    else:
        p_one = float(stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue)
        p_two = float(stats.binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)
    return McNemarResult(counts=counts, p_one_sided=p_one, p_two_sided=p_two, difference=(b - c) / counts.n,
                         ci95=newcombe_paired_interval(counts, alpha))


# --------------------------------------------------------------------------- minimum detectable difference


def _check_design(n: int, p0: float, alpha: float, power: float) -> None:
    if not _is_int(n) or n < 1:
        raise ValueError(f"n must be an integer >= 1 (rollouts per arm), got {n!r}")
    if not isinstance(p0, Real) or not 0.0 <= float(p0) < 1.0:
        raise ValueError(f"baseline success rate p0 must be in [0, 1), got {p0!r}")
    _check_alpha(alpha)
    if not isinstance(power, Real) or not 0.0 < float(power) < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power!r}")


def mdd_unpaired(n: int, p0: float, alpha: float, power: float = 0.8) -> float:
    """Smallest true improvement ``p1 - p0`` that a one-sided two-proportion test with ``n`` rollouts
    per arm detects at level ``alpha`` with probability ``power``; ``inf`` if none up to ``p1 = 1`` is.

    Normal approximation on the arcsine scale (statsmodels ``NormalIndPower``, ``alternative="larger"``):
    with Cohen's ``h = 2 asin(sqrt(p1)) − 2 asin(sqrt(p0))`` the power is ``Φ(h sqrt(n/2) − z_{1−alpha})``,
    so the detectable ``h = (z_{1−alpha} + z_power) sqrt(2/n)`` and ``p1 = sin²(asin(sqrt(p0)) + h/2)``.
    """
    _check_design(n, p0, alpha, power)
    h = float(NormalIndPower().solve_power(effect_size=None, nobs1=n, alpha=alpha, power=power, ratio=1.0,
                                           alternative="larger"))
    angle = math.asin(math.sqrt(p0)) + h / 2
    return math.inf if angle > math.pi / 2 else math.sin(angle) ** 2 - p0


Discordance = Literal["independent", "no_losses"]


def _discordant_rates(p0: float, delta: float, discordance: Discordance) -> tuple[float, float]:
    """Per-state probabilities of (method-only, comparator-only) success under the discordance model."""
    p1 = p0 + delta
    if discordance == "independent":
        return p1 * (1 - p0), p0 * (1 - p1)
    if discordance == "no_losses":
        return delta, 0.0
    raise ValueError(f"discordance must be 'independent' or 'no_losses', got {discordance!r}")


def mcnemar_power(n: int, p0: float, delta: float, alpha: float, discordance: Discordance = "independent") -> float:
    """Exact power of the one-sided exact McNemar test (:func:`mcnemar_exact`) on ``n`` paired states
    when the comparator succeeds with probability ``p0`` and the method with ``p0 + delta``.

    The joint law of a pair is not fixed by the two rates; ``discordance`` states it:

    * ``"independent"``: the two outcomes are independent on each state, so a state is method-only with
      probability ``p1 (1 − p0)`` and comparator-only with ``p0 (1 − p1)``. Shared difficulty of the
      initial states makes outcomes positively correlated and discordance rarer, so this is the
      conservative end for non-negatively correlated policies (roughly the unpaired design's power);
    * ``"no_losses"``: the method solves every state the comparator solves plus a further ``delta``:
      the fewest discordant pairs possible, hence the most power (a best case).

    The number of discordant pairs ``D ~ Bin(n, r_b + r_c)``; given ``D = d`` the test rejects when
    ``b >= k_d``, the smallest ``k`` with ``P(Bin(d, 1/2) >= k) <= alpha``, and
    ``b ~ Bin(d, r_b / (r_b + r_c))``. Power ``= Σ_d P(D = d) P(b >= k_d | d)``, summed exactly.
    """
    _check_design(n, p0, alpha, 0.5)
    if not isinstance(delta, Real) or not 0.0 <= float(delta) <= 1.0 - p0:
        raise ValueError(f"delta must be in [0, 1 - p0] = [0, {1 - p0}], got {delta!r}")
    r_b, r_c = _discordant_rates(p0, delta, discordance)
    rate = r_b + r_c
    if rate <= 0.0:
        return 0.0
    d = np.arange(1, n + 1)  # d = 0 never rejects (p = 1)
    k = stats.binom.isf(alpha, d, 0.5) + 1  # sf(k - 1) = P(X >= k) <= alpha; k = d + 1: never
    reject_given_d = stats.binom.sf(k - 1, d, r_b / rate)
    return float(np.sum(stats.binom.pmf(d, n, rate) * reject_given_d))


def mdd_mcnemar(n: int, p0: float, alpha: float, power: float = 0.8,
                discordance: Discordance = "independent") -> float:
    """Smallest ``delta`` at which :func:`mcnemar_power` reaches ``power`` (``inf`` if none up to
    ``p0 + delta = 1`` does). The exact power is a polynomial in ``delta``, solved with Brent's method.
    """
    _check_design(n, p0, alpha, power)
    _discordant_rates(p0, 0.0, discordance)  # validate the model name before solving

    def shortfall(delta: float) -> float:
        return mcnemar_power(n, p0, delta, alpha, discordance) - power

    top = 1.0 - p0
    if shortfall(top) < 0:
        return math.inf
    return float(optimize.brentq(shortfall, 0.0, top, xtol=1e-6))
