"""Error rates of the C6a, C6b and C7 rules by simulation (PROTOCOL.md): how often each verdict comes out
when the claim is false and when it holds at the paper's effect size.

Every function draws synthetic measurements under stated assumptions and applies the rule's own
implementation (:mod:`htr_utils.study.regularisation_rules`) to them, so a rule cannot be
calibrated in one form and applied in another.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist

from .depth_trends import is_middle
from .regularisation_rules import (EQUIVALENCE_MARGIN, I, N, R, c6a_codes, c6b_codes, c7_accuracy_codes)
from .spectra_rules import (ALPHA, about_c_codes, by_network, c4_amendment1_codes, c4_classify, c4_codes, c4_null_upper,
                            c5_codes, majorities, network_bound, w1_atoms)
from .statistics import bootstrap_ranks, partial_rank_correlation


def _rates(codes: np.ndarray) -> dict[str, float]:
    return {"P(reproduced)": float((codes == R).mean()), "P(not reproduced)": float((codes == N).mean()),
            "P(inconclusive)": float((codes == I).mean())}


def paired_intervals(effects: np.ndarray, sd: float, n: int, reps: int, rng: np.random.Generator,
                     corr: float = 0.0, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Simulated paired t intervals (lo, hi), shape (reps, k), for k comparisons with true mean ``effects``.

    Each comparison's n per-seed differences are N(effect, sd²); two comparisons' differences at
    the same seed have correlation ``corr`` (they share the seed's initialisation and data order).
    """
    effects = np.atleast_1d(np.asarray(effects, dtype=float))
    k = len(effects)
    cov = sd ** 2 * (corr * np.ones((k, k)) + (1 - corr) * np.eye(k))
    d = rng.multivariate_normal(effects, cov, size=(reps, n))  # (reps, n, k)
    mean, s = d.mean(1), d.std(1, ddof=1)
    half = t_dist.ppf(0.5 + level / 2, n - 1) * s / np.sqrt(n)
    return mean - half, mean + half


def c6b_rates(effect: float, sd: float, n: int, reps: int = 20000, seed: int = 0, corr: float = 0.0,
              margin: float = EQUIVALENCE_MARGIN) -> dict[str, float]:
    """Verdict frequencies of :func:`c6b_codes` when both comparisons have true paired effect ``effect``."""
    lo, hi = paired_intervals(np.full(2, effect), sd, n, reps, np.random.default_rng(seed), corr)
    return _rates(c6b_codes(lo, hi, margin))


def c7_accuracy_rates(effect: float, sd: float, n: int, margin: float, reps: int = 20000,
                      seed: int = 0) -> dict[str, float]:
    """Verdict frequencies of :func:`c7_accuracy_codes` when middle − full HTR has true paired effect ``effect``."""
    lo, hi = paired_intervals(np.array([effect]), sd, n, reps, np.random.default_rng(seed))
    return _rates(c7_accuracy_codes(lo[:, 0], hi[:, 0], margin))


def simulate_sweep(partial_rho: float, settings: int, seeds: int, reps: int, rng: np.random.Generator,
                   seed_noise: float = 0.5) -> dict[str, np.ndarray]:
    """Synthetic C6a sweeps, shape (reps, settings·seeds): training loss, trace, test accuracy and gap.

    Per setting (standardised units): training loss L ~ N(0, 1); trace = 0.7 L + √0.51 u; test
    accuracy = −0.7 L + ρ u + √(1 − ρ²) w, so that given L the trace and test accuracy have
    correlation ``partial_rho`` (ρ < 0: the claim; 0: the trace says nothing beyond how far
    training got); train accuracy = −0.7 L + 0.3 v. Each seed adds N(0, seed_noise²) to every
    quantity. The gap is train − test accuracy.
    """
    shape = (reps, settings)
    L, u, w, v = (rng.standard_normal(shape) for _ in range(4))
    per_seed = lambda x: np.repeat(x, seeds, axis=1) + seed_noise * rng.standard_normal((reps, settings * seeds))  # noqa: E731
    loss, trace = per_seed(L), per_seed(0.7 * L + np.sqrt(0.51) * u)
    test = per_seed(-0.7 * L + partial_rho * u + np.sqrt(1 - partial_rho ** 2) * w)
    train = per_seed(-0.7 * L + 0.3 * v)
    return {"loss": loss, "trace": trace, "test_acc": test, "gap": train - test}


