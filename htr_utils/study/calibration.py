"""Error rates of the C6a, C6b and C7 rules by simulation (PROTOCOL.md): how often each verdict comes out
when the claim is false and when it holds at the paper's effect size.

Every function draws synthetic measurements under stated assumptions and applies the rule's own
implementation (:mod:`htr_utils.study.regularisation_rules`) to them, so a rule cannot be
calibrated in one form and applied in another.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist

from .regularisation_rules import (EQUIVALENCE_MARGIN, I, N, R, c6a_codes, c6b_codes, c7_accuracy_codes)
from .statistics import partial_spearman


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
    for col in ("test_acc", "gap"):
        rho = partial_spearman(sim["trace"][:, idx], sim[col][:, idx], sim["loss"][:, idx])  # (reps, boot)
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


def c4_rates(design: list[tuple[int, int]], middle_win_rate: float | None = None, dependent: bool = False,
             tie_rate: float = 0.0, sims: int = 20000, seed: int = 0) -> dict[str, float]:
    """C4's rule on simulated readings. ``design``: one (number of layers, number of read epochs) per network.

    Each reading is a tie with probability ``tie_rate``; otherwise "middle" with probability the
    network's middle share (``middle_win_rate`` None: layers exchangeable, no depth effect) or
    ``middle_win_rate``, else "outer". ``dependent``: all readings of a network share one outcome
    (the worst case for a tally that counts them as independent).
    """
    from .spectra_rules import c4_codes, chance_rate, middle_share

    rng = np.random.default_rng(seed)
    counts = [L for L, e in design for _ in range(e)]
    n_mid = np.zeros(sims, dtype=int)
    n_out = np.zeros(sims, dtype=int)
    all_mid = np.ones(sims, dtype=bool)
    all_out = np.ones(sims, dtype=bool)
    for L, epochs in design:
        p_mid = middle_share(L) if middle_win_rate is None else middle_win_rate
        draws = 1 if dependent else epochs
        u, t = rng.random((sims, draws)), rng.random((sims, draws))
        mid = (t >= tie_rate) & (u < p_mid)
        out = (t >= tie_rate) & (u >= p_mid)
        scale = epochs if dependent else 1
        n_mid += scale * mid.sum(1)
        n_out += scale * out.sum(1)
        all_mid &= mid.sum(1) > draws / 2
        all_out &= out.sum(1) > draws / 2
    return _rates(c4_codes(n_mid, n_out, len(counts), chance_rate(counts), all_mid, all_out))


def c5_rates(lengths: list[int], tau_effect: float | None = None, sims: int = 20000, seed: int = 0) -> pd.DataFrame:
    """C5's rule on simulated series of the given lengths: iid noise (no trend) and a linear decrease plus noise
    of a signal-to-noise ratio giving about Kendall τ = ``tau_effect`` (default −0.3, −0.5); rates per scenario."""
    from .spectra_rules import c5_codes, kendall_trend

    rng = np.random.default_rng(seed)
    effects = [0.0] + ([tau_effect] if tau_effect is not None else [-0.3, -0.5])
    sims = min(sims, 4000)  # exact p-values per series: keep the loop short
    rows = []
    for tau in effects:
        # slope per step giving E[τ] ≈ tau for N(0, 1) noise: τ = (2/π) asin(slope / sqrt(2) / ...) is length-free
        # for neighbouring pairs only, so calibrate by the linear-trend correlation: slope s with
        # τ ≈ (2/π) arcsin(ρ), ρ the Pearson correlation of a line of slope s with unit noise.
        rho = np.sin(np.pi * abs(tau) / 2)
        p_dec = np.zeros((sims, len(lengths)))
        p_inc = np.zeros_like(p_dec)
        for j, n in enumerate(lengths):
            x = np.arange(n, dtype=float)
            sd_x = x.std()
            slope = -rho / np.sqrt(max(1 - rho ** 2, 1e-12)) / sd_x if tau else 0.0
            for i in range(sims):
                _, p_dec[i, j], p_inc[i, j] = kendall_trend(slope * x + rng.standard_normal(n))
        codes = c5_codes(p_dec, p_inc)
        rows.append({"kendall τ (about)": tau, "series": len(lengths), **_rates(codes)})
    return pd.DataFrame(rows)


def min_detectable_tau(n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |τ| a one-sided Kendall test of n points detects with the given power (normal approximation,
    var(τ) = 2(2n + 5) / (9 n (n − 1)) under the null)."""
    from scipy.stats import norm

    sd = np.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    return float((norm.ppf(1 - alpha) + norm.ppf(power)) * sd)


def c1_rates(dim: int = 300, n_examples: int = 200, C: int = 10, strengths: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0, 4.0),
             sims: int = 200, seed: int = 0) -> pd.DataFrame:
    """C1's count rule on a spiked model of per-example gradient vectors: g = m_{y} + ε with C class means of norm
    ``strength`` (random directions) and isotropic noise of unit variance per coordinate / dim. G = the second
    moment of the g's, its within part = the second moment of the ε around their class means; k = eigenvalues of
    G above the within part's top eigenvalue → :func:`about_c_codes`. A model of the rule's behaviour, not of a
    network: with no class structure the count is near 0, with strong class means it is C."""
    from .spectra_rules import about_c_codes

    rng = np.random.default_rng(seed)
    rows = []
    per = n_examples // C
    for s in strengths:
        k = np.zeros(sims, dtype=int)
        for i in range(sims):
            means = rng.standard_normal((C, dim))
            means *= s / np.linalg.norm(means, axis=1, keepdims=True)
            noise = rng.standard_normal((C, per, dim)) / np.sqrt(dim)
            g = (means[:, None, :] + noise).reshape(-1, dim)
            within = (noise - noise.mean(1, keepdims=True)).reshape(-1, dim)
            edge = np.linalg.eigvalsh(within.T @ within / len(g)).max()
            k[i] = int(np.sum(np.linalg.eigvalsh(g.T @ g / len(g)) > edge))
        rows.append({"class-mean strength": s, "mean count": k.mean(), **_rates(about_c_codes(k, C))})
    return pd.DataFrame(rows)
