"""The primary verdict rules of C1-C5 (PROTOCOL.md), on numbers only.

One implementation per rule: the ``*_codes`` functions work on arrays and return verdict codes
(``R`` reproduced, ``N`` not reproduced, ``I`` inconclusive); the notebooks apply them to the
measured numbers through the scalar ``*_rule`` wrappers, and :mod:`htr_utils.study.calibration`
applies the same functions to simulated numbers to get the rules' error rates.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

from .depth_trends import is_middle
from .regularisation_rules import CODE_TO_VERDICT, I, N, R, verdict_of
from .verdicts import Verdict, combine

__all__ = ["R", "N", "I", "verdict_of", "CODE_TO_VERDICT"]

TOP_THRESHOLD = 0.10      # C2 / C3: top-C eigenvalues within 10 % of the Hessian's
SHARE_HIGH, SHARE_LOW = 0.75, 0.25
ALPHA = 0.05
MIN_TREND_POINTS = 5      # C5: no trend is tested on fewer points (n = 3: smallest exact p is 1/6)


# ----------------------------------------------------------------------------- C1 / C3: about C outliers


def about_c_codes(k: np.ndarray | int, C: int) -> np.ndarray:
    """R if C − 2 ≤ k ≤ C + 2; N if k < C/2 or k > 2C; I otherwise."""
    k = np.asarray(k)
    return np.where((k >= C - 2) & (k <= C + 2), R, np.where((k < C / 2) | (k > 2 * C), N, I))


def c1_rule(counts: Mapping[str, int], C: int) -> Verdict:
    """Per network :func:`about_c_codes` on its count above the bulk edge; networks combined with "all_of"."""
    return combine([verdict_of(about_c_codes(k, C)) for k in counts.values()], "all_of")


# ----------------------------------------------------------------------------- C2 / C3: top-C agreement


def top_disagreement(top_x: Sequence[float], top_hess: Sequence[float], C: int) -> float:
    """max_{k ≤ C} |λ_k(X) − λ_k(Hess)| / λ_k(Hess) on descending Ritz values; NaN with fewer than C of either."""
    x = np.sort(np.asarray(top_x, dtype=float))[::-1]
    h = np.sort(np.asarray(top_hess, dtype=float))[::-1]
    if len(x) < C or len(h) < C:
        return float("nan")
    return float(np.max(np.abs(x[:C] - h[:C]) / np.abs(h[:C])))


def share_codes(share: np.ndarray | float, hi: float = SHARE_HIGH, lo: float = SHARE_LOW) -> np.ndarray:
    """R if share ≥ hi, N if share ≤ lo, else I (NaN: I)."""
    s = np.asarray(share, dtype=float)
    return np.where(s >= hi, R, np.where(s <= lo, N, I))


def _share_below(values: Sequence[float], threshold: float) -> float:
    """Share of the finite ``values`` that are ≤ threshold (NaN if none is finite).

    A NaN disagreement (fewer than C Ritz values recorded) is a missing reading, not a failed one:
    it decides nothing either way.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    return float(np.mean(v <= threshold)) if len(v) else float("nan")


def c2_rule(a_ggn: Sequence[float], a_residual: Sequence[float], floor: float,
            threshold: float = TOP_THRESHOLD) -> Verdict:
    """Share of readings with a(G) ≤ threshold decides (≥ 0.75 R, ≤ 0.25 N); inconclusive if H passes in more than
    25 % of readings (the criterion would not discriminate), if H has no reading (the check cannot be made) or if
    the noise floor is not below the threshold (NaN floor included). NaN readings are left out of both shares."""
    share_h = _share_below(a_residual, threshold)
    if not np.isfinite(share_h) or share_h > SHARE_LOW or not (floor < threshold):
        return Verdict.INCONCLUSIVE
    return verdict_of(share_codes(_share_below(a_ggn, threshold)))


def c3_rule(layer_counts: Sequence[int], C: int, gelu_disagreements: Sequence[float],
            threshold: float = TOP_THRESHOLD) -> Verdict:
    """(a) share of layers with about C outliers, (b) share of smooth-network readings with a_l(G_l) ≤ threshold:
    R if both ≥ 0.75, N if either ≤ 0.25, else I (a share with no readings is inconclusive)."""
    s_a = float(np.mean(about_c_codes(np.asarray(layer_counts), C) == R)) if len(layer_counts) else float("nan")
    s_b = _share_below(gelu_disagreements, threshold)
    return combine([verdict_of(share_codes(s_a)), verdict_of(share_codes(s_b))], "all_of")


# ----------------------------------------------------------------------------- C4: distances and the tally