def c6a_rates(partial_rho: float, settings: int = 7, seeds: int = 3, reps: int = 400, boot: int = 400,
              seed: int = 0, level: float = 0.95, seed_noise: float = 0.3) -> dict[str, float]:
    """Verdict frequencies of :func:`c6a_codes` with cluster-bootstrap intervals on :func:`simulate_sweep` data."""
    rng = np.random.default_rng(seed)
    sim = simulate_sweep(partial_rho, settings, seeds, reps, rng, seed_noise)
    members = np.arange(settings * seeds).reshape(settings, seeds)
    idx = members[rng.integers(0, settings, (boot, settings))].reshape(boot, -1)  # same resamples for every rep
    q = [(1 - level) / 2, (1 + level) / 2]
    bounds = {}
    r_trace, r_loss = bootstrap_ranks(sim["trace"], idx), bootstrap_ranks(sim["loss"], idx)   # = rankdata(v[:, idx])
    for col in ("test_acc", "gap"):
        rho = partial_rank_correlation(r_trace, bootstrap_ranks(sim[col], idx), r_loss)  # (reps, boot)
        bounds[col] = np.nanquantile(rho, q, axis=1)
    return _rates(c6a_codes(bounds["test_acc"][0], bounds["test_acc"][1], bounds["gap"][0], bounds["gap"][1]))


