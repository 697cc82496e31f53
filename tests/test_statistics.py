"""okddip_tf.reproduce.statistics: Student's t and the differences between seeds, checked against
printed tables, closed forms, hand computations and (where installed) SciPy."""

import numpy as np
import pytest

from okddip_tf.reproduce import statistics


@pytest.mark.parametrize("df, table", [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228),
                                       (30, 2.042), (120, 1.980)])
def test_t_quantile_matches_the_printed_table(df, table):
    assert statistics.t_quantile(0.975, df) == pytest.approx(table, abs=6e-4)


def test_t_quantile_and_incomplete_beta_match_closed_forms():
    # t with 1 degree of freedom is Cauchy: tan(pi (p - 1/2)); with 2: (2p - 1) / sqrt(2p(1 - p)).
    for p in (0.6, 0.9, 0.975, 0.995):
        assert statistics.t_quantile(p, 1) == pytest.approx(np.tan(np.pi * (p - 0.5)), rel=1e-9)
        assert statistics.t_quantile(p, 2) == pytest.approx((2 * p - 1) / np.sqrt(2 * p * (1 - p)),
                                                            rel=1e-9)
    for x in (0.01, 0.3, 0.5, 0.77, 0.999):
        assert statistics.incomplete_beta(x, 1, 1) == pytest.approx(x, rel=1e-12)
        assert statistics.incomplete_beta(x, 3.5, 1) == pytest.approx(x ** 3.5, rel=1e-10)
        assert statistics.incomplete_beta(x, 1, 4) == pytest.approx(1 - (1 - x) ** 4, rel=1e-10)
        assert statistics.incomplete_beta(x, 0.5, 0.5) == pytest.approx(
            2 / np.pi * np.arcsin(np.sqrt(x)), rel=1e-10)
    assert statistics.t_tail(0.0, 3.3) == pytest.approx(0.5)
    assert statistics.t_tail(-2.0, 5) == pytest.approx(1 - statistics.t_tail(2.0, 5))


def test_t_quantile_matches_scipy_at_fractional_degrees_of_freedom():
    stats = pytest.importorskip("scipy.stats")
    for df in (1.3, 2.7, 4.01, 7.5, 55.2, 1000):
        for p in (0.9, 0.975, 0.995):
            assert statistics.t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_paired_difference_matches_a_hand_computation():
    column, versus = {"0": 10.0, "1": 12.0, "2": 11.0}, {"0": 9.0, "1": 10.0, "2": 10.5}
    found = statistics.difference(column, versus)
    per_seed = np.array([1.0, 2.0, 0.5])
    t = 0.95 / np.sqrt(2 * 0.975 * 0.025)  # t_{0.975, 2}, closed form
    half = t * np.std(per_seed, ddof=1) / np.sqrt(3)
    assert found["test"] == "paired t" and found["df"] == 2 and found["n"] == [3, 3]
    assert found["difference"] == pytest.approx(per_seed.mean(), abs=1e-12)
    assert found["interval"] == pytest.approx([per_seed.mean() - half, per_seed.mean() + half],
                                              abs=1e-9)
    assert found["separated"] is bool(per_seed.mean() - half > 0)
    stats = pytest.importorskip("scipy.stats")
    interval = stats.ttest_rel(list(column.values()), list(versus.values())).confidence_interval()
    assert found["interval"] == pytest.approx([interval.low, interval.high], abs=1e-9)


def test_welch_difference_matches_a_hand_computation():
    # Different seeds finished, so unpaired; equal sizes and variances make Welch's degrees of
    # freedom 2 (n - 1) = 4 exactly, whose t_{0.975} the tables print as 2.776.
    column, versus = {"0": 40.0, "1": 41.0, "2": 42.0}, {"1": 44.0, "2": 45.0, "3": 46.0}
    found = statistics.difference(column, versus)
    assert found["test"] == "Welch t" and found["df"] == pytest.approx(4.0)
    assert found["seeds"] == [["0", "1", "2"], ["1", "2", "3"]]
    half = 2.7764451051977987 * np.sqrt(1.0 / 3 + 1.0 / 3)
    assert found["interval"] == pytest.approx([-4 - half, -4 + half], abs=1e-9)
    assert found["separated"] is True
    # Unequal sizes and spreads: the Welch-Satterthwaite degrees of freedom, against NumPy.
    column, versus = {"0": 30.0, "1": 33.5, "2": 31.0, "3": 29.0}, {"0": 32.0, "1": 32.4}
    a, b = np.array(list(column.values())), np.array(list(versus.values()))
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 2
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 1)
    found = statistics.difference(column, versus)
    assert found["test"] == "Welch t" and found["df"] == pytest.approx(df, rel=1e-12)
    half = statistics.t_quantile(0.975, df) * np.sqrt(va + vb)
    assert found["interval"] == pytest.approx([a.mean() - b.mean() - half,
                                               a.mean() - b.mean() + half], abs=1e-9)
    stats = pytest.importorskip("scipy.stats")
    interval = stats.ttest_ind(a, b, equal_var=False).confidence_interval()
    assert found["interval"] == pytest.approx([interval.low, interval.high], abs=1e-9)


def test_one_seed_in_a_cell_gives_a_difference_without_interval():
    for column, versus in (({"0": 40.0}, {"0": 41.0}), ({"0": 40.0, "1": 40.5}, {"0": 41.0})):
        found = statistics.difference(column, versus)
        assert found["test"] is None and found["interval"] is None
        assert found["separated"] is None and found["difference"] == pytest.approx(
            np.mean(list(column.values())) - 41.0)


def test_p_values_match_scipy_and_agree_with_the_interval():
    """The two-sided p-value is SciPy's for the same test, and below 0.05 exactly where the 95%
    interval excludes 0."""
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(3)
    for trial in range(40):
        shift, spread = rng.uniform(-1.5, 1.5), rng.uniform(0.05, 1.0)
        a = 45.0 + spread * rng.standard_normal(3)
        b = a - shift + spread * rng.standard_normal(3)
        paired = statistics.difference(dict(zip("012", a)), dict(zip("012", b)))
        assert paired["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue, rel=1e-7)
        other = b[:2] if trial % 2 else b  # unequal sizes every other trial
        welch = statistics.difference(dict(zip("012", a)), dict(zip("345", other)))
        expected = stats.ttest_ind(a, other, equal_var=False).pvalue
        assert welch["p_value"] == pytest.approx(expected, rel=1e-7)
        for found in (paired, welch):
            assert found["separated"] is bool(found["p_value"] < 0.05)
    assert statistics.difference({"0": 1.0}, {"0": 2.0})["p_value"] is None  # no spread measured


def test_holm_rejects_as_its_adjusted_p_values_say():
    """Holm's step-down against a hand example and against the adjusted p-values,
    max over the smaller p's of min(1, (m - rank) p), computed with NumPy."""
    assert statistics.holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert statistics.holm([0.04]) == [True] and statistics.holm([]) == []
    assert statistics.holm([0.02, 0.02], family_error=0.05) == [True, True]  # 0.025, then 0.05
    rng = np.random.default_rng(11)
    for m in (1, 2, 5, 15):
        for _ in range(50):
            p = rng.uniform(0, 0.1, m) ** 2
            order = np.argsort(p)
            adjusted = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
            expected = np.empty(m, dtype=bool)
            expected[order] = adjusted <= 0.05
            assert statistics.holm(list(p)) == list(expected)
