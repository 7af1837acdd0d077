"""Tests for benchmarks.stats (paper App. L; docs/method.md §Statistics), checked by hand and against statsmodels."""

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import StratifiedTable, mcnemar
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import confint_proportions_2indep, proportion_confint, proportion_effectsize

from benchmarks.stats import (
    CMHResult,
    PairedCounts,
    bonferroni,
    bonferroni_adjust,
    cmh_test,
    mcnemar_exact,
    mcnemar_power,
    mdd_mcnemar,
    mdd_unpaired,
    newcombe_paired_interval,
    paired_outcomes,
    sign_test,
    wilson_interval,
)

# Three strata (task x base policy); rows: method, comparator; columns: success, failure.
MULTI = [
    [[18, 2], [12, 8]],
    [[15, 5], [11, 9]],
    [[9, 11], [6, 14]],
    [[20, 0], [17, 3]],  # zero cell in one stratum: finite pooled OR regardless
]


def _statsmodels(tables):
    return StratifiedTable([np.asarray(t, dtype=float) for t in tables])


# --------------------------------------------------------------------------- Wilson


@pytest.mark.parametrize(
    ("successes", "n", "expected"),
    [
        (0, 10, (0.0, 0.277533)),
        (10, 10, (0.722467, 1.0)),
        (5, 10, (0.236593, 0.763407)),
        (92, 100, (0.850019, 0.958907)),
    ],
)
def test_wilson_hand_computed(successes, n, expected):
    lo, hi = wilson_interval(successes, n)
    assert lo == pytest.approx(expected[0], abs=1e-6)
    assert hi == pytest.approx(expected[1], abs=1e-6)
    assert 0.0 <= lo <= successes / n <= hi <= 1.0


def test_wilson_zero_successes_closed_form():
    # 0/n: upper bound is z^2 / (n + z^2) exactly.
    z2 = sps.norm.isf(0.025) ** 2
    assert wilson_interval(0, 10) == (0.0, pytest.approx(z2 / (10 + z2), rel=1e-12))


@pytest.mark.parametrize("successes,n", [(0, 1), (1, 1), (3, 7), (17, 50), (49, 50), (123, 400)])
@pytest.mark.parametrize("alpha", [0.05, 0.1, 0.01])
def test_wilson_matches_statsmodels(successes, n, alpha):
    expected = proportion_confint(successes, n, alpha=alpha, method="wilson")
    assert wilson_interval(successes, n, alpha=alpha) == pytest.approx(expected, abs=1e-12)


def test_wilson_narrower_with_larger_alpha():
    lo95, hi95 = wilson_interval(30, 50, 0.05)
    lo80, hi80 = wilson_interval(30, 50, 0.20)
    assert lo95 < lo80 < hi80 < hi95


def test_wilson_bad_input():
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="successes=11, n=10"):
        wilson_interval(11, 10)
    with pytest.raises(ValueError, match="successes=-1, n=10"):
        wilson_interval(-1, 10)
    with pytest.raises(ValueError, match="alpha"):
        wilson_interval(1, 10, alpha=1.5)
    with pytest.raises(ValueError, match="integers"):
        wilson_interval(0.5, 10)


# --------------------------------------------------------------------------- CMH


def test_cmh_multi_stratum_matches_statsmodels():
    res = cmh_test(MULTI)
    st = _statsmodels(MULTI)
    null = st.test_null_odds(correction=False)
    assert isinstance(res, CMHResult)
    assert res.statistic == pytest.approx(null.statistic, rel=1e-12)
    assert res.p_two_sided == pytest.approx(null.pvalue, rel=1e-9)
    assert res.z**2 == pytest.approx(res.statistic, rel=1e-12)
    assert res.z > 0  # method better in every stratum
    assert res.p_one_sided == pytest.approx(sps.norm.sf(res.z), rel=1e-12)
    assert res.p_one_sided == pytest.approx(res.p_two_sided / 2, rel=1e-9)
    assert res.odds_ratio == pytest.approx(st.oddsratio_pooled, rel=1e-12)
    lo, hi = st.oddsratio_pooled_confint()
    assert res.ci95 == pytest.approx((lo, hi), rel=1e-12)
    se = (math.log(res.ci95[1]) - math.log(res.ci95[0])) / (2 * sps.norm.isf(0.025))
    assert se == pytest.approx(st.logodds_pooled_se, rel=1e-12)