def regularisation_calibration(sd: float, n: int, gain: float = EQUIVALENCE_MARGIN, reps: int = 20000,
                               sweep_reps: int = 400, sweep_settings: int = 7, sweep_seeds: int = 3,
                               rules: tuple[str, ...] = ("C6b", "C7", "C6a")) -> pd.DataFrame:
    """One row per (rule, scenario): the rule's verdict frequencies by simulation.

    C6b at true effects 0 (claim false) and ``gain`` (the paper's +0.1 points), comparisons
    independent and correlated 0.5; also the old 3-seed design. C7 accuracy with margin gain/2 at
    middle − full = 0 (claim holds), −gain/2 (on the margin) and −gain (false). C6a at partial ρ
    0 (false) and −0.5 (holds). ``rules``: which of the three to simulate.
    """
    rows = []
    for e, label in ((0.0, "false (no effect)"), (gain, "holds (paper's +0.1 pt)")) if "C6b" in rules else ():
        for corr in (0.0, 0.5):
            rows.append({"rule": "C6b", "scenario": f"{label}, corr {corr:g}", "n": n, "sd (pts)": 100 * sd,
                         **c6b_rates(e, sd, n, reps, corr=corr)})
        rows.append({"rule": "C6b (3 seeds)", "scenario": f"{label}, corr 0", "n": 3, "sd (pts)": 100 * sd,
                     **c6b_rates(e, sd, 3, reps)})
    for e, label in ((0.0, "holds (middle = full)"), (-gain / 2, "on the margin"),
                     (-gain, "false (loses the gain)")) if "C7" in rules else ():
        rows.append({"rule": "C7 accuracy", "scenario": label, "n": n, "sd (pts)": 100 * sd,
                     **c7_accuracy_rates(e, sd, n, gain / 2, reps)})
    for rho, label in ((0.0, "false (ρ = 0 given loss)"), (-0.5, "holds (ρ = −0.5 given loss)"),
                       (0.5, "opposite (ρ = +0.5)")) if "C6a" in rules else ():
        rows.append({"rule": "C6a", "scenario": label, "n": sweep_settings * sweep_seeds, "sd (pts)": np.nan,
                     **c6a_rates(rho, sweep_settings, sweep_seeds, sweep_reps)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- spectra claims (C1, C4, C5)


Network = tuple[float, float, int]  # C4: a network's null (p_mid, p_out) per reading and its number of readings


def _c4_outcomes(design: Sequence[Network], truth: Sequence[tuple[float, float]] | None) -> list[tuple[float, float]]:
    return [(pm, po) for pm, po, _ in design] if truth is None else list(truth)


def _c4_bounds(design: Sequence[Network]) -> tuple[float, float]:
    return network_bound([[pm] * e for pm, _, e in design]), network_bound([[po] * e for _, po, e in design])


def c4_rates(design: Sequence[Network], truth: Sequence[tuple[float, float]] | None = None, dependent: bool = False,
             sims: int = 20000, seed: int = 0) -> dict[str, float]:
    """C4's rule (amendments 3-4) on simulated readings. ``design``: per network (p_mid, p_out, readings), the
    size-matched null rates of each of its readings and how many there are. ``truth``: per network the
    probabilities that a reading is "middle" / "outer" (None: the null itself, i.e. size explains everything).
    ``dependent``: all readings of a network share one outcome.
    """

    rng = np.random.default_rng(seed)
    all_mid, all_out = np.ones(sims, dtype=bool), np.ones(sims, dtype=bool)
    for (_, _, epochs), (tm, to) in zip(design, _c4_outcomes(design, truth)):
        draws = 1 if dependent else epochs
        u = rng.random((sims, draws))
        mid, out = u < tm, (u >= tm) & (u < tm + to)
        all_mid &= mid.sum(1) > draws / 2
        all_out &= out.sum(1) > draws / 2
    return _rates(c4_codes(all_mid, all_out, *_c4_bounds(design)))


def c4_exact_rates(design: Sequence[Network], truth: Sequence[tuple[float, float]] | None = None,
                   dependent: bool = False) -> dict[str, float]:
    """The exact verdict frequencies that :func:`c4_rates` estimates (same arguments): the rule says R when every
    network is mostly "middle" and the null bound allows it, so P(R) = ∏_k P(network k mostly middle) or 0."""
    from scipy.stats import binom


    bound_mid, bound_out = _c4_bounds(design)
    p_all_mid, p_all_out = 1.0, 1.0
    for (_, _, epochs), (tm, to) in zip(design, _c4_outcomes(design, truth)):
        if dependent:
            p_all_mid, p_all_out = p_all_mid * tm, p_all_out * to
        else:
            m = epochs // 2 + 1
            p_all_mid *= float(binom.sf(m - 1, epochs, tm))
            p_all_out *= float(binom.sf(m - 1, epochs, to))
    rep = p_all_mid if bound_mid < ALPHA else 0.0
    nrep = p_all_out if bound_out < ALPHA else 0.0
    return {"P(reproduced)": rep, "P(not reproduced)": nrep, "P(inconclusive)": 1.0 - rep - nrep}


def c4_smallest_p(design: Sequence[Network]) -> float:
    """The smallest null bound C4's rule can reach on ``design`` (:func:`htr_utils.study.spectra_rules.network_bound`
    of the p_mid): at or above 0.05 the design cannot reproduce C4, whatever the readings say."""
    return _c4_bounds(design)[0]


MODEL_COLUMNS = 15_000  # C4's generative model keeps at most about this many parameters


def model_sizes(layer_sizes: Sequence[int]) -> tuple[int, ...]:
    """A network's layer sizes scaled for C4's Gauss–Newton model: divided by max(10, total / 15 000), at least 1
    each (LeNet: 150, 2400, 48000, 10080, 840 weights → 15, 240, 4800, 1008, 84)."""
    sizes = np.asarray(layer_sizes, dtype=float)
    if sizes.ndim != 1 or len(sizes) < 2 or (sizes < 1).any():
        raise ValueError(f"model_sizes: need two or more positive layer sizes, got {list(layer_sizes)}")
    divisor = max(10.0, float(np.ceil(sizes.sum() / MODEL_COLUMNS)))
    return tuple(int(max(1, round(n / divisor))) for n in sizes)


def _gn_measure(J: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spectral measure of (J Pᵀ)ᵀ(J Pᵀ) restricted to ``cols``: the nonzero eigenvalues of J_S J_Sᵀ plus the zero mass."""
    Js = J[:, cols]
    ev = np.clip(np.linalg.eigvalsh(Js @ Js.T), 0.0, None)[-min(len(cols), J.shape[0]):]
    n = len(cols)
    return np.concatenate([ev, [0.0]]), np.concatenate([np.full(len(ev), 1.0 / n), [(n - len(ev)) / n]])


def c4_model_reading(sizes: Sequence[int], rng: np.random.Generator, scale_sd: float = 1.0, middle_scale: float | None = None,
                     rows: int = 90, C: int = 10, subsets: int = 5) -> tuple[np.ndarray, list[np.ndarray]]:
    """One simulated C4 reading in a Gauss–Newton model: G = JᵀJ, J (``rows`` examples × classes, with class
    means) × parameters, each layer's columns scaled by exp(scale_sd · N(0, 1)) drawn independently (layers
    exchangeable: no depth effect), or, with ``middle_scale``, the middle-half layers at that scale (a depth
    effect). Returns the exact W1 of every layer to the full measure and, per layer, the W1 of ``subsets``
    random coordinate subsets of its size."""

    sizes = np.asarray(sizes)
    L, N = len(sizes), int(sizes.sum())
    scales = np.exp(scale_sd * rng.standard_normal(L))
    if middle_scale is not None:
        scales[[is_middle(i, L) for i in range(L)]] = middle_scale
    labels = np.repeat(np.arange(C), rows // C)
    J = (rng.standard_normal((C, N))[labels] + rng.standard_normal((len(labels), N))) * np.repeat(scales, sizes) / np.sqrt(N)
    full = _gn_measure(J, np.arange(N))
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    layer_w1 = np.array([w1_atoms(*_gn_measure(J, np.arange(bounds[i], bounds[i + 1])), *full) for i in range(L)])
    null = [np.array([w1_atoms(*_gn_measure(J, np.sort(rng.choice(N, n, replace=False))), *full) for _ in range(subsets)])
            for n in sizes]
    return layer_w1, null


def c4_model_readings(sizes: Sequence[int], reps: int, seed: int = 0, floor_ratio: float = 0.0,
                      **kw) -> list[tuple[str, float, float]]:
    """``reps`` simulated readings of a network with these layer ``sizes`` (:func:`model_sizes` of the real
    network's): (label, p_mid, p_out) each, labelled and judged against its own size-matched null exactly as the
    real readings are (upper 95 % limits of the null rates, :func:`htr_utils.study.spectra_rules.c4_null_upper`).
    The spectra are exact, so the noise floor is set to ``floor_ratio`` × the median W1 of the reading's random
    subsets (the real readings' "floor / null"; 0: no floor)."""

    rng = np.random.default_rng(seed)
    out = []
    for r in range(reps):
        w1, null = c4_model_reading(sizes, rng, **kw)
        floor = floor_ratio * float(np.median(np.concatenate(null)))
        out.append((c4_classify(w1, floor), *c4_null_upper(null, floor, seed=r)))
    return out


def c4_model_rates(pools: Sequence[Sequence[tuple[str, float, float]]], epochs: Sequence[int], dependent: bool = False,
                   studies: int = 4000, seed: int = 0, amendment1_shares: Sequence[float] | None = None
                   ) -> dict[str, float]:
    """C4's rule on studies assembled from simulated readings: network k's ``epochs[k]`` readings drawn from
    ``pools[k]`` (independent) or one reading repeated (``dependent``). ``amendment1_shares``: judge them instead
    by amendment 1's superseded tally, with these middle shares of the networks' layers."""

    rng = np.random.default_rng(seed)
    codes = []
    for _ in range(studies):
        labels, p_mid, p_out, nets = [], [], [], []
        for k, (pool, e) in enumerate(zip(pools, epochs)):
            picks = [rng.integers(len(pool))] * e if dependent else rng.integers(len(pool), size=e)
            for j in picks:
                lab, pm, po = pool[j]
                labels.append(lab), p_mid.append(pm), p_out.append(po), nets.append(k)
        all_mid, all_out = majorities(labels, nets)
        if amendment1_shares is not None:
            p0 = float(np.mean([amendment1_shares[k] for k in nets]))
            codes.append(int(c4_amendment1_codes(labels.count("middle"), labels.count("outer"), len(labels), p0,
                                                 all_mid, all_out)))
            continue
        codes.append(int(c4_codes(all_mid, all_out, network_bound(by_network(p_mid, nets)),
                                  network_bound(by_network(p_out, nets)))))
    return _rates(np.array(codes))


def kendall_null(n: int) -> np.ndarray:
    """Exact null distribution of the number D of discordant pairs (inversions) of n untied points against their
    index: element d is P(D = d), d = 0 … n(n − 1)/2 (Mahonian numbers / n!, built one point at a time)."""
    dist = np.ones(1)
    for m in range(2, n + 1):
        dist = np.convolve(dist, np.full(m, 1.0 / m))
    return dist


def kendall_exact(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Kendall τ against the index with exact one-sided p-values (decrease, increase), vectorised over all but the
    last axis of ``values`` (untied series, e.g. with continuous noise).

    The same numbers as :func:`htr_utils.study.spectra_rules.kendall_trend` (a test checks it) without one
    scipy call per series: D = number of pairs i < j with v_i > v_j, p_decrease = P(D' ≥ D),
    p_increase = P(D' ≤ D) under the exact null :func:`kendall_null`.
    """
    v = np.asarray(values, dtype=float)
    n = v.shape[-1]
    pairs = n * (n - 1) // 2
    d = np.zeros(v.shape[:-1], dtype=int)
    for lag in range(1, n):
        d += (v[..., :-lag] > v[..., lag:]).sum(-1)
    null = kendall_null(n)
    cdf = np.cumsum(null)
    sf = np.cumsum(null[::-1])[::-1]
    return (pairs - 2 * d) / pairs, np.minimum(sf[d], 1.0), np.minimum(cdf[d], 1.0)


def expected_tau(n: int, slope: float) -> float:
    """E[Kendall τ] of slope · i + ε_i, i = 0 … n − 1, ε iid N(0, 1): the mean over pairs i < j of
    2 Φ(slope (j − i) / √2) − 1 (exact for Gaussian noise)."""
    from scipy.stats import norm

    lag = np.arange(1, n)
    return float(np.sum((n - lag) * (2 * norm.cdf(slope * lag / np.sqrt(2)) - 1)) / (n * (n - 1) / 2))


def slope_for_tau(n: int, tau: float) -> float:
    """The slope per step (in noise standard deviations) at which :func:`expected_tau` equals ``tau`` (−1 < τ < 1)."""
    from scipy.optimize import brentq

    if not -1 < tau < 1:
        raise ValueError(f"slope_for_tau: τ must lie in (−1, 1), got {tau}")
    if tau == 0:
        return 0.0
    bound = 1.0
    while abs(expected_tau(n, np.sign(tau) * bound)) < abs(tau):
        bound *= 2
    return float(brentq(lambda s: expected_tau(n, s) - tau, -bound, bound, xtol=1e-12))


def simulate_trends(lengths: list[int], slopes: list[float], sims: int, rng: np.random.Generator,
                    chunk: int = 5000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """τ, p_decrease, p_increase (each of shape (sims, series)) of series slope · i + N(0, 1) noise, one per length."""
    tau, p_dec, p_inc = (np.empty((sims, len(lengths))) for _ in range(3))
    for j, (n, slope) in enumerate(zip(lengths, slopes)):
        trend = slope * np.arange(n)
        for start in range(0, sims, chunk):
            stop = min(start + chunk, sims)
            tau[start:stop, j], p_dec[start:stop, j], p_inc[start:stop, j] = kendall_exact(
                trend + rng.standard_normal((stop - start, n)))
    return tau, p_dec, p_inc


def c5_rates(lengths: list[int], tau_effect: float | None = None, sims: int = 20000, seed: int = 0,
             snr: float | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """C5's rule (:func:`c5_codes`) on simulated series of the given lengths (one per series the rule judges;
    cpu: λ_max and trace of three networks, 50, 50, 50, 50, 10, 10 points); one row per scenario.

    Scenarios: no trend (iid N(0, 1) noise, the null), then a linear decrease plus the same noise in every
    series, either of expected Kendall τ = ``tau_effect`` in every series (default: −0.3 and −0.5; the slope
    differs with the length, :func:`slope_for_tau`), or, with ``snr`` given, a total decrease over the series
    of ``snr`` noise standard deviations. Series are independent (the protocol's calibration assumption);
    p-values are exact (:func:`kendall_exact`). Columns: the scenario, each length's expected τ, the share
    of series decreasing significantly, P(reproduced), P(not reproduced), P(inconclusive).
    """

    rng = np.random.default_rng(seed)
    scenarios: list[tuple[str, list[float]]] = [("no trend", [0.0] * len(lengths))]
    if snr is not None:
        scenarios.append((f"decrease of {snr:g} noise sd over the series", [-snr / (n - 1) for n in lengths]))
    else:
        for tau in ([tau_effect] if tau_effect is not None else [-0.3, -0.5]):
            scenarios.append((f"decrease, E[τ] = {tau:g}", [slope_for_tau(n, tau) for n in lengths]))
    rows = []
    for label, slopes in scenarios:
        _, p_dec, p_inc = simulate_trends(lengths, slopes, sims, rng)
        taus = {f"E[τ] (n = {n})": round(expected_tau(n, s), 3) for n, s in sorted(set(zip(lengths, slopes)))}
        rows.append({"scenario": label, "series": len(lengths), **taus,
                     "share of series decreasing": float((p_dec < alpha).mean()),
                     **_rates(c5_codes(p_dec, p_inc, alpha))})
    return pd.DataFrame(rows)


def c5_null_rates(lengths: list[int], alpha: float = 0.05) -> dict[str, float]:
    """Exact verdict frequencies of C5's rule with no trend in any series (independent series):
    P(reproduced) = Π P(p_decrease < α), P(not reproduced) = 1 − Π (1 − P(p_increase < α / series))."""
    m = len(lengths)
    p_r, p_not_n = 1.0, 1.0
    for n in lengths:
        null = kendall_null(n)
        p_dec = np.cumsum(null[::-1])[::-1]          # P(D' ≥ d) for d = 0 … n(n−1)/2
        p_inc = np.cumsum(null)                      # P(D' ≤ d)
        p_r *= float(null[p_dec < alpha].sum())
        p_not_n *= 1 - float(null[p_inc < alpha / m].sum())
    return {"P(reproduced)": p_r, "P(not reproduced)": 1 - p_not_n, "P(inconclusive)": p_not_n - p_r}


def min_detectable_tau(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |τ| a one-sided Kendall test of n points detects with the given power (normal approximation,
    var(τ) = 2(2n + 5) / (9 n (n − 1)) under the null; conservative, since τ varies less under a trend —
    :func:`trend_power` gives the exact test's power by simulation)."""
    from scipy.stats import norm

    sd = np.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    return float((norm.ppf(1 - alpha) + norm.ppf(power)) * sd)


def trend_power(n: int, tau: float, alpha: float = 0.05, sims: int = 20000, seed: int = 0) -> float:
    """P(exact one-sided p_decrease < alpha) for one series of n points, linear trend of expected τ = ``tau`` < 0
    plus N(0, 1) noise."""
    _, p_dec, _ = simulate_trends([n], [slope_for_tau(n, tau)], sims, np.random.default_rng(seed))
    return float((p_dec < alpha).mean())


def c1_rates(dim: int = 300, n_examples: int = 200, C: int = 10,
             spike_strengths: tuple[float, ...] = (0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 1.0, 2.0),
             sims: int = 200, seed: int = 0) -> pd.DataFrame:
    """C1's count rule on a spiked model of per-example gradient vectors; one row per class-mean strength.

    g = m_y + ε, n_examples / C examples per class, C class means of norm ``strength`` in random directions,
    ε isotropic with variance 1 / dim per coordinate (so ‖ε‖ ≈ 1: the strength is the class means' size
    relative to the per-example noise). G = the second moment of the g's; its within part = the second
    moment of the ε around their class (sample) means; k = eigenvalues of G above the within part's top
    eigenvalue (the bulk edge) → :func:`about_c_codes`. Eigenvalues come from the n × n Gram matrices
    (the same non-zero spectrum).

    This is a model of the rule's behaviour, not of a network: with no class structure k is small (the
    class sample means of pure noise still lift one or two eigenvalues of G over the within edge), so the
    rule says not reproduced; the class means separate from the bulk once (roughly, the BBP threshold)
    strength² / C > √(dim / n) / dim — 0.20 at the defaults — and then k = C.
    """

    rng = np.random.default_rng(seed)
    rows = []
    per = n_examples // C
    n = per * C
    for s in spike_strengths:
        k = np.zeros(sims, dtype=int)
        for i in range(sims):
            means = rng.standard_normal((C, dim))
            means *= s / np.linalg.norm(means, axis=1, keepdims=True)
            noise = rng.standard_normal((C, per, dim)) / np.sqrt(dim)
            g = (means[:, None, :] + noise).reshape(-1, dim)
            within = (noise - noise.mean(1, keepdims=True)).reshape(-1, dim)
            edge = np.linalg.eigvalsh(within @ within.T / n).max()
            k[i] = int(np.sum(np.linalg.eigvalsh(g @ g.T / n) > edge))
        rows.append({"class-mean strength": s, "mean count": k.mean(), **_rates(about_c_codes(k, C))})
    return pd.DataFrame(rows)
