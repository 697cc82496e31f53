"""Means over seeds and the differences between two sets of seeds, with a t interval and p;
Holm's correction over many such differences.

Pure numbers (NumPy and the standard library, no framework): Student's t distribution is computed
here from the regularised incomplete beta function, as SciPy is not a dependency. The report's
comparisons use it, and so do the benchmarks that compare seeds (benchmarks/digits_mlp.py,
benchmarks/finetune_cifar100_split.py).
"""

import math

import numpy as np


def summary(values):
    """{"mean", "std" (sample, None for one value), "n"} of a list of numbers, or None."""
    if not values:
        return None
    return {"mean": float(np.mean(values)),
            "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
            "n": len(values)}


CONFIDENCE = 0.95


def _beta_fraction(x, a, b):
    """The continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300

    def kept(value):
        return value if abs(value) > tiny else tiny

    c, d = 1.0, 1.0 / kept(1.0 - (a + b) * x / (a + 1.0))
    total = d
    for m in range(1, 1000):
        # The even step d_2m, then the odd step d_2m+1 of the fraction's coefficients.
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 / kept(1.0 + numerator * d)
            c = kept(1.0 + numerator / c)
            total *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return total


def incomplete_beta(x, a, b):
    """The regularised incomplete beta function I_x(a, b), for 0 <= x <= 1 and a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                 + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # where the fraction converges fast; else the symmetry
        return math.exp(log_front) * _beta_fraction(x, a, b) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(1.0 - x, b, a) / b


def t_tail(t, df):
    """P(T > t) for Student's t with `df` (> 0, not necessarily whole) degrees of freedom."""
    tail = 0.5 * incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
    return tail if t >= 0 else 1.0 - tail


def t_quantile(probability, df):
    """The t with P(T <= t) = `probability` (0.5 < probability < 1), by bisection on t_tail."""
    upper_tail, low, high = 1.0 - probability, 0.0, 1.0
    while t_tail(high, df) > upper_tail:
        low, high = high, 2.0 * high
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_tail(middle, df) > upper_tail:
            low = middle
        else:
            high = middle
        if high - low <= 1e-12 * high:
            break
    return 0.5 * (low + high)


def difference(column, versus):
    """`column` minus `versus` over seeds, {seed: value} each, with a 95% t interval.

    Paired t over the per-seed differences where both finished the same seeds (at least 2);
    Welch's t with the Welch-Satterthwaite degrees of freedom where the seeds differ and each
    has at least 2; no interval otherwise (a one-seed cell measures no seed-to-seed spread).
    """
    seeds = [sorted(column, key=int), sorted(versus, key=int)]  # seed numbers, as strings
    a = np.array([column[seed] for seed in seeds[0]], dtype=float)
    b = np.array([versus[seed] for seed in seeds[1]], dtype=float)
    result = {"difference": float(a.mean() - b.mean()), "n": [len(a), len(b)], "seeds": seeds,
              "test": None, "df": None, "confidence": CONFIDENCE, "interval": None,
              "separated": None, "p_value": None}
    if seeds[0] == seeds[1] and len(a) >= 2:
        differences = a - b
        df = len(a) - 1
        error = float(np.std(differences, ddof=1) / math.sqrt(len(a)))
        result["test"] = "paired t"
    elif len(a) >= 2 and len(b) >= 2:
        va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
        error = float(math.sqrt(va + vb))
        df = (float((va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1)))
              if error > 0 else None)
        result["test"] = "Welch t"
    else:
        return result
    half = error * t_quantile(0.5 + CONFIDENCE / 2, df) if error > 0 else 0.0
    low, high = result["difference"] - half, result["difference"] + half
    # Two-sided: the chance of a difference this far from 0 were the cells' means equal.
    p_value = (2.0 * t_tail(abs(result["difference"]) / error, df) if error > 0
               else float(result["difference"] == 0))
    result.update({"df": df, "interval": [low, high], "separated": bool(low > 0 or high < 0),
                   "p_value": p_value})
    return result


def holm(p_values, family_error=1 - CONFIDENCE):
    """Holm's step-down correction: which of the hypotheses with these p-values are rejected
    while the chance of rejecting any true one stays at most `family_error`.

    The smallest p is held to family_error / m, the next to family_error / (m - 1), and so on;
    the first that fails stops the rejections (Holm, Scand. J. Statist. 6, 1979).
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > family_error / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def compare_seeds(values, pairs):
    """A benchmark's per-seed numbers, summarised and compared.

    Args:
      values: {column: {seed: value}}, seeds as strings (e.g. each variant's test accuracy).
      pairs: (column, versus) pairs to take `difference`s of.

    Returns:
      {"summary": {column: `summary`}, "differences": {"column - versus": `difference`}}.
    """
    return {"summary": {column: summary(list(per_seed.values()))
                        for column, per_seed in values.items()},
            "differences": {f"{column} - {versus}": difference(values[column], values[versus])
                            for column, versus in pairs}}
