"""Statistics behind the verdict rules: mean ± std, Welch and bootstrap intervals, Spearman ρ, trend tests.

Each function states what it computes in its docstring; the rules that use them live with their
claims (:mod:`htr_utils.study.claims`) and analyses.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata, spearmanr, ttest_ind


def decreasing_trend(epochs: Sequence[float], values: Sequence[float], from_fraction: float = 0.5,
                     alpha: float = 0.05) -> dict:
    """Rule for C5: Spearman ρ of ``values`` against epoch over the last (1 − from_fraction) of training.

    "decreasing" when ρ < 0 with one-sided p < alpha; "increasing" when ρ > 0 likewise; else
    "no trend". Also reports whether the values rose from the first epoch to their peak
    before the window (an early rise the paper does not describe).
    """
    e, v = np.asarray(epochs, dtype=float), np.asarray(values, dtype=float)
    window = e >= e.min() + from_fraction * (e.max() - e.min())
    rho, p_two = spearmanr(e[window], v[window]) if window.sum() >= 3 else (np.nan, np.nan)
    p_one = p_two / 2 if np.isfinite(p_two) else np.nan
    if np.isfinite(rho) and rho < 0 and p_one < alpha:
        trend = "decreasing"
    elif np.isfinite(rho) and rho > 0 and p_one < alpha:
        trend = "increasing"
    else:
        trend = "no trend"
    peak = int(np.argmax(v))
    return {"rho": float(rho), "p_one_sided": float(p_one), "trend": trend, "n": int(window.sum()),
            "early_rise": bool(v[peak] > v[0] and e[peak] < e.min() + from_fraction * (e.max() - e.min())),
            "first": float(v[0]), "peak": float(v[peak]), "peak_epoch": float(e[peak]), "last": float(v[-1])}


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' (sample std, ddof=1) for a handful of seeds."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4g} ± {v.std(ddof=1) if len(v) > 1 else float('nan'):.2g}"


def welch_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict:
    """Mean(a) − mean(b) with its Welch t confidence interval (unequal variances) and two-sided p.

    Needs at least two finite values per group; NaN entries (e.g. diverged runs) are dropped.
    """
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    diff = float(x.mean() - y.mean()) if len(x) and len(y) else float("nan")
    if len(x) < 2 or len(y) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):  # no t interval without spread
        return {"diff": diff, "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "n_a": len(x), "n_b": len(y)}
    res = ttest_ind(x, y, equal_var=False)
    ci = res.confidence_interval(confidence_level=level)
    return {"diff": diff, "lo": float(ci.low), "hi": float(ci.high), "p": float(res.pvalue), "n_a": len(x),
            "n_b": len(y)}


def bootstrap_difference(a: Sequence[float], b: Sequence[float], level: float = 0.95, num: int = 10000,
                         seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(a) − mean(b), each group resampled with replacement."""
    x, y = (np.asarray(v, dtype=float) for v in (a, b))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    rng = np.random.default_rng(seed)
    d = rng.choice(x, (num, len(x))).mean(1) - rng.choice(y, (num, len(y))).mean(1)
    return float(np.quantile(d, (1 - level) / 2)), float(np.quantile(d, (1 + level) / 2))


def spearman_bootstrap(x: Sequence[float], y: Sequence[float], level: float = 0.95, num: int = 10000,
                       seed: int = 0) -> dict:
    """Spearman ρ of (x, y), its percentile bootstrap interval (pairs resampled) and the two-sided p.

    Resamples whose ranks are constant (ρ undefined) are skipped.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    rho, p = spearmanr(x, y)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), (num, len(x)))
    xs, ys = x[idx], y[idx]
    ok = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    rx, ry = rankdata(xs[ok], axis=1), rankdata(ys[ok], axis=1)  # average ranks: resampling duplicates pairs
    rx -= rx.mean(1, keepdims=True)
    ry -= ry.mean(1, keepdims=True)
    boot = (rx * ry).sum(1) / np.sqrt((rx ** 2).sum(1) * (ry ** 2).sum(1))
    return {"rho": float(rho), "p": float(p), "lo": float(np.quantile(boot, (1 - level) / 2)),
            "hi": float(np.quantile(boot, (1 + level) / 2)), "n": len(x)}