def test_cmh_differs_from_continuity_corrected():
    # Guards against silently applying the 0.5 continuity correction.
    st = _statsmodels(MULTI)
    corrected = st.test_null_odds(correction=True).statistic
    assert cmh_test(MULTI).statistic > corrected + 1e-6


def test_cmh_single_stratum_matches_statsmodels():
    table = [[14, 6], [8, 12]]
    res = cmh_test([table])
    st = _statsmodels([table])
    assert res.statistic == pytest.approx(st.test_null_odds(correction=False).statistic, rel=1e-12)
    assert res.odds_ratio == pytest.approx(st.oddsratio_pooled, rel=1e-12)
    assert res.ci95 == pytest.approx(st.oddsratio_pooled_confint(), rel=1e-12)


def test_cmh_hand_computed():
    # n = 8, E[a] = 4*4/8 = 2, a - E = 1, Var = 4^4 / (8^2 * 7) = 4/7 -> chi2 = 7/4.
    res = cmh_test([[[3, 1], [1, 3]]])
    assert res.statistic == pytest.approx(7 / 4, rel=1e-12)
    assert res.z == pytest.approx(math.sqrt(7 / 4), rel=1e-12)
    assert res.p_one_sided == pytest.approx(sps.norm.sf(math.sqrt(7 / 4)), rel=1e-12)
    assert res.p_two_sided == pytest.approx(sps.chi2.sf(7 / 4, 1), rel=1e-12)
    # OR = (3*3/8) / (1*1/8) = 9; single stratum RBG variance = Woolf 1/3 + 1 + 1 + 1/3.
    assert res.odds_ratio == pytest.approx(9.0, rel=1e-12)
    half = sps.norm.isf(0.025) * math.sqrt(8 / 3)
    assert res.ci95 == pytest.approx((9 * math.exp(-half), 9 * math.exp(half)), rel=1e-12)


def test_cmh_zero_cells_infinite_or_finite_score():
    # Method 10/10, comparator 7/10 in each of three strata: b = 0 everywhere.
    tables = [[[10, 0], [7, 3]]] * 3
    res = cmh_test(tables)
    assert res.odds_ratio == math.inf
    assert math.isnan(res.ci95[0]) and res.ci95[1] == math.inf
    # Per stratum: a - E = 10 - 17*10/20 = 1.5, Var = 10*10*17*3 / (20^2 * 19).
    var = 3 * 10 * 10 * 17 * 3 / (400 * 19)
    assert res.z == pytest.approx(4.5 / math.sqrt(var), rel=1e-12)
    assert math.isfinite(res.statistic) and res.statistic > 0
    assert res.statistic == pytest.approx(_statsmodels(tables).test_null_odds(correction=False).statistic, rel=1e-12)
    assert res.p_one_sided < 0.01


def test_cmh_zero_cells_swapped_gives_zero_or():
    res = cmh_test([[[7, 3], [10, 0]]] * 3)
    assert res.odds_ratio == 0.0
    assert res.ci95[0] == 0.0 and math.isnan(res.ci95[1])
    assert res.z < 0


def test_cmh_all_successes_no_information():
    res = cmh_test([[[10, 0], [10, 0]], [[5, 0], [5, 0]]])
    assert (res.statistic, res.z, res.p_one_sided, res.p_two_sided) == (0.0, 0.0, 0.5, 1.0)
    assert math.isnan(res.odds_ratio)


def test_cmh_tiny_strata_skipped():
    base = cmh_test(MULTI)
    padded = cmh_test(MULTI + [[[0, 0], [0, 0]], [[1, 0], [0, 0]], [[0, 0], [0, 1]]])
    assert padded == base
    only_tiny = cmh_test([[[0, 0], [0, 0]], [[0, 1], [0, 0]]])
    assert only_tiny.p_one_sided == 0.5 and math.isnan(only_tiny.odds_ratio)


def test_cmh_swapping_rows_flips_z():
    res = cmh_test(MULTI)
    swapped = cmh_test([[t[1], t[0]] for t in MULTI])
    assert swapped.z == pytest.approx(-res.z, rel=1e-12)
    assert swapped.statistic == pytest.approx(res.statistic, rel=1e-12)
    assert swapped.p_two_sided == pytest.approx(res.p_two_sided, rel=1e-12)
    assert swapped.p_one_sided == pytest.approx(1 - res.p_one_sided, rel=1e-9)
    assert swapped.odds_ratio == pytest.approx(1 / res.odds_ratio, rel=1e-12)
    assert swapped.ci95 == pytest.approx((1 / res.ci95[1], 1 / res.ci95[0]), rel=1e-12)


