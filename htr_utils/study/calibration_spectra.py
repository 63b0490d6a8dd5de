"""Calibration of the spectra rules' issue-30 amendments (PROTOCOL.md, C1–C5): each rule's own implementation
(:mod:`htr_utils.study.spectra_rules`) applied to measurements simulated in a model fitted to what the committed
runs measured, so that the protocol's false-"reproduced" rates and powers can be recomputed.

The earlier rules' calibrations stay in :mod:`htr_utils.study.calibration`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from . import spectra_rules as rules
from .calibration import expected_tau, kendall_exact, slope_for_tau
from .parallel import pool_map
from .regularisation_rules import I, N, R


def rates(codes: np.ndarray) -> dict[str, float]:
    """Verdict frequencies of an array of codes."""
    codes = np.asarray(codes)
    return {"P(reproduced)": float((codes == R).mean()), "P(not reproduced)": float((codes == N).mean()),
            "P(inconclusive)": float((codes == I).mean())}


# ----------------------------------------------------------------------------- C5: AR(1) noise


def _lag1_rows(v: np.ndarray) -> np.ndarray:
    """:func:`htr_utils.study.spectra_rules.lag1_autocorrelation` of every row of ``v``."""
    n = v.shape[-1]
    x = np.arange(n) - (n - 1) / 2
    slope = (v * x).sum(-1, keepdims=True) / (x * x).sum()
    e = v - v.mean(-1, keepdims=True) - slope * x
    ss = (e * e).sum(-1)
    ok = ss > 1e-20 * ((v - v.mean(-1, keepdims=True)) ** 2).sum(-1)
    return np.where(ok, (e[..., 1:] * e[..., :-1]).sum(-1) / np.where(ok, ss, 1.0), 0.0)


def ar1_pvalues(series: np.ndarray, phi0: float = rules.PHI_MEASURED, adjusted: bool = True
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(τ, p_decrease, p_increase) of every row of ``series`` (sims × n): the amended rule's AR(1)-adjusted
    p-values (:func:`htr_utils.study.spectra_rules.kendall_trend_ar1`, vectorised), or with ``adjusted=False``
    the earlier rule's exact iid ones."""

    if not adjusted:
        return kendall_exact(series)
    n = series.shape[-1]
    pairs = n * (n - 1) // 2
    d = rules.discordant_pairs(series)
    phi = np.minimum(np.maximum(phi0, _lag1_rows(series)), rules.PHI_CAP)
    phi = np.ceil(phi / rules.PHI_GRID - 1e-9) * rules.PHI_GRID
    p_dec, p_inc = np.empty(len(d)), np.empty(len(d))
    for f in np.unique(phi):
        null = rules.ar1_kendall_null(n, float(f))
        m = phi == f
        p_dec[m] = (1 + len(null) - np.searchsorted(null, d[m], side="left")) / (len(null) + 1)
        p_inc[m] = (1 + np.searchsorted(null, d[m], side="right")) / (len(null) + 1)
    return (pairs - 2 * d) / pairs, p_dec, p_inc


def c5_ar1_rates(lengths: Sequence[int], phi: float, tau_effect: float = 0.0, sims: int = 4000, seed: int = 0,
                 adjusted: bool = True, phi0: float = rules.PHI_MEASURED) -> dict[str, float]:
    """C5's verdict frequencies (:func:`htr_utils.study.spectra_rules.c5_codes`) on series slope · t + e_t, one per
    length, e stationary Gaussian AR(1) at ``phi`` with unit variance; the slope gives expected Kendall τ =
    ``tau_effect`` under iid unit noise (:func:`htr_utils.study.calibration.slope_for_tau`; 0: no trend, < 0 a
    decrease). ``adjusted``: the amended AR(1)-adjusted p-values, else the earlier exact iid ones."""
    rng = np.random.default_rng(seed)
    p_dec, p_inc = np.empty((sims, len(lengths))), np.empty((sims, len(lengths)))
    for j, n in enumerate(lengths):
        slope = slope_for_tau(n, tau_effect) if tau_effect else 0.0
        v = slope * np.arange(n) + rules.ar1_series(n, phi, sims, rng)
        _, p_dec[:, j], p_inc[:, j] = ar1_pvalues(v, phi0, adjusted)
    return rates(rules.c5_codes(p_dec, p_inc))