def pooled_atoms(runs: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """K SLQ runs of (nodes, weights) → one discrete measure: every run's weights normalised, then divided by K."""
    nodes = [np.asarray(n, dtype=float).ravel() for n, _ in runs]
    weights = [np.asarray(w, dtype=float).ravel() for _, w in runs]
    if not nodes:
        raise ValueError("pooled_atoms: no SLQ runs given")
    return np.concatenate(nodes), np.concatenate([w / w.sum() / len(weights) for w in weights])


def w1_atoms(nodes_a: np.ndarray, weights_a: np.ndarray, nodes_b: np.ndarray, weights_b: np.ndarray) -> float:
    """Exact Wasserstein-1 between two discrete measures on the line: ∫ |F_a − F_b| dλ (weights normalised)."""
    xa, wa = np.asarray(nodes_a, dtype=float).ravel(), np.asarray(weights_a, dtype=float).ravel()
    xb, wb = np.asarray(nodes_b, dtype=float).ravel(), np.asarray(weights_b, dtype=float).ravel()
    x = np.concatenate([xa, xb])
    w = np.concatenate([wa / wa.sum(), -wb / wb.sum()])
    order = np.argsort(x, kind="stable")
    x, cdf_diff = x[order], np.cumsum(w[order])
    return float(np.sum(np.abs(cdf_diff[:-1]) * np.diff(x)))


def common_width_kl(measure_a: tuple[np.ndarray, np.ndarray], measure_b: tuple[np.ndarray, np.ndarray], sigma: float,
                    grid_points: int = 1024, floor: float = 1e-12) -> float:
    """KL(a‖b) between two discrete measures both smoothed with the same Gaussian width ``sigma`` on one grid
    spanning both supports ± 3σ; densities are normalised on the grid, and ``floor`` (relative to each peak)
    keeps the logarithm finite where b vanishes."""
    if not sigma > 0:
        raise ValueError(f"common_width_kl: the smoothing width must be positive, got {sigma!r}")
    (xa, wa), (xb, wb) = measure_a, measure_b
    lo = min(np.min(xa), np.min(xb)) - 3 * sigma
    hi = max(np.max(xa), np.max(xb)) + 3 * sigma
    grid = np.linspace(lo, hi, grid_points)

    def smooth(x: np.ndarray, w: np.ndarray) -> np.ndarray:
        d = (np.asarray(w, dtype=float)[None, :] * np.exp(-0.5 * ((grid[:, None] - np.asarray(x, dtype=float)[None, :])
                                                                     / sigma) ** 2)).sum(1)
        d = np.maximum(d, floor * d.max())
        return d / d.sum()

    p, q = smooth(xa, wa), smooth(xb, wb)
    return float(np.sum(p * np.log(p / q)))


def middle_share(num_layers: int) -> float:
    """Share of the L layers in the middle half (L/4 ≤ i < 3L/4)."""
    return sum(is_middle(i, num_layers) for i in range(num_layers)) / num_layers


def c4_classify(w1_layers: Sequence[float], floor: float) -> str:
    """"middle" if the closest middle-half layer beats the closest outer one by more than ``floor``, "outer" if the
    reverse, else "tie"."""
    w = np.asarray(w1_layers, dtype=float)
    L = len(w)
    mid = np.array([is_middle(i, L) for i in range(L)], dtype=bool)
    if not mid.any() or mid.all():
        raise ValueError(f"c4_classify: {L} layers have no middle-half or no outer layer to compare")
    m, o = w[mid].min(), w[~mid].min()
    return "middle" if m + floor < o else "outer" if o + floor < m else "tie"


def _min_survival(samples: Sequence[np.ndarray], t: np.ndarray) -> np.ndarray:
    """P(min_l X_l > t) for independent X_l, each uniform on its samples; ``samples[l]``: (..., S_l), t: (T,)."""
    out = 1.0
    for x in samples:
        out = out * np.mean(x[..., :, None] > t, axis=-2)
    return out


def _beats(first: Sequence[np.ndarray], second: Sequence[np.ndarray], floor: float) -> np.ndarray:
    """P(min(first) + floor < min(second)), exactly, for independent layers uniform on their samples:
    Σ_v P(min(first) = v) · P(min(second) > v + floor), v over every sample value."""
    v = np.unique(np.concatenate([np.ravel(x) for x in first]))
    surv = _min_survival(first, v)
    mass = np.concatenate([1.0 - surv[..., :1], surv[..., :-1] - surv[..., 1:]], axis=-1)
    return np.sum(mass * _min_survival(second, v + floor), axis=-1)


def _null_layers(null_w1: Sequence[Sequence[float]], who: str) -> tuple[list[np.ndarray], np.ndarray]:
    W = [np.asarray(w, dtype=float).ravel() for w in null_w1]
    if any(len(w) == 0 for w in W):
        raise ValueError(f"{who}: every layer needs at least one random subset of its size; "
                         "take the distance readings with null_subsets > 0")
    L = len(W)
    mid = np.array([is_middle(i, L) for i in range(L)], dtype=bool)
    if not mid.any() or mid.all():
        raise ValueError(f"{who}: {L} layers have no middle-half or no outer layer to compare")
    return W, mid


def c4_null_rates(null_w1: Sequence[Sequence[float]], floor: float) -> tuple[float, float]:
    """(p_mid, p_out) of one reading under the size-matched null (PROTOCOL.md, C4 amendment 2), plug-in.

    ``null_w1[l]``: W1 to the full measure of each random coordinate subset of layer l's size. A null reading
    takes one subset per layer, independently and uniformly; p_mid and p_out are the exact probabilities that
    :func:`c4_classify` (same ``floor``) calls it "middle" and "outer": how a network whose layers differed
    only in size would read. Unbiased for the true rates (every term pairs independent subsets), but from a
    few subsets per layer: :func:`c4_null_upper` gives the upper limits the rule uses.
    """
    W, mid = _null_layers(null_w1, "c4_null_rates")
    M, O = [w for w, m in zip(W, mid) if m], [w for w, m in zip(W, mid) if not m]
    return float(_beats(M, O, floor)), float(_beats(O, M, floor))


def c4_null_upper(null_w1: Sequence[Sequence[float]], floor: float, level: float = 0.95, boots: int = 2000,
                  seed: int = 0) -> tuple[float, float]:
    """Upper ``level`` confidence limits of (p_mid, p_out) (PROTOCOL.md, C4 amendment 4): the ``level`` quantile
    of :func:`c4_null_rates` over ``boots`` bootstrap resamples of every layer's subsets. With five subsets a
    layer the percentile bootstrap is rough; the Gauss–Newton calibration reads through the same limits, so
    its error rates include this estimation noise."""
    W, mid = _null_layers(null_w1, "c4_null_upper")
    if not 0.5 <= level < 1 or boots < 1:
        raise ValueError(f"c4_null_upper: level must be in [0.5, 1) and boots ≥ 1, got {level}, {boots}")
    rng = np.random.default_rng(seed)
    R_ = [w[rng.integers(len(w), size=(boots, len(w)))] for w in W]
    M, O = [w for w, m in zip(R_, mid) if m], [w for w, m in zip(R_, mid) if not m]
    return float(np.quantile(_beats(M, O, floor), level)), float(np.quantile(_beats(O, M, floor), level))


def majority(readings: int) -> int:
    """The number of readings that makes a majority of ``readings``."""
    return readings // 2 + 1


def network_bound(null_rates: Sequence[Sequence[float]]) -> float:
    """Upper bound, under the size-matched null, on P(every network's readings are mostly X), where
    ``null_rates[k]`` are network k's per-reading null rates of X (p_mid or p_out, their upper limits in the rule).

    Within a network the readings may depend on each other in any way, so only Markov's bound holds:
    P(n_k ≥ m_k) ≤ E[n_k] / m_k = Σ_i p_ki / m_k, with m_k the majority of its readings (tight: some
    dependence attains it). Networks may depend on each other too (LeNet and LeNet-GELU share seed,
    initialisation and data order), so the bound on all of them is the smallest network's (amendment 4):
    min_k min(1, Σ_i p_ki / m_k).
    """
    bound = 1.0
    for rates in null_rates:
        p = np.asarray(rates, dtype=float).ravel()
        if len(p) == 0 or (p < 0).any() or (p > 1).any():
            raise ValueError(f"network_bound: every network needs null rates in [0, 1], got {list(p)}")
        bound = min(bound, float(p.sum()) / majority(len(p)))
    return bound


def c4_codes(all_middle: np.ndarray | bool, all_outer: np.ndarray | bool, bound_middle: float, bound_outer: float,
             alpha: float = ALPHA) -> np.ndarray:
    """R if every network's readings are mostly "middle" and the null bound on that (:func:`network_bound` of the
    p_mid) is below alpha; N likewise for "outer" with the p_out; else I."""
    return np.where(np.asarray(all_middle) & (bound_middle < alpha), R,
                    np.where(np.asarray(all_outer) & (bound_outer < alpha), N, I))


def majorities(labels: Sequence[str], networks: Sequence[str]) -> tuple[bool, bool]:
    """(every network's readings are mostly "middle", every network's readings are mostly "outer")."""
    by: dict[str, list[str]] = {}
    for label, net in zip(labels, networks):
        by.setdefault(net, []).append(label)
    mostly = lambda what: all(v.count(what) > len(v) / 2 for v in by.values())  # noqa: E731
    return mostly("middle"), mostly("outer")


def by_network(values: Sequence[float], networks: Sequence[str]) -> list[list[float]]:
    """``values`` grouped by network, networks in order of first appearance."""
    groups: dict[str, list[float]] = {}
    for v, net in zip(values, networks):
        groups.setdefault(net, []).append(float(v))
    return list(groups.values())


def c4_amendment1_codes(n_middle: np.ndarray | int, n_outer: np.ndarray | int, total: int, p0: float,
                        all_middle: np.ndarray | bool = True, all_outer: np.ndarray | bool = True,
                        alpha: float = ALPHA) -> np.ndarray:
    """The superseded rule of amendment 1, shown beside the primary one: R if P(Bin(total, p0) ≥ n_middle) < alpha
    and every network is mostly "middle"; N if P(Bin(total, 1 − p0) ≥ n_outer) < alpha and every network is mostly
    "outer"; p0 = the mean share of middle layers. It ignores layer size and the readings' dependence."""
    p_m = stats.binom.sf(np.asarray(n_middle) - 1, total, p0)
    p_o = stats.binom.sf(np.asarray(n_outer) - 1, total, 1 - p0)
    return np.where((p_m < alpha) & np.asarray(all_middle), R,
                    np.where((p_o < alpha) & np.asarray(all_outer), N, I))


def c4_rule(labels: Sequence[str], p_mid: Sequence[float], p_out: Sequence[float], networks: Sequence[str]) -> Verdict:
    """:func:`c4_codes` on the readings' labels ("middle" / "outer" / "tie"), their null rates and networks."""
    labels = list(labels)
    if not labels:
        return Verdict.INCONCLUSIVE
    if not len(labels) == len(p_mid) == len(p_out) == len(networks):
        raise ValueError("c4_rule: labels, p_mid, p_out and networks need one entry per reading")
    all_mid, all_out = majorities(labels, networks)
    return verdict_of(c4_codes(all_mid, all_out, network_bound(by_network(p_mid, networks)),
                               network_bound(by_network(p_out, networks))))


# ----------------------------------------------------------------------------- C5: trends


def kendall_trend(values: Sequence[float]) -> tuple[float, float, float]:
    """Kendall τ of ``values`` against their index, with exact one-sided p-values (decrease, increase)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2 or not np.all(np.isfinite(v)):
        return float("nan"), float("nan"), float("nan")
    x = np.arange(len(v))
    method = "exact" if len(np.unique(v)) == len(v) else "auto"  # ties: scipy's exact needs none
    tau = stats.kendalltau(x, v, method=method, alternative="less")
    inc = stats.kendalltau(x, v, method=method, alternative="greater")
    return float(tau.statistic), float(tau.pvalue), float(inc.pvalue)


def c5_codes(p_decrease: np.ndarray, p_increase: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Over the last axis (the series): R if every p_decrease < alpha; N if any p_increase < alpha / series; else I."""
    p_dec, p_inc = np.asarray(p_decrease, dtype=float), np.asarray(p_increase, dtype=float)
    m = p_dec.shape[-1]
    return np.where((p_dec < alpha).all(-1), R, np.where((p_inc < alpha / m).any(-1), N, I))


def c5_rule(series: Mapping[str, Sequence[float]]) -> Verdict:
    """:func:`c5_codes` on the Kendall trends of the named series (each at least MIN_TREND_POINTS long)."""
    short = {k: len(v) for k, v in series.items() if len(v) < MIN_TREND_POINTS}
    if short:
        raise ValueError(f"c5_rule: series {short} have fewer than {MIN_TREND_POINTS} points; no trend is tested on "
                         "so few (at n = 3 the smallest exact p is 1/6): record the curvature at more epochs")
    trends = np.array([kendall_trend(v) for v in series.values()])
    return verdict_of(c5_codes(trends[:, 1], trends[:, 2]))


# ----------------------------------------------------------------------------- C5 (issue 30): serial dependence

PHI_MEASURED = 0.5        # C5 amendment: lag-1 autocorrelation allowed for, ≥ every committed series' (0.20–0.47)
PHI_CAP = 0.9             # a series' own estimate is used up to this (beyond it 50 points hold ~3 independent ones)
PHI_GRID = 0.05           # null tables are built on this grid of φ, the series' φ rounded up (conservative)
AR1_NULL_DRAWS = 20000


def lag1_autocorrelation(values: Sequence[float]) -> float:
    """r₁ of the residuals of a least-squares line through ``values`` against their index:
    Σ e_t e_{t−1} / Σ e_t² (0 for a series the line fits to rounding)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"lag1_autocorrelation: need at least 3 finite values, got {list(v)}")
    x = np.arange(len(v))
    e = v - np.polyval(np.polyfit(x, v, 1), x)
    ss = float(np.sum(e * e))
    # a series the line fits to rounding has no residual to correlate
    return float(np.sum(e[1:] * e[:-1]) / ss) if ss > 1e-20 * float(np.sum((v - v.mean()) ** 2)) else 0.0


def discordant_pairs(values: np.ndarray) -> np.ndarray:
    """D = #{i < j: v_i > v_j} over the last axis (a decrease has many discordant pairs)."""
    v = np.asarray(values, dtype=float)
    d = np.zeros(v.shape[:-1], dtype=np.int64)
    for lag in range(1, v.shape[-1]):
        d += (v[..., :-lag] > v[..., lag:]).sum(-1)
    return d


def ar1_series(n: int, phi: float, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` stationary Gaussian AR(1) series of length n, unit marginal variance: e_t = φ e_{t−1} + √(1 − φ²) z_t."""
    if not -1 < phi < 1:
        raise ValueError(f"ar1_series: φ must lie in (−1, 1), got {phi}")
    e = np.empty((size, n))
    e[:, 0] = rng.standard_normal(size)
    scale = np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        e[:, t] = phi * e[:, t - 1] + scale * rng.standard_normal(size)
    return e


_AR1_NULLS: dict[tuple[int, float], np.ndarray] = {}


def ar1_kendall_null(n: int, phi: float, draws: int = AR1_NULL_DRAWS) -> np.ndarray:
    """Sorted null sample of D (:func:`discordant_pairs`) for n points of AR(1) noise at ``phi`` and no trend,
    ``draws`` Monte Carlo series seeded by (n, φ): the same table on every call (cached)."""
    key = (int(n), round(float(phi), 6))
    if (key, draws) not in _AR1_NULLS:
        rng = np.random.default_rng([n, int(round(phi * 1e6)), draws])
        _AR1_NULLS[(key, draws)] = np.sort(discordant_pairs(ar1_series(n, phi, draws, rng)))
    return _AR1_NULLS[(key, draws)]


def phi_used(values: Sequence[float], phi0: float = PHI_MEASURED) -> float:
    """The φ a series is tested at: max(φ₀, its own detrended r₁) capped at PHI_CAP, rounded up to PHI_GRID."""
    phi = min(max(phi0, lag1_autocorrelation(values)), PHI_CAP)
    return float(np.ceil(phi / PHI_GRID - 1e-9) * PHI_GRID)


def kendall_trend_ar1(values: Sequence[float], phi0: float = PHI_MEASURED,
                      draws: int = AR1_NULL_DRAWS) -> tuple[float, float, float, float]:
    """(τ, p_decrease, p_increase, φ) of ``values`` against their index (C5 amendment, issue 30): Kendall's τ,
    its one-sided p-values from the Monte Carlo null of D under AR(1) noise at φ = :func:`phi_used`:
    p_decrease = (1 + #{D' ≥ D}) / (draws + 1), p_increase = (1 + #{D' ≤ D}) / (draws + 1)."""
    v = np.asarray(values, dtype=float)
    if len(v) < MIN_TREND_POINTS or not np.all(np.isfinite(v)):
        raise ValueError(f"kendall_trend_ar1: need at least {MIN_TREND_POINTS} finite values, got {len(v)}")
    phi = phi_used(v, phi0)
    null = ar1_kendall_null(len(v), phi, draws)
    d = int(discordant_pairs(v))
    pairs = len(v) * (len(v) - 1) // 2
    ge = len(null) - np.searchsorted(null, d, side="left")
    le = np.searchsorted(null, d, side="right")
    return (pairs - 2 * d) / pairs, (1 + ge) / (draws + 1), (1 + le) / (draws + 1), phi


def c5_ar1_rule(series: Mapping[str, Sequence[float]], phi0: float = PHI_MEASURED) -> Verdict:
    """:func:`c5_codes` on the AR(1)-adjusted Kendall trends (:func:`kendall_trend_ar1`) of the named series."""
    short = {k: len(v) for k, v in series.items() if len(v) < MIN_TREND_POINTS}
    if short:
        raise ValueError(f"c5_ar1_rule: series {short} have fewer than {MIN_TREND_POINTS} points; "
                         "record the curvature at more epochs")
    trends = np.array([kendall_trend_ar1(v, phi0)[:3] for v in series.values()])
    return verdict_of(c5_codes(trends[:, 1], trends[:, 2]))


# ----------------------------------------------------------------------------- C2 (issue 30): per network, with a control


def _shares(values: np.ndarray, threshold: float) -> np.ndarray:
    """Over the last axis: share of the finite values ≤ threshold (NaN where none is finite)."""
    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    count = finite.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, ((v <= threshold) & finite).sum(-1) / np.maximum(count, 1), np.nan)


def c2_network_codes(a_ggn: np.ndarray, a_control: np.ndarray | None, floor: float | np.ndarray,
                     threshold: float = TOP_THRESHOLD) -> np.ndarray:
    """One network's C2 code (issue-30 amendment), vectorised over all but the last axis (its readings):
    share of readings with a(G) ≤ threshold ≥ 0.75 → R, ≤ 0.25 → N, else I; inconclusive whatever G shows if
    the control (G of the far epoch against this epoch's Hess) passes in more than 25 % of readings or was
    not read, or the restart floor is not below the threshold. ``a_control=None`` (amendment of 2026-12-07, the
    primary rule): no control; inconclusive only where the restart floor is not below the threshold."""
    s_g = _shares(a_ggn, threshold)
    bad = ~(np.asarray(floor, dtype=float) < threshold)
    if a_control is not None:
        s_c = _shares(a_control, threshold)
        bad = bad | ~np.isfinite(s_c) | (s_c > SHARE_LOW)
    return np.where(bad, I, share_codes(s_g))


def all_of_codes(codes: Sequence[np.ndarray]) -> np.ndarray:
    """Element-wise "all_of" of code arrays: R if every part is R, N if any is N, else I."""
    c = np.stack([np.asarray(x) for x in codes])
    return np.where((c == R).all(0), R, np.where((c == N).any(0), N, I))


def far_epoch(epochs: Sequence[int], epoch: int) -> int:
    """The control's epoch for a reading at ``epoch``: of the other ``epochs``, the farthest (ties: the later)."""
    others = [e for e in epochs if e != epoch]
    if not others:
        raise ValueError(f"far_epoch: the run needs G at a second epoch besides {epoch} for C2's control; "
                         "record G and H at more epochs")
    return max(others, key=lambda e: (abs(e - epoch), e))


def c2_network_rule(readings: Mapping[str, tuple[Sequence[float], Sequence[float], float]],
                    deciding: Sequence[str], control: bool = False) -> tuple[Verdict, dict[str, Verdict]]:
    """C2 (issue-30 amendment): per network (a(G) readings, control readings, restart floor) →
    :func:`c2_network_codes`; the claim's verdict combines the ``deciding`` networks (the paper's ReLU nets) with
    "all_of"; the other networks get a verdict of their own that never decides (extensions). ``control``: the
    far-epoch control gates the verdict (the superseded issue-30 rule); by default (amendment of 2026-12-07) it
    does not."""
    if not set(deciding) <= set(readings):
        raise ValueError(f"c2_network_rule: deciding networks {sorted(set(deciding) - set(readings))} have no readings")
    per = {k: verdict_of(c2_network_codes(np.asarray(g, dtype=float), np.asarray(c, dtype=float) if control else None,
                                          f))
           for k, (g, c, f) in readings.items()}
    return combine([per[k] for k in deciding], "all_of"), per


# ----------------------------------------------------------------------------- C1 / C3(a) (issue 30): class directions

CLASS_MASS = 0.6          # a top eigenvector is a class direction if more than 60 % of its mass lies in the class-mean span
                          # (at 0.5, class directions near the bulk split their mass over several eigenvectors and a
                          # network with C − 3 class directions read "about C" 13 % of the time in LeNet-GELU's fit)


def class_direction_count(overlaps: Sequence[float], mass: float = CLASS_MASS,
                          eigenvalues: Sequence[float] | None = None, edge: float | None = None) -> int:
    """k_cls: how many of the top Hessian Ritz vectors (their squared projections on the class-mean span,
    ``overlaps``, the top 2C of a reading) have more than ``mass`` of their squared norm in the span and, where
    ``eigenvalues`` (their Ritz values) and ``edge`` are given (amendment of 2026-12-07), a Ritz value above
    ``edge``, the edge of G_within's continuous part (:func:`within_continuous_edge`)."""
    o = np.asarray(overlaps, dtype=float)
    if len(o) == 0 or not np.all(np.isfinite(o)) or (o < -1e-9).any() or (o > 1 + 1e-9).any():
        raise ValueError(f"class_direction_count: need per-vector overlaps in [0, 1], got {list(o)}; take the class "
                         "reading again (its per-vector overlaps are new in issue 30)")
    if (eigenvalues is None) != (edge is None):
        raise ValueError("class_direction_count: give both the Ritz values and the edge, or neither")
    if eigenvalues is None:
        return int(np.sum(o > mass))
    ev = np.asarray(eigenvalues, dtype=float)
    if len(ev) < len(o) or not np.all(np.isfinite(ev[:len(o)])) or np.isnan(edge):
        raise ValueError(f"class_direction_count: need a finite Ritz value per overlap ({len(o)}) and a finite edge, "
                         f"got {len(ev)} values and edge {edge}; take the class reading again")
    return int(np.sum((o > mass) & (ev[:len(o)] > edge)))


def within_continuous_edge(within_top: Sequence[float], C: int) -> float:
    """The edge of G_within's continuous part (amendment of 2026-12-07): λ_{C+1}(G_within), its (C+1)-th largest
    Ritz value. Up to C within-class outliers (as many as the claim allows the Hessian) are set aside, so one
    or a few strong within-class directions cannot mask the class directions, as λ_max(G_within) did."""
    w = np.sort(np.asarray(within_top, dtype=float))[::-1]
    if len(w) < C + 1 or not np.all(np.isfinite(w[:C + 1])):
        raise ValueError(f"within_continuous_edge: need at least C + 1 = {C + 1} finite Ritz values of G_within, got "
                         f"{len(w)}; take the class reading again with at least {C + 1} Lanczos steps")
    return float(w[C])


def about_c_class_codes(k: np.ndarray | int, C: int) -> np.ndarray:
    """C1 / C3 (a) on k_cls (amendment of 2026-12-07): R if C − 2 ≤ k ≤ C + 2; N if k < C/2; else I. There is no
    "k > 2C" branch: 2C orthonormal vectors hold at most C of mass in a C-dimensional span, so at most
    C / CLASS_MASS < 2C of them can hold more than CLASS_MASS each."""
    k = np.asarray(k)
    return np.where((k >= C - 2) & (k <= C + 2), R, np.where(k < C / 2, N, I))


def c1_class_rule(counts: Mapping[str, int], C: int) -> Verdict:
    """C1 (issue-30 amendment, 2026-12-07 codes): per network :func:`about_c_class_codes` on k_cls
    (:func:`class_direction_count`); networks combined with "all_of"."""
    return combine([verdict_of(about_c_class_codes(k, C)) for k in counts.values()], "all_of")


def c3_class_rule(layer_counts: Sequence[int], C: int, gelu_disagreements: Sequence[float],
                  threshold: float = TOP_THRESHOLD) -> Verdict:
    """C3 (issue-30 amendment, 2026-12-07 codes): :func:`c3_rule` with (a) the share of layer blocks whose k_cls
    is about C (:func:`about_c_class_codes`) instead of the count above the layer's λ_max(G_l,within)."""
    k = np.asarray(layer_counts)
    s_a = float(np.mean(about_c_class_codes(k, C) == R)) if len(k) else float("nan")
    s_b = _share_below(gelu_disagreements, threshold)
    return combine([verdict_of(share_codes(s_a)), verdict_of(share_codes(s_b))], "all_of")


# ----------------------------------------------------------------------------- C4 (issue 30): depth regression

C4_STATED_RATIO = 6.0     # the depth effect C4's amended design is powered for (PROTOCOL.md): W1 at either end of the
                          # network (|d − 1/2| = 1/2) is this many times W1 at its centre, at equal size share


def normalised_depth(num_layers: int) -> np.ndarray:
    """d_i = (i + 0.5) / L, the normalised depth of each layer's centre."""
    if num_layers < 2:
        raise ValueError(f"normalised_depth: need at least 2 layers, got {num_layers}")
    return (np.arange(num_layers) + 0.5) / num_layers


def symmetric_middle(num_layers: int) -> np.ndarray:
    """The symmetric middle half: 0.25 ≤ d_i ≤ 0.75 (LeNet's 5 layers: conv2, fc1, fc2; VGG11's 9: layers 2–6)."""
    d = normalised_depth(num_layers)
    return (d >= 0.25 - 1e-12) & (d <= 0.75 + 1e-12)


def normalised_w1(nodes_a: np.ndarray, weights_a: np.ndarray, nodes_b: np.ndarray, weights_b: np.ndarray) -> float:
    """W1 after each measure's eigenvalues are divided by its own largest |eigenvalue|: a scale-free distance, shown
    beside the raw W1 as the paper's normalised variant (its min–max transform removes the scale)."""
    xa, xb = np.asarray(nodes_a, dtype=float), np.asarray(nodes_b, dtype=float)
    sa, sb = np.max(np.abs(xa)), np.max(np.abs(xb))
    if not (sa > 0 and sb > 0):
        raise ValueError("normalised_w1: a measure with every eigenvalue at zero has no scale to normalise by")
    return w1_atoms(xa / sa, weights_a, xb / sb, weights_b)


def _depth_design(sizes: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Design of the depth regression over the networks' layers: X = (one intercept per network, log size share
    log(n_ki / N_k), |d_i − 1/2|), and the |d − 1/2| column."""
    blocks, share, dist = [], [], []
    for s in sizes:
        s = np.asarray(s, dtype=float)
        if s.ndim != 1 or len(s) < 3 or (s <= 0).any():
            raise ValueError(f"C4 depth regression: every network needs 3 or more layers of positive size, got {list(s)}")
        blocks.append(len(s))
        share.append(np.log(s / s.sum()))
        dist.append(np.abs(normalised_depth(len(s)) - 0.5))
    intercepts = np.zeros((sum(blocks), len(blocks)))
    start = 0
    for k, n in enumerate(blocks):
        intercepts[start:start + n, k] = 1.0
        start += n
    z = np.concatenate(dist)
    X = np.column_stack([intercepts, np.concatenate(share), z])
    if np.linalg.matrix_rank(X) < X.shape[1] or X.shape[0] - X.shape[1] < 2:
        raise ValueError("C4 depth regression: depth and size are confounded or too few layers; add a network")
    return X, z


def c4_depth_test(log_w1: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]],
                  ratio: float = C4_STATED_RATIO) -> dict[str, float]:
    """The depth regression of C4's amendment (issue 30), one row per real layer of every network k:
    log W1_ki = α_k + b log(n_ki / N_k) + c |d_i − 1/2| + e_ki, e iid N(0, σ²) (``log_w1[k]``: each layer's log W1 to
    the full spectrum, averaged over the epochs read; ``sizes[k]``: its layers' sizes). Ordinary least squares;
    p_R = P(t_df ≥ ĉ / se) tests c > 0 (distance grows away from the middle), p_N = P(t_df ≤ (ĉ − c₁) / se) tests
    c < c₁ = 2 ln(``ratio``) (an effect as large as the stated one is excluded); exact under the model.
    Returns ĉ, se, the residual sd, df, p_R, p_N and ĉ's end-to-centre ratio exp(ĉ / 2)."""
    X, _ = _depth_design(sizes)
    y = np.concatenate([np.asarray(v, dtype=float) for v in log_w1])
    if len(y) != X.shape[0] or not np.all(np.isfinite(y)):
        raise ValueError("c4_depth_test: need one finite log W1 per layer of every network")
    if not ratio > 1:
        raise ValueError(f"c4_depth_test: the stated end-to-centre ratio must exceed 1, got {ratio}")
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    df = X.shape[0] - X.shape[1]
    sd = float(np.sqrt(np.sum((y - X @ beta) ** 2) / df))
    se = sd * float(np.sqrt(np.linalg.inv(X.T @ X)[-1, -1]))
    c = float(beta[-1])
    c1 = 2 * np.log(ratio)
    p_r = float(stats.t.sf(c / se, df)) if se > 0 else float(c <= 0)
    p_n = float(stats.t.cdf((c - c1) / se, df)) if se > 0 else float(c >= c1)
    return {"c": c, "se": se, "residual_sd": sd, "df": df, "p_R": p_r, "p_N": p_n, "ratio": float(np.exp(c / 2))}


def c4_depth_partial(log_w1: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]]) -> dict[str, Any]:
    """The fit of :func:`c4_depth_test` taken apart for a figure: per network the layers' |d − 1/2| and partial
    residuals log W1_ki − α̂_k − b̂ log(n_ki / N_k) (= ĉ |d_i − 1/2| + residual), with b̂ and ĉ."""
    X, z = _depth_design(sizes)
    y = np.concatenate([np.asarray(v, dtype=float) for v in log_w1])
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    partial = y - X[:, :-1] @ beta[:-1]
    bounds = np.cumsum([0, *[len(s) for s in sizes]])
    return {"b": float(beta[-2]), "c": float(beta[-1]),
            "z": [z[a:e].tolist() for a, e in zip(bounds[:-1], bounds[1:])],
            "partial": [partial[a:e].tolist() for a, e in zip(bounds[:-1], bounds[1:])]}


def c4_depth_codes(p_reproduced: np.ndarray | float, p_not: np.ndarray | float, alpha: float = ALPHA) -> np.ndarray:
    """R if p_R < alpha, N if p_N < alpha (and not R), else I."""
    p_r, p_n = np.asarray(p_reproduced, dtype=float), np.asarray(p_not, dtype=float)
    return np.where(p_r < alpha, R, np.where(p_n < alpha, N, I))


def c4_depth_rule(log_w1: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]],
                  ratio: float = C4_STATED_RATIO) -> Verdict:
    """C4's verdict under the issue-30 amendment: :func:`c4_depth_codes` of :func:`c4_depth_test`."""
    t = c4_depth_test(log_w1, sizes, ratio)
    return verdict_of(c4_depth_codes(t["p_R"], t["p_N"]))


# ----------------------------------------------------------------------------- C4 amendment 6: normalised, own noise

C4_NORMALISED_RATIO = 3.0  # amendment 6's stated effect: normalised W1 at either end is 3 × that at the centre
C4_MIN_POWER = 0.5         # below this power at the stated effect (at the readings' own noise) the design cannot decide


def c4_decision_region(se: float, df: int, ratio: float = C4_NORMALISED_RATIO, alpha: float = ALPHA) -> dict[str, float]:
    """The end-to-centre ratios exp(ĉ / 2) that decide, given ĉ's standard error ``se`` on ``df`` degrees of freedom:
    reproduced needs exp(ĉ/2) ≥ exp(t_{1−α} se / 2), not reproduced needs exp(ĉ/2) ≤ exp((2 ln ratio − t_{1−α} se) / 2);
    in between (when the first exceeds the second) the verdict is inconclusive."""
    t = float(stats.t.ppf(1 - alpha, df))
    return {"R_if_ratio_at_least": float(np.exp(t * se / 2)),
            "N_if_ratio_at_most": float(np.exp((2 * np.log(ratio) - t * se) / 2))}


def c4_power_at(se: float, df: int, ratio: float = C4_NORMALISED_RATIO, alpha: float = ALPHA) -> float:
    """P(p_R < α) when the true c is 2 ln ``ratio`` and ĉ / se follows a noncentral t_df (the design's power at that
    effect at the noise ``se`` implies)."""
    if not se > 0:
        return 1.0
    return float(stats.nct.sf(stats.t.ppf(1 - alpha, df), df, 2 * np.log(ratio) / se))


def c4_normalised_test(log_w1: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]],
                       ratio: float = C4_NORMALISED_RATIO, min_power: float = C4_MIN_POWER) -> dict[str, Any]:
    """C4 under amendment 6: :func:`c4_depth_test` on each layer's log *normalised* W1 (noise σ̂ = the regression's own
    residual sd, df = layers − networks − 2), its power at the stated ``ratio`` at that σ̂ (:func:`c4_power_at`) and its
    decision region (:func:`c4_decision_region`). ``code``: I (with ``underpowered``) if the power is below
    ``min_power``; else R if p_R < α, N if p_N < α, I otherwise."""
    t = c4_depth_test(log_w1, sizes, ratio)
    power = c4_power_at(t["se"], t["df"], ratio)
    underpowered = power < min_power
    code = I if underpowered else int(c4_depth_codes(t["p_R"], t["p_N"]))
    return {**t, "power": power, "underpowered": bool(underpowered), "code": int(code),
            **c4_decision_region(t["se"], t["df"], ratio)}


def c4_normalised_rule(log_w1: Sequence[Sequence[float]], sizes: Sequence[Sequence[int]],
                       ratio: float = C4_NORMALISED_RATIO) -> Verdict:
    """C4's verdict under amendment 6 (inconclusive when underpowered): see :func:`c4_normalised_test`."""
    return verdict_of(c4_normalised_test(log_w1, sizes, ratio)["code"])