def test_cmh_method_clearly_better():
    tables = [[[45, 5], [20, 30]], [[40, 10], [18, 32]]]
    res = cmh_test(tables)
    assert res.p_one_sided < 1e-6
    assert res.ci95[0] > 1.0
    worse = cmh_test([[t[1], t[0]] for t in tables])
    assert worse.p_one_sided > 1 - 1e-6


def test_cmh_no_difference():
    res = cmh_test([[[5, 5], [5, 5]], [[8, 2], [8, 2]]])
    assert res.z == 0.0 and res.p_one_sided == pytest.approx(0.5)
    assert res.odds_ratio == pytest.approx(1.0)
    assert res.ci95[0] < 1.0 < res.ci95[1]


def test_cmh_accepts_numpy_tables():
    arr = np.array(MULTI, dtype=np.int64)
    assert cmh_test(list(arr)) == cmh_test(MULTI)


@pytest.mark.parametrize(
    ("tables", "match"),
    [
        ([], "at least one"),
        ([[[1, 2], [3, 4]], [[1, 2, 3], [4, 5, 6]]], "stratum 1"),
        ([[[1, 2], [3, 4]], [[1, 2]]], "stratum 1"),
        ([[[1, -2], [3, 4]]], "stratum 0"),
        ([[[1, 2], [3, 4]], [[1, 2], [3, 4]], [[1.5, 2], [3, 4]]], "stratum 2"),
        ([[[1, 2], [3, 4]], 5], "stratum 1"),
    ],
)
def test_cmh_bad_input(tables, match):
    with pytest.raises(ValueError, match=match):
        cmh_test(tables)


# --------------------------------------------------------------------------- sign test


def test_sign_test_known_values():
    res = sign_test(5, 0)
    assert res.p_one_sided == pytest.approx(1 / 32, rel=1e-12)
    assert sign_test(4, 1).p_one_sided == pytest.approx(6 / 32, rel=1e-12)
    assert sign_test(0, 5).p_one_sided == pytest.approx(1.0)
    assert sign_test(3, 3).p_one_sided == pytest.approx(42 / 64, rel=1e-12)


def test_sign_test_ties_reported_not_used():
    res = sign_test(5, 0, ties=4)
    assert (res.wins, res.losses, res.ties) == (5, 0, 4)
    assert res.p_one_sided == pytest.approx(1 / 32, rel=1e-12)


def test_sign_test_no_strict_outcomes():
    assert sign_test(0, 0, ties=3).p_one_sided == 1.0
    assert sign_test(0, 0).p_one_sided == 1.0


@pytest.mark.parametrize("args", [(-1, 2), (2, -1), (1, 1, -1), (1.5, 2)])
def test_sign_test_bad_input(args):
    with pytest.raises(ValueError):
        sign_test(*args)


# --------------------------------------------------------------------------- Bonferroni


def test_bonferroni():
    assert bonferroni(0.05, 1) == 0.05
    assert bonferroni(0.05, 4) == pytest.approx(0.0125)
    with pytest.raises(ValueError):
        bonferroni(0.05, 0)
    with pytest.raises(ValueError):
        bonferroni(0.0, 3)


def test_bonferroni_adjust():
    assert bonferroni_adjust([0.01, 0.2, 0.5]) == pytest.approx([0.03, 0.6, 1.0])
    assert bonferroni_adjust([]) == []
    assert bonferroni_adjust([0.04]) == [0.04]
    with pytest.raises(ValueError, match="p-value 1"):
        bonferroni_adjust([0.1, 1.2])
    with pytest.raises(ValueError):
        bonferroni_adjust([float("nan")])


# --------------------------------------------------------------------------- paired outcomes: McNemar


def _rollouts(successes, seeds=None):
    seeds = range(1000, 1000 + len(successes)) if seeds is None else seeds
    return [{"seed": s, "success": bool(x)} for s, x in zip(seeds, successes)]


def test_paired_outcomes_match_by_seed_not_by_order():
    method = _rollouts([1, 1, 0, 0, 1])
    comparator = list(reversed(_rollouts([1, 0, 1, 0, 0])))
    assert paired_outcomes(method, comparator) == PairedCounts(both=1, method_only=2, comparator_only=1, neither=1)


