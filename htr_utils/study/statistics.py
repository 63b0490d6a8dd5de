"""Statistics behind the verdict rules: mean ± std, Welch and bootstrap intervals, Spearman ρ, trend tests.

Each function states what it computes in its docstring; the rules that use them live with their
claims (:mod:`htr_utils.study.claims`) and analyses.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata, spearmanr, ttest_ind
from scipy.stats import t as t_dist


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


def paired_difference(a: Mapping[int, float], b: Mapping[int, float], level: float = 0.95) -> dict:
    """Mean of the per-seed differences d_s = a_s − b_s with its paired t interval d̄ ± t_{n−1} · s_d / √n.

    ``a`` and ``b`` map seed -> value; only seeds finite in both are paired (arms with the same
    seed share initialisation and batch order, so the seed-to-seed spread cancels). Returns the
    mean ``diff``, ``sd`` of the d_s, interval ``lo``/``hi``, two-sided ``p`` and ``n``.
    """
    seeds = sorted(s for s in set(a) & set(b) if np.isfinite(a[s]) and np.isfinite(b[s]))
    d = np.array([a[s] - b[s] for s in seeds], dtype=float)
    n = len(d)
    out = {"diff": float(d.mean()) if n else float("nan"), "sd": float(d.std(ddof=1)) if n > 1 else float("nan"),
           "lo": float("nan"), "hi": float("nan"), "p": float("nan"), "n": n, "seeds": seeds}
    if n > 1:  # identical differences (sd 0) give the degenerate interval [d̄, d̄]
        half = t_dist.ppf(0.5 + level / 2, n - 1) * out["sd"] / np.sqrt(n)
        out.update(lo=float(out["diff"] - half), hi=float(out["diff"] + half))
        if out["sd"] > 0:
            out["p"] = float(2 * t_dist.sf(abs(out["diff"]) / (out["sd"] / np.sqrt(n)), n - 1))
    return out


def min_detectable_effect(sd: float, n: int, level: float = 0.95, power: float = 0.8) -> float:
    """Smallest true mean difference whose paired interval excludes 0 with probability ``power``.

    (t_{(1+level)/2, n−1} + t_{power, n−1}) · sd / √n, the usual normal-theory approximation for n paired seeds.
    """
    if n < 2 or not np.isfinite(sd):
        return float("nan")
    return float((t_dist.ppf(0.5 + level / 2, n - 1) + t_dist.ppf(power, n - 1)) * sd / np.sqrt(n))


def partial_spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray,
                     z: Sequence[float] | np.ndarray) -> float | np.ndarray:
    """Spearman ρ of x and y given z: correlation of the ranks of x and y after regressing out z's ranks.

    Works on the last axis, so stacked samples (e.g. bootstrap resamples) are computed at once;
    a sample with constant ranks gives NaN.
    """
    return partial_rank_correlation(*(rankdata(np.asarray(v, dtype=float), axis=-1) for v in (x, y, z)))


def bootstrap_ranks(values: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """rankdata(values[..., idx], axis=-1) (average ranks; ``idx`` (boot, m) resamples positions of the last axis)
    without sorting every resample: a resample's average rank of original item j is (the count of drawn items below
    j) + (1 + j's multiplicity) / 2, from one sort of the originals. Falls back to rankdata where originals tie."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    order = np.argsort(values, axis=-1)
    if (np.diff(np.take_along_axis(values, order, -1), axis=-1) == 0).any():
        return rankdata(values[..., idx], axis=-1)
    mult = np.zeros((idx.shape[0], n))
    np.add.at(mult, (np.arange(idx.shape[0])[:, None], idx), 1.0)
    m_sorted = mult[:, order]                                   # (boot, ..., n) in each sample's sorted order
    m_sorted = np.moveaxis(m_sorted, 0, -2)                     # (..., boot, n)
    below = np.cumsum(m_sorted, -1) - m_sorted
    rank_sorted = below + (m_sorted + 1) / 2
    ranks = np.empty_like(rank_sorted)
    np.put_along_axis(ranks, np.broadcast_to(order[..., None, :], rank_sorted.shape), rank_sorted, -1)
    return np.take_along_axis(ranks, np.broadcast_to(idx, ranks.shape[:-1] + idx.shape[-1:]), -1)


def partial_rank_correlation(rx: np.ndarray, ry: np.ndarray, rz: np.ndarray) -> float | np.ndarray:
    """:func:`partial_spearman` from the ranks (rx, ry, rz) already taken along the last axis."""
    rz = rz - rz.mean(-1, keepdims=True)
    vz = (rz ** 2).sum(-1, keepdims=True)
    res = []
    for r in (rx, ry):
        r = r - r.mean(-1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            res.append(r - np.where(vz > 0, (r * rz).sum(-1, keepdims=True) / vz, 0.0) * rz)
    num, den = (res[0] * res[1]).sum(-1), np.sqrt((res[0] ** 2).sum(-1) * (res[1] ** 2).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 1e-12, num / np.where(den > 0, den, 1.0), np.nan)
    return float(rho) if rho.ndim == 0 else rho


def partial_spearman_bootstrap(x: Sequence[float], y: Sequence[float], z: Sequence[float],
                               groups: Sequence[Any], level: float = 0.95, num: int = 2000, seed: int = 0) -> dict:
    """:func:`partial_spearman` with a cluster bootstrap interval: whole groups (e.g. a setting's seeds) resampled.

    Seeds of one setting are not independent points, so the interval resamples settings, each
    with all its seeds (groups must be of equal size). Resamples where ρ is undefined are skipped.
    """
    x, y, z = (np.asarray(v, dtype=float) for v in (x, y, z))
    labels = np.asarray(groups)
    members = np.array([np.flatnonzero(labels == g) for g in dict.fromkeys(labels.tolist())])
    rng = np.random.default_rng(seed)
    idx = members[rng.integers(0, len(members), (num, len(members)))].reshape(num, -1)
    boot = partial_spearman(x[idx], y[idx], z[idx])
    boot = boot[np.isfinite(boot)]
    lo, hi = (np.quantile(boot, [(1 - level) / 2, (1 + level) / 2]) if len(boot) else (np.nan, np.nan))
    return {"rho": partial_spearman(x, y, z), "lo": float(lo), "hi": float(hi), "n": len(x), "groups": len(members)}