def c5_ar1_calibration(lengths: Sequence[int] = (50, 50, 50, 50, 10, 10), sims: int = 4000,
                       phis: Sequence[float] = (0.0, 0.2, 0.4, 0.5, 0.6),
                       effects: Sequence[float] = (0.0, -0.5, -0.7)) -> pd.DataFrame:
    """One row per (φ, expected τ, rule): the amended and the earlier rule's verdict frequencies."""
    rows = []
    for phi in phis:
        for tau in effects:
            for adjusted in (True, False):
                rows.append({"phi": phi, "E[tau] (iid)": tau, "rule": "AR(1)-adjusted" if adjusted else "earlier (iid)",
                             **c5_ar1_rates(lengths, phi, tau, sims, adjusted=adjusted)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- C2: per network, lognormal a(G)

C2_SIGMA_IID = 1.3        # pooled within-network sd of log a(G): LeNet 1.08 (7 readings), VGG11_bn 1.84 (3)
C2_SIGMA_TREND = 0.72     # pooled residual sd of log a(G) about a line in log epoch: LeNet 0.65, VGG11_bn 1.01
# offsets of log a(G) about the network's median along the fitted line in log epoch (committed readings,
# figures/cpu/02_gauss_newton/top_agreement.csv): LeNet epochs 1, 5, 10, 20, 30, 40, 50; VGG11_bn 3, 15, 30
C2_SHAPES = {"lenet": (1.95, 0.90, 0.45, 0.0, -0.26, -0.45, -0.60), "vgg11_bn": (2.32, 0.0, -1.0)}
C2_MEASURED_MEDIANS = {"lenet": 0.0256, "vgg11_bn": 0.0070}   # medians of the fitted lines
C2_CONTROL_MEDIAN = 0.72  # far-epoch control estimated from the committed Hess λ_1, λ_C (0.46–1.23 over readings)
C2_CONTROL_SIGMA = 0.3


def c2_rates(medians: Sequence[float], shapes: Sequence[Sequence[float]], sigma: float,
             control_median: float = C2_CONTROL_MEDIAN, control_sigma: float = C2_CONTROL_SIGMA, floor: float = 1e-3,
             sims: int = 20000, seed: int = 0, control: bool = False) -> dict[str, float]:
    """C2's amended verdict (:func:`htr_utils.study.spectra_rules.c2_network_codes` per network, "all_of" over the
    deciding networks) when network k's reading j has log a(G) = ln medians[k] + shapes[k][j] + sigma·z
    (z iid N(0, 1); shapes of zeros: iid lognormal readings) and its controls
    log a ~ N(ln control_median, control_sigma²), which gate the verdict only with ``control`` (the superseded
    issue-30 rule; the amendment of 2026-12-07 drops the control)."""
    rng = np.random.default_rng(seed)
    codes = []
    for m, shape in zip(medians, shapes):
        shape = np.asarray(shape, dtype=float)
        a = np.exp(np.log(m) + shape + sigma * rng.standard_normal((sims, len(shape))))
        c = np.exp(np.log(control_median) + control_sigma * rng.standard_normal((sims, len(shape))))
        codes.append(rules.c2_network_codes(a, c if control else None, floor))
    return rates(rules.all_of_codes(codes))


def c2_calibration(sims: int = 20000) -> pd.DataFrame:
    """The amended C2 rule's rates on the deciding networks (LeNet 7 readings, VGG11_bn 3) in two models fitted to
    the committed a(G): "iid" (lognormal about the network's median, sd 1.3) and "trend" (the fitted line in log
    epoch plus residual sd 0.72). Scenarios set the networks' medians: claim false (one at 0.20, twice the
    threshold, or on the threshold 0.10; the other at 0.05), claim true (both at 0.05, half the threshold; the
    measured medians). The rule without the far-epoch control (amendment of 2026-12-07)."""
    lenet, vgg = C2_SHAPES["lenet"], C2_SHAPES["vgg11_bn"]
    measured = (C2_MEASURED_MEDIANS["lenet"], C2_MEASURED_MEDIANS["vgg11_bn"])
    scenarios = [("false: LeNet at 0.20, VGG at 0.05", (0.20, 0.05), C2_CONTROL_MEDIAN),
                 ("false: VGG at 0.20, LeNet at 0.05", (0.05, 0.20), C2_CONTROL_MEDIAN),
                 ("boundary: LeNet at 0.10, VGG at 0.05", (0.10, 0.05), C2_CONTROL_MEDIAN),
                 ("boundary: VGG at 0.10, LeNet at 0.05", (0.05, 0.10), C2_CONTROL_MEDIAN),
                 ("true: both at 0.05", (0.05, 0.05), C2_CONTROL_MEDIAN),
                 ("true: both at 0.02", (0.02, 0.02), C2_CONTROL_MEDIAN),
                 ("true: the measured medians", measured, C2_CONTROL_MEDIAN)]   # no control row: it no longer gates
    rows = []
    for model, shapes, sigma in (("iid", ((0.0,) * 7, (0.0,) * 3), C2_SIGMA_IID), ("trend", (lenet, vgg), C2_SIGMA_TREND)):
        for label, med, ctrl in scenarios:
            rows.append({"model": model, "scenario": label, **c2_rates(med, shapes, sigma, ctrl, sims=sims)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- C1 / C3(a): anisotropic spiked model

SPIKED_MAX_DIM = 400      # model dimension: min(block size, this); only the top 2C of the spectrum is used


@dataclass(frozen=True)
class SpikedFit:
    """Hess ≈ U diag(a) Uᵀ + diag(w) in ``dim`` dimensions: C class directions (U, a random C-dimensional subspace,
    the class-mean span) with strengths a_k geometric from ``a1`` to ``aC``, and an anisotropic within-class part
    w_j = edge · j^(−beta) whose top, λ_max(G_within), is the measured bulk edge."""
    dim: int
    C: int
    a1: float
    aC: float
    edge: float
    beta: float
    loss: float = float("nan")
    mix: float = 0.0          # share of each class direction's mass outside the read class-mean span (2026-12-07)

    def strengths(self) -> np.ndarray:
        return self.a1 * (self.aC / self.a1) ** (np.arange(self.C) / max(self.C - 1, 1))


def spiked_top(dim: int, strengths: np.ndarray, edge: float, beta: float, rng: np.random.Generator,
               k: int, lead: float | None = None, mix: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Top k eigenvalues (descending) of D diag(strengths) Dᵀ + diag(w), w_j = edge · j^(−beta) (``lead``, if given,
    replaces w_1: one strong within-class direction), and each eigenvector's squared projection on span(U) (the
    readings' per-vector overlaps), U a random orthonormal dim × C, the read class-mean span. The class directions
    are D = √(1 − mix) U + √mix V, V orthonormal and orthogonal to U (``mix`` = 0: D = U, the issue-30 model): each
    holds only 1 − ``mix`` of its mass in the read span, as a class-mean span estimated from finite examples or
    class structure not spanned by the class means would give (amendment of 2026-12-07)."""
    from scipy.linalg import eigh

    C = len(strengths)
    if not 0 <= mix < 1:
        raise ValueError(f"spiked_top: mix must lie in [0, 1), got {mix}")
    if mix > 0:
        Q = np.linalg.qr(rng.standard_normal((dim, 2 * C)))[0]
        U = Q[:, :C]
        D = np.sqrt(1 - mix) * U + np.sqrt(mix) * Q[:, C:]
    else:   # the issue-30 draws, unchanged
        U = D = np.linalg.qr(rng.standard_normal((dim, C)))[0]
    M = (D * strengths) @ D.T
    w = edge * np.arange(1, dim + 1, dtype=float) ** (-beta)
    if lead is not None:
        w[0] = lead
    M[np.diag_indices(dim)] += w
    k = min(k, dim)
    ev, vec = eigh(M, subset_by_index=[dim - k, dim - 1], driver="evr")
    return ev[::-1], ((U.T @ vec[:, ::-1]) ** 2).sum(0)


def fit_spiked(lambda_1: float, lambda_C: float, lambda_C1: float, edge: float, overlap: float, dim: int,
               C: int = 10, draws: int = 3, max_dim: int = SPIKED_MAX_DIM, mix: float = 0.0) -> SpikedFit:
    """The :class:`SpikedFit` whose λ_1, λ_C, λ_C+1 and mean top-C overlap match the measured ones (least squares
    on log eigenvalues and on the overlap, Nelder–Mead from three starts, ``draws`` fixed random subspaces),
    with the within-class top fixed at the measured bulk edge."""
    from scipy.optimize import minimize

    if not (lambda_1 >= lambda_C >= lambda_C1 > 0 and edge > 0 and 0 < overlap <= 1 and dim > 2 * C):
        raise ValueError(f"fit_spiked: need λ_1 ≥ λ_C ≥ λ_C+1 > 0, edge > 0, overlap in (0, 1] and dim > 2C, got "
                         f"{lambda_1}, {lambda_C}, {lambda_C1}, {edge}, {overlap}, {dim}")
    d = min(dim, max_dim)

    def loss(p: np.ndarray) -> float:
        a1, aC, beta = np.exp(p)
        a = a1 * (aC / a1) ** (np.arange(C) / (C - 1))
        err = []
        for s in range(draws):
            ev, ov = spiked_top(d, a, edge, beta, np.random.default_rng(s), C + 1, mix=mix)
            err.append((np.log(ev[0] / lambda_1), np.log(ev[C - 1] / lambda_C), np.log(ev[C] / lambda_C1),
                        ov[:C].mean() - overlap))
        return float(np.sum(np.mean(err, 0) ** 2))

    starts = ([lambda_1, lambda_C, 0.5], [lambda_1 / 2, lambda_C / 2, 1.0], [lambda_1, lambda_C / 5, 0.2])
    best = min((minimize(loss, np.log(s), method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 200})
                for s in starts), key=lambda r: r.fun)
    a1, aC, beta = np.exp(best.x)
    return SpikedFit(d, C, float(a1), float(aC), float(edge), float(beta), float(best.fun), float(mix))


def spiked_counts(fit: SpikedFit, strengths: np.ndarray, sims: int, seed: int = 0, lead: float | None = None,
                  continuous_edge: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Per simulated reading: (k_cls, k_edge): the amended count (:func:`htr_utils.study.spectra_rules.class_direction_count`
    of the top 2C eigenvectors' overlaps, with their eigenvalues above G_within's continuous edge λ_C+1(G_within)
    where ``continuous_edge``, the amendment of 2026-12-07) and the earlier count (eigenvalues above
    λ_max(G_within): the fitted edge, or ``lead`` where one within-class direction is set to that strength).
    The class directions mix with the fit's ``mix``."""
    edge = fit.edge if lead is None else max(fit.edge, lead)
    w = fit.edge * np.arange(1, fit.dim + 1, dtype=float) ** (-fit.beta)
    if lead is not None:
        w[0] = lead
    cont = rules.within_continuous_edge(w[:3 * fit.C], fit.C)
    rng = np.random.default_rng(seed)
    k_cls, k_edge = np.empty(sims, dtype=int), np.empty(sims, dtype=int)
    for i in range(sims):
        ev, ov = spiked_top(fit.dim, strengths, fit.edge, fit.beta, rng, 3 * fit.C, lead, fit.mix)
        k = 2 * fit.C
        k_cls[i] = (rules.class_direction_count(ov[:k], eigenvalues=ev[:k], edge=cont) if continuous_edge
                    else rules.class_direction_count(ov[:k]))
        k_edge[i] = int(np.sum(ev > edge))
    return k_cls, k_edge


def spiked_scenarios(fit: SpikedFit) -> dict[str, tuple[np.ndarray, float | None]]:
    """Scenarios of C1 / C3(a) in a fitted model: (class strengths, strength of one strong within-class direction
    or None). "true": C class directions, the weakest at half (or a quarter of) the within edge; "true, masked": the same plus one
    within-class direction at twice the strongest class direction (the earlier rule's blind spot); "measured":
    the fit; "false": only C/2 or C − 3 class directions clear the bulk (the others at a quarter of the fitted
    strength), or none."""
    C, a1, edge = fit.C, fit.a1, fit.edge
    half = a1 * (min(edge / 2, a1) / a1) ** (np.arange(C) / (C - 1))
    quarter = a1 * (min(edge / 4, a1) / a1) ** (np.arange(C) / (C - 1))
    out = {"true: weakest class direction at edge / 2": (half, None),
           "true: weakest class direction at edge / 4": (quarter, None),
           "true, masked: within top at 2 × the strongest class direction": (half, 2 * max(a1, edge)),
           "measured state (fit)": (fit.strengths(), None)}
    for m in (C // 2, C - 3):
        a = fit.strengths().copy()
        a[m:] *= 0.25
        out[f"false: {m} class directions, the rest hidden"] = (a, None)
    out["false: no class directions"] = (np.zeros(C), None)
    return out


def c1_class_calibration(fits: dict[str, SpikedFit], sims: int = 200) -> pd.DataFrame:
    """One row per (network, scenario of :func:`spiked_scenarios`): the amended C1 count rule's (k_cls) and the
    earlier rule's (k above the within edge) verdict frequencies per network, and the mean counts."""
    jobs = [(label, fit, j, scenario, a, lead) for label, fit in fits.items()
            for j, (scenario, (a, lead)) in enumerate(spiked_scenarios(fit).items())]
    counts = pool_map(spiked_counts, [(fit, a, sims, j, lead) for _, fit, j, _, a, lead in jobs])  # seeds as serial
    rows = []
    for (label, fit, _, scenario, _, _), (k_cls, k_edge) in zip(jobs, counts):
        new, old = rates(rules.about_c_class_codes(k_cls, fit.C)), rates(rules.about_c_codes(k_edge, fit.C))
        rows.append({"network": label, "scenario": scenario, "mean k_cls": k_cls.mean(), "mean k_edge": k_edge.mean(),
                     "P(R)": new["P(reproduced)"], "P(N)": new["P(not reproduced)"],
                     "earlier P(R)": old["P(reproduced)"], "earlier P(N)": old["P(not reproduced)"]})
    return pd.DataFrame(rows)


def c3a_class_rates(fits: Sequence[SpikedFit], scenario: str, sims: int = 200, seed: int = 0) -> dict[str, float]:
    """C3 (a)'s share rule (:func:`htr_utils.study.spectra_rules.share_codes` of the share of layers with
    C − 2 ≤ k_cls ≤ C + 2) when every layer block follows its own fit in ``scenario``."""
    ok = np.zeros((sims, len(fits)), dtype=bool)
    jobs = [(fit, *spiked_scenarios(fit)[scenario], i) for i, fit in enumerate(fits)]
    counts = pool_map(spiked_counts, [(fit, a, sims, seed + 1000 * i, lead) for fit, a, lead, i in jobs])
    for i, (fit, (k_cls, _)) in enumerate(zip(fits, counts)):
        ok[:, i] = rules.about_c_class_codes(k_cls, fit.C) == R
    return rates(rules.share_codes(ok.mean(1)))


# ----------------------------------------------------------------------------- C4: depth regression

C4_SIZES = {"lenet": (150, 2400, 48000, 10080, 840),
            "vgg11_bn": (72, 1152, 4608, 9216, 18432, 36864, 36864, 36864, 640)}   # width 0.125, FashionMNIST
C4_SIGMA_LAYER = 0.6      # sd of a real layer's log W1 about the size law (exact narrow LeNet: W1 / size-matched 1.4–8.2×)
C4_SIGMA_PROBE = 0.3      # relative error of one layer W1 at 5 SLQ probes, 32 Lanczos steps (exact narrow LeNet)


def c4_depth_power(ratio: float, sizes: Sequence[Sequence[int]] = tuple(C4_SIZES.values()),
                   sigma_layer: float = C4_SIGMA_LAYER, sigma_probe: float = C4_SIGMA_PROBE,
                   epochs: Sequence[int] = (3, 2), stated_ratio: float = rules.C4_STATED_RATIO) -> dict[str, float]:
    """Exact verdict frequencies of the amended C4 rule when log W1 follows the regression model with true
    end-to-centre ratio ``ratio`` and iid noise of sd √(σ_layer² + σ_probe² / epochs) (noncentral t; the
    per-network epoch counts are averaged into one sd, their spread being small)."""
    X, _ = rules._depth_design(sizes)
    df = X.shape[0] - X.shape[1]
    sd = float(np.sqrt(sigma_layer ** 2 + sigma_probe ** 2 / np.mean(epochs)))
    se = sd * float(np.sqrt(np.linalg.inv(X.T @ X)[-1, -1]))
    c, c1 = 2 * np.log(ratio), 2 * np.log(stated_ratio)
    crit = stats.t.ppf(1 - rules.ALPHA, df)
    p_r = float(stats.nct.sf(crit, df, c / se))
    p_n = float(stats.nct.cdf(-crit, df, (c - c1) / se))
    return {"P(reproduced)": p_r, "P(not reproduced)": p_n, "P(inconclusive)": 1 - p_r - p_n}


def c4_depth_rates(ratio: float, sizes: Sequence[Sequence[int]] = tuple(C4_SIZES.values()),
                   sigma_layer: float = C4_SIGMA_LAYER, sigma_probe: float = C4_SIGMA_PROBE,
                   epochs: Sequence[int] = (3, 2), stated_ratio: float = rules.C4_STATED_RATIO, slope: float = 0.3,
                   sims: int = 4000, seed: int = 0) -> dict[str, float]:
    """The same frequencies by simulation through the rule's own code
    (:func:`htr_utils.study.spectra_rules.c4_depth_rule`): log W1_ki = slope · log share + 2 ln(``ratio``) |d_i − 1/2|
    + σ_layer u_ki + σ_probe / √epochs_k ε_ki (u, ε iid N(0, 1))."""
    X, z = rules._depth_design(sizes)
    rng = np.random.default_rng(seed)
    sd = np.concatenate([np.full(len(s), np.sqrt(sigma_layer ** 2 + sigma_probe ** 2 / e)) for s, e in zip(sizes, epochs)])
    splits = np.cumsum([len(s) for s in sizes])[:-1]
    codes = []
    for _ in range(sims):
        y = slope * X[:, -2] + 2 * np.log(ratio) * z + sd * rng.standard_normal(len(z))
        codes.append(int(rules.c4_depth_codes(*(lambda t: (t["p_R"], t["p_N"]))(
            rules.c4_depth_test(np.split(y, splits), sizes, stated_ratio)))))
    return rates(np.array(codes))


def c4_depth_calibration(ratios: Sequence[float] = (1.0, 2.0, 4.0, 6.0, 8.0),
                         sigmas: Sequence[float] = (0.3, C4_SIGMA_LAYER, 0.9)) -> pd.DataFrame:
    """One row per (layer sd, true end-to-centre ratio): the amended C4 rule's exact verdict frequencies on LeNet
    and VGG11_bn's real layer sizes (LeNet 3 epochs, VGG 2)."""
    return pd.DataFrame([{"sigma_layer": s, "true ratio": q, **c4_depth_power(q, sigma_layer=s)}
                         for s in sigmas for q in ratios])


# fits of the full blocks to the committed readings (last epoch, 100 per class; figures/cpu/01_full_spectrum), from
# :func:`committed_fits`; the layer blocks' fits take about 15 minutes on this CPU and are recomputed there
C1_FITS = {"lenet_fashionmnist": SpikedFit(400, 10, 33.25, 2.200, 17.168, 0.4760),
           "lenet_gelu_fashionmnist": SpikedFit(400, 10, 34.53, 2.722, 16.788, 0.4603),
           "vgg11_bn_fashionmnist": SpikedFit(400, 10, 736.9, 17.31, 154.30, 0.4753)}
# PROTOCOL.md amendment S2 (2026-12-07): the same blocks refitted with class directions mixed out of the read span by
# mix = 0.05 (≥ the sampling mix of every network, `sampling_mix` of the 10- vs 100-per-class overlaps); 3 digits
C1_FITS_MIXED = {"lenet_fashionmnist": SpikedFit(400, 10, 33.4, 2.69, 17.168, 0.50, mix=0.05),
                 "lenet_gelu_fashionmnist": SpikedFit(400, 10, 34.7, 3.04, 16.788, 0.48, mix=0.05),
                 "vgg11_bn_fashionmnist": SpikedFit(400, 10, 738.0, 18.2, 154.30, 0.49, mix=0.05)}


def sampling_mix(overlap_few: float, overlap_many: float, n_few: int, n_many: int) -> float:
    """The mixing of the read class-mean span at ``n_many`` examples per class, from the mean top-C overlap read at
    two sample sizes (amendment of 2026-12-07): under o_n = o_∞ (1 − c / n) (class means estimated from n examples
    lose mass ∝ 1/n), c = (o_many − o_few) / (o_many / n_few − o_few / n_many), mix = c / n_many, 0 if c ≤ 0."""
    if not (0 < overlap_few <= 1 and 0 < overlap_many <= 1 and 0 < n_few < n_many):
        raise ValueError(f"sampling_mix: need overlaps in (0, 1] and 0 < n_few < n_many, got {overlap_few}, "
                         f"{overlap_many}, {n_few}, {n_many}")
    c = (overlap_many - overlap_few) / (overlap_many / n_few - overlap_few / n_many)
    return float(max(c, 0.0) / n_many)


def committed_fits(table: pd.DataFrame, mix: float = 0.0) -> dict[str, SpikedFit]:
    """{"run/block": :func:`fit_spiked`} for every row of a class-structure table at its run's last epoch and most
    examples per class (columns lambda_1, lambda_C, lambda_C+1, bulk_edge, overlap, dim), class directions mixed
    by ``mix``."""
    out = {}
    for run, g in table.groupby("run", sort=False):
        g = g[(g["epoch"] == g["epoch"].max())]
        g = g[g["per_class"] == g["per_class"].max()]
        for _, r in g.iterrows():
            out[f"{run}/{r['block']}"] = fit_spiked(r["lambda_1"], r["lambda_C"], r["lambda_C+1"], r["bulk_edge"],
                                                    r["overlap"], int(r["dim"]), mix=mix)
    return out