def test_paired_outcomes_refuse_unpaired_rollouts():
    with pytest.raises(ValueError, match=r"not run on the same seeds: only the method has \[1002\], "
                                         r"only the comparator has \[1005\]"):
        paired_outcomes(_rollouts([1, 0, 1]), _rollouts([1, 0, 1], seeds=[1000, 1001, 1005]))
    with pytest.raises(ValueError, match=r"comparator rollouts repeat seeds \[1001\]"):
        paired_outcomes(_rollouts([1, 0, 1]), _rollouts([1, 0, 1], seeds=[1000, 1001, 1001]))
    with pytest.raises(ValueError, match="'seed' and 'success'"):
        paired_outcomes([{"success": True}], _rollouts([1]))
    with pytest.raises(ValueError, match="must be a bool"):
        paired_outcomes([{"seed": 1000, "success": 1}], _rollouts([1]))
    with pytest.raises(ValueError, match="at least one rollout"):
        paired_outcomes([], [])


def test_paired_counts_add_over_strata():
    total = PairedCounts(1, 7, 1, 1) + PairedCounts(0, 2, 0, 18)
    assert total == PairedCounts(1, 9, 1, 19) and total.n == 30


def test_mcnemar_hand_computed():
    # b = 7, c = 1: one-sided exact p = sum_{k>=7} C(8, k) / 2^8 = (8 + 1) / 256
    r = mcnemar_exact(PairedCounts(both=1, method_only=7, comparator_only=1, neither=1))
    assert r.p_one_sided == pytest.approx(9 / 256, rel=1e-12)
    assert r.p_two_sided == pytest.approx(18 / 256, rel=1e-12)
    assert r.difference == pytest.approx(0.6)
    assert r.ci95[0] < 0.6 < r.ci95[1]


@pytest.mark.parametrize("b,c", [(7, 1), (1, 7), (3, 3), (0, 5), (12, 4)])
def test_mcnemar_two_sided_matches_statsmodels(b, c):
    table = [[4, b], [c, 9]]
    assert mcnemar_exact(PairedCounts(4, b, c, 9)).p_two_sided == pytest.approx(mcnemar(table, exact=True).pvalue)


def test_mcnemar_no_discordant_pair_is_no_evidence():
    r = mcnemar_exact(PairedCounts(both=6, method_only=0, comparator_only=0, neither=4))
    assert (r.p_one_sided, r.p_two_sided, r.difference) == (1.0, 1.0, 0.0)
    assert r.ci95[0] < 0.0 < r.ci95[1]


def test_mcnemar_direction():
    better, worse = mcnemar_exact(PairedCounts(2, 9, 1, 8)), mcnemar_exact(PairedCounts(2, 1, 9, 8))
    assert better.p_one_sided < 0.05 < 0.95 < worse.p_one_sided
    assert better.p_two_sided == pytest.approx(worse.p_two_sided)


def test_mcnemar_bad_input():
    with pytest.raises(ValueError, match="empty"):
        mcnemar_exact(PairedCounts(0, 0, 0, 0))
    with pytest.raises(ValueError, match="non-negative integers"):
        mcnemar_exact(PairedCounts(1, -1, 0, 0))


def test_newcombe_without_correlation_is_the_unpaired_newcombe_interval():
    # A = 2*2 - 3*1 = 1 <= n/2 = 4, so phi = 0 and the interval is statsmodels' unpaired 'newcomb' one
    expected = confint_proportions_2indep(5, 8, 3, 8, method="newcomb", compare="diff")
    assert newcombe_paired_interval(PairedCounts(2, 3, 1, 2)) == pytest.approx(expected, abs=1e-12)


def test_newcombe_hand_computed_with_correlation():
    # Altman et al. (2000) Table 6.2: both 14, method only 5, comparator only 0, neither 22 (n = 41)
    n, p1, p2 = 41, 19 / 41, 14 / 41
    l1, u1 = proportion_confint(19, n, method="wilson")
    l2, u2 = proportion_confint(14, n, method="wilson")
    phi = (14 * 22 - 0 - n / 2) / math.sqrt(19 * 22 * 14 * 27)
    lower = (p1 - p2) - math.sqrt((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2)
    upper = (p1 - p2) + math.sqrt((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2)
    paired = newcombe_paired_interval(PairedCounts(14, 5, 0, 22))
    assert paired == pytest.approx((lower, upper), abs=1e-12)
    # positive correlation narrows the interval against treating the same rollouts as unpaired
    unpaired = confint_proportions_2indep(19, n, 14, n, method="newcomb", compare="diff")
    assert paired[1] - paired[0] < unpaired[1] - unpaired[0]


def test_newcombe_interval_stays_in_range():
    # 10/10 against 0/10: an empty margin gives phi = 0; each rate's Wilson bound is z^2 / (10 + z^2) away
    gap = sps.norm.isf(0.025) ** 2 / (10 + sps.norm.isf(0.025) ** 2)
    assert newcombe_paired_interval(PairedCounts(0, 10, 0, 0)) == (pytest.approx(1 - math.sqrt(2) * gap), 1.0)
    lo, hi = newcombe_paired_interval(PairedCounts(0, 0, 10, 0))
    assert (lo, hi) == (-1.0, pytest.approx(-(1 - math.sqrt(2) * gap)))


# --------------------------------------------------------------------------- minimum detectable difference


def test_mdd_unpaired_has_the_target_power_and_shrinks_with_n():
    alpha = 0.05 / 5
    mdds = [mdd_unpaired(n, 0.25, alpha) for n in (20, 40, 100, 400)]
    assert all(a > b for a, b in zip(mdds, mdds[1:]))
    for n, mdd in zip((20, 40, 100, 400), mdds):
        h = proportion_effectsize(0.25 + mdd, 0.25)
        assert NormalIndPower().power(h, nobs1=n, alpha=alpha, alternative="larger") == pytest.approx(0.8, abs=1e-6)


def test_mdd_unpaired_unreachable_is_infinite():
    assert mdd_unpaired(1, 0.5, 0.01) == math.inf


def _brute_force_mcnemar_power(n, r_b, r_c, alpha):
    """Sum the multinomial probability of every table whose exact McNemar one-sided p is <= alpha."""
    total = 0.0
    for b in range(n + 1):
        for c in range(n + 1 - b):
            if mcnemar_exact(PairedCounts(0, b, c, n - b - c)).p_one_sided <= alpha:
                total += sps.multinomial.pmf([b, c, n - b - c], n, [r_b, r_c, 1 - r_b - r_c])
    return total


@pytest.mark.parametrize("discordance", ["independent", "no_losses"])
@pytest.mark.parametrize("p0,delta", [(0.2, 0.5), (0.5, 0.3), (0.0, 0.6)])
def test_mcnemar_power_matches_enumerating_every_table(p0, delta, discordance):
    p1 = p0 + delta
    r_b, r_c = (p1 * (1 - p0), p0 * (1 - p1)) if discordance == "independent" else (delta, 0.0)
    expected = _brute_force_mcnemar_power(9, r_b, r_c, 0.05)
    assert mcnemar_power(9, p0, delta, 0.05, discordance) == pytest.approx(expected, abs=1e-12)


def test_mdd_mcnemar_has_the_target_power_and_shrinks_with_n():
    alpha = 0.01
    for discordance in ("independent", "no_losses"):
        mdds = [mdd_mcnemar(n, 0.25, alpha, discordance=discordance) for n in (20, 100, 400)]
        assert all(a > b for a, b in zip(mdds, mdds[1:]))
        for n, mdd in zip((20, 100, 400), mdds):
            assert mcnemar_power(n, 0.25, mdd, alpha, discordance) == pytest.approx(0.8, abs=1e-4)
    # fewer discordant pairs (no losses) means more power, so a smaller detectable difference
    assert mdd_mcnemar(40, 0.25, alpha, discordance="no_losses") < mdd_mcnemar(40, 0.25, alpha)


def test_mdd_mcnemar_unreachable_is_infinite():
    assert mdd_mcnemar(3, 0.2, 0.01) == math.inf  # 3 discordant pairs give p >= 1/8 > 0.01


def test_mdd_bad_input():
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        mdd_unpaired(0, 0.2, 0.05)
    with pytest.raises(ValueError, match=r"p0 must be in \[0, 1\)"):
        mdd_mcnemar(20, 1.0, 0.05)
    with pytest.raises(ValueError, match="power must be in"):
        mdd_unpaired(20, 0.2, 0.05, power=1.0)
    with pytest.raises(ValueError, match="discordance must be"):
        mdd_mcnemar(20, 0.2, 0.05, discordance="correlated")
    with pytest.raises(ValueError, match=r"delta must be in \[0, 1 - p0\]"):
        mcnemar_power(20, 0.8, 0.5, 0.05)
