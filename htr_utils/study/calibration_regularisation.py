"""Error rates of issue 31's amended C6a, C6b and C7 rules by simulation, at what the committed cpu run measured.

Every function draws synthetic measurements and applies the rule's own implementation
(:mod:`htr_utils.study.regularisation_rules`), so a rule cannot be calibrated in one form and
applied in another. The earlier rules' calibration stays in :mod:`htr_utils.study.calibration`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import gammaln
from scipy.stats import rankdata, spearmanr
from scipy.stats import t as t_dist

from .regularisation_rules import (ACCURACY_RESOLUTION, C7_EQUIVALENCE_MARGIN, GAIN_THRESHOLD, MEASURED_PAIRED_CORR,
                                   MEASURED_PAIRED_SD, PAPER_GAIN, I, N, R, any_gain_codes, c6a_codes, c7_accuracy_codes,
                                   c7_acts, c7_equivalence_codes, paper_gain_codes)
from .statistics import bootstrap_ranks, partial_rank_correlation


EVALUATION_SEEDS = 6  # the cpu profile's evaluation seeds of C6b and C7 (amendment 5, issue 33's budget; was 10)


def _rates(codes: np.ndarray, prefix: str = "") -> dict[str, float]:
    return {f"{prefix}P(reproduced)": float((codes == R).mean()),
            f"{prefix}P(not reproduced)": float((codes == N).mean()),
            f"{prefix}P(inconclusive)": float((codes == I).mean())}


def paired_intervals_rounded(effects: Sequence[float], sds: Sequence[float], n: int, reps: int,
                             rng: np.random.Generator, corr: float = 0.0, resolution: float = ACCURACY_RESOLUTION,
                             level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Simulated paired t intervals (lo, hi), shape (reps, k), of k comparisons measured on a test set.

    Per seed, comparison j's difference is N(effects[j], sds[j]²), two comparisons correlated
    ``corr`` at one seed, then rounded to ``resolution`` (a difference of two accuracies on 10 000
    images is a whole number of images). Then d̄ ± t_{n−1} s_d / √n, as
    :func:`htr_utils.study.statistics.paired_difference`.
    """
    effects, sds = np.atleast_1d(np.asarray(effects, float)), np.atleast_1d(np.asarray(sds, float))
    if effects.shape != sds.shape:
        raise ValueError(f"paired_intervals_rounded: {len(effects)} effects but {len(sds)} sds; give one sd per comparison")
    k = len(effects)
    chol = np.linalg.cholesky(corr * np.ones((k, k)) + (1 - corr) * np.eye(k))
    z = rng.standard_normal((reps, n, k)) @ chol.T
    d = effects + sds * z
    if resolution:
        d = np.round(d / resolution) * resolution
    mean, s = d.mean(1), d.std(1, ddof=1)
    half = t_dist.ppf(0.5 + level / 2, n - 1) * s / np.sqrt(n)
    return mean - half, mean + half


def c6b_amended_rates(effect: float, sds: Sequence[float] = MEASURED_PAIRED_SD, n: int = EVALUATION_SEEDS,
                      corr: float = MEASURED_PAIRED_CORR, reps: int = 20000, seed: int = 0,
                      threshold: float = GAIN_THRESHOLD, resolution: float = ACCURACY_RESOLUTION) -> dict[str, float]:
    """Verdict frequencies of amended C6b (:func:`paper_gain_codes`) and of its "any gain" statement
    (:func:`any_gain_codes`: P(gain shown), P(loss shown)) when every comparison has true paired gain ``effect``.
    One sd per comparison: two for the validation-chosen γ, one for the dose arm judged on HTR − SGD alone."""
    sds = tuple(sds)
    lo, hi = paired_intervals_rounded([effect] * len(sds), sds, n, reps, np.random.default_rng(seed), corr, resolution)
    anyg = any_gain_codes(lo, hi)
    return {**_rates(paper_gain_codes(lo, hi, threshold)), "P(gain shown)": float((anyg == R).mean()),
            "P(loss shown)": float((anyg == N).mean())}


def c6b_min_detectable(sds: Sequence[float] = MEASURED_PAIRED_SD, n: int = EVALUATION_SEEDS, corr: float = MEASURED_PAIRED_CORR,
                       power: float = 0.8, reps: int = 20000, seed: int = 0, threshold: float = GAIN_THRESHOLD,
                       resolution: float = ACCURACY_RESOLUTION) -> float:
    """Smallest true gain the amended rule calls reproduced with probability ≥ ``power`` (bisection on
    :func:`c6b_amended_rates` with the same draws at every effect, to a hundredth of a test image)."""
    lo_e, hi_e = threshold, threshold + 20 * max(sds)
    if c6b_amended_rates(hi_e, sds, n, corr, reps, seed, threshold, resolution)["P(reproduced)"] < power:
        return float("nan")
    while hi_e - lo_e > resolution / 100:
        mid = (lo_e + hi_e) / 2
        ok = c6b_amended_rates(mid, sds, n, corr, reps, seed, threshold, resolution)["P(reproduced)"] >= power
        lo_e, hi_e = (lo_e, mid) if ok else (mid, hi_e)
    return float(hi_e)


C6B_SCENARIOS = ((0.0, "no gain"), (GAIN_THRESHOLD / 2, "a quarter of the paper's gain"),
                 (GAIN_THRESHOLD, "half the paper's gain (the threshold)"), (0.75 * PAPER_GAIN, "three quarters"),
                 (PAPER_GAIN, "the paper's +0.1 pt"))


DECORRELATED_PAIRED_SD = 0.00097  # sd of paired SGD + L2 + HTR − SGD (an arm that differs from the first step)


def c6b_amended_calibration(sds: Sequence[float] = MEASURED_PAIRED_SD, n: int = EVALUATION_SEEDS, corr: float = MEASURED_PAIRED_CORR,
                            reps: int = 20000, dose_sds: Sequence[float] = (MEASURED_PAIRED_SD[0], DECORRELATED_PAIRED_SD)
                            ) -> pd.DataFrame:
    """One row per (arm, spread, true gain): amended C6b's verdict frequencies at the measured paired spread.

    Arms: the validation-chosen γ (both comparisons, ``sds`` as measured) and the dose arm (SGD + HTR −
    SGD alone) at each of ``dose_sds``: the measured near-inert pair's sd, and the sd of a pair that
    differs from the first step (an acting dose may decorrelate the pair). The earlier rule
    (:func:`htr_utils.study.regularisation_rules.c6b_codes`) says reproduced exactly when the "gain shown"
    column does.
    """
    rows = []
    arms = [("validation-chosen γ (2 comparisons)", tuple(sds))] + [("acting dose (HTR − SGD)", (s,)) for s in dose_sds]
    for arm, arm_sds in arms:
        for effect, label in C6B_SCENARIOS:
            rows.append({"arm": arm, "true gain (pts)": 100 * effect, "scenario": label, "n": n,
                         "sd (pts)": ", ".join(f"{100 * s:.3f}" for s in arm_sds),
                         **c6b_amended_rates(effect, arm_sds, n, corr, reps)})
        rows[-1]["min. detectable (pts)"] = 100 * c6b_min_detectable(arm_sds, n, corr, reps=min(reps, 5000))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- amendment 2: the authors' schedule
def share_halfwidth(sd: float, n: int, published_gain: float = PAPER_GAIN, level: float = 0.95) -> float:
    """Expected half-width, in % of ``published_gain``, of the interval of the share the 10 extra epochs explain:
    t_{n−1} · E[s] / √n / gain, with E[s] = c4(n) · sd for n paired seeds of per-seed sd ``sd``."""
    c4 = np.sqrt(2 / (n - 1)) * np.exp(gammaln(n / 2) - gammaln((n - 1) / 2))
    return float(100 * t_dist.ppf(0.5 + level / 2, n - 1) * c4 * sd / np.sqrt(n) / published_gain)


def authors_schedule_precision(sds: Sequence[float] = (MEASURED_PAIRED_SD[0], 0.0005, 0.001),
                               seeds: Sequence[int] = (3, 5, 10)) -> pd.DataFrame:
    """:func:`share_halfwidth` for each paired sd of SGD 40 − SGD 30 and number of seeds: how precisely the
    authors'-schedule row can say what share of a +0.1-point gain the extra epochs explain."""
    return pd.DataFrame([{"sd of SGD 40 − SGD 30 (pts)": 100 * sd, "seeds": n,
                          "share interval ± (% of +0.1 pt)": share_halfwidth(sd, n)} for sd in sds for n in seeds])


# ----------------------------------------------------------------------------- amendment 3: C6a in a fitted model
SWEEP_COLUMNS = ("train_loss", "trace", "test_acc", "acc_gap")


def fit_sweep_model(table: pd.DataFrame, setting: str = "run") -> dict[str, np.ndarray]:
    """Fit C6a's simulation model to a measured sweep (one row per run: ``setting``, train_loss, trace,
    test_acc, acc_gap), on (loss, log trace, test acc., gap).

    Returns ``between``: the correlation matrix of the setting means; ``within``: the pooled
    within-setting covariance, each variable in units of its setting means' sd (so the seed noise is
    measured against the spread of the settings); ``collinearity``: Spearman(trace, loss) over the runs.
    """
    missing = {setting, *SWEEP_COLUMNS} - set(table.columns)
    if missing:
        raise ValueError(f"fit_sweep_model: the sweep table lacks {sorted(missing)}; pass the per-run sweep table "
                         "(figures/<profile>/06_trace_generalisation/sweep.csv)")
    bad = sorted(set(table.loc[~(table["trace"].astype(float) > 0), setting]))
    if bad:
        raise ValueError(f"fit_sweep_model: the model is on log trace, and runs of {bad} have a non-positive or "
                         "missing trace estimate (a Hutchinson estimate of a near-zero trace, e.g. an undertrained "
                         "run); leave those settings out or measure the trace with more probes")
    x = table[list(SWEEP_COLUMNS)].astype(float).copy()
    x["trace"] = np.log(x["trace"])
    groups = table[setting]
    means = x.groupby(groups).mean()
    if len(means) < 3 or groups.value_counts().min() < 2:
        raise ValueError("fit_sweep_model: need at least 3 settings with at least 2 seeds each")
    scale = means.std(ddof=1).to_numpy()
    dev = (x - x.groupby(groups).transform("mean")).to_numpy() / scale
    dof = len(x) - len(means)
    return {"between": np.corrcoef(means.to_numpy().T), "within": dev.T @ dev / dof,
            "collinearity": float(spearmanr(table["trace"], table["train_loss"])[0]), "settings": len(means),
            "seeds": int(groups.value_counts().min())}


def setting_correlation(between: np.ndarray, partial_rho: float) -> np.ndarray:
    """Setting-level correlation of (loss, trace, test acc., gap) with the measured correlations of each variable
    with the loss, and given the loss: corr(trace, acc.) = ``partial_rho``, corr(trace, gap) = −``partial_rho``
    (the claim: ρ < 0, flatter goes with higher accuracy and a smaller gap), corr(acc., gap) as measured
    (shrunk towards 0 until the matrix is positive definite)."""
    r = between[0, 1:]
    resid = between[1:, 1:] - np.outer(r, r)
    sd = np.sqrt(np.clip(np.diag(resid), 1e-12, None))
    partial_ag = float(np.clip(resid[1, 2] / (sd[1] * sd[2]), -0.99, 0.99))
    for shrink in np.linspace(1, 0, 21):
        p = np.array([[1, partial_rho, -partial_rho], [partial_rho, 1, shrink * partial_ag],
                      [-partial_rho, shrink * partial_ag, 1]])
        if np.linalg.eigvalsh(p).min() > 1e-9:
            break
    cov_resid = p * np.outer(sd, sd)
    full = np.empty((4, 4))
    full[0, 0], full[0, 1:], full[1:, 0] = 1.0, r, r
    full[1:, 1:] = np.outer(r, r) + cov_resid
    return full


def simulate_fitted_sweep(model: dict, partial_rho: float, settings: int, seeds: int, reps: int,
                          rng: np.random.Generator, design: str = "fixed epochs") -> dict[str, np.ndarray]:
    """Synthetic sweeps (reps, settings·seeds) of loss, trace, test acc., gap from :func:`fit_sweep_model`'s model.

    Settings are drawn from the fitted setting-level distribution (:func:`setting_correlation`), each
    seed adds the measured within-setting noise. ``design``: "fixed epochs" (as run: every setting
    trains the same epochs, its loss varies across settings as measured) or "loss threshold" (every
    run stops at a common training loss: the settings' loss is the same and only the measured seed
    noise of the loss remains; trace, accuracy and gap keep their variation given the loss).
    """
    if design not in ("fixed epochs", "loss threshold"):
        raise ValueError(f"simulate_fitted_sweep: design must be 'fixed epochs' or 'loss threshold', got {design!r}")
    c = setting_correlation(model["between"], partial_rho)
    if design == "loss threshold":  # condition on the loss: the Schur complement, with a zero loss
        r = c[1:, 0]
        c = np.block([[np.zeros((1, 1)), np.zeros((1, 3))], [np.zeros((3, 1)), c[1:, 1:] - np.outer(r, r)]])
    w, v = np.linalg.eigh(c)
    level = rng.standard_normal((reps, settings, 4)) @ (v * np.sqrt(np.clip(w, 0, None))).T
    wn, vn = np.linalg.eigh(model["within"])
    noise = rng.standard_normal((reps, settings, seeds, 4)) @ (vn * np.sqrt(np.clip(wn, 0, None))).T
    runs = (level[:, :, None, :] + noise).reshape(reps, settings * seeds, 4)
    return {k: runs[..., i] for i, k in enumerate(("loss", "trace", "test_acc", "gap"))}


def c6a_fitted_rates(model: dict, partial_rho: float, settings: int, seeds: int, design: str = "fixed epochs",
                     reps: int = 400, boot: int = 400, seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Verdict frequencies of C6a's rule (:func:`htr_utils.study.regularisation_rules.c6a_codes`: cluster-bootstrap
    intervals of the partial Spearman ρ given the training loss) on :func:`simulate_fitted_sweep` data; also the
    mean run-level Spearman(trace, loss) of the simulated sweeps (the collinearity the design sees)."""
    rng = np.random.default_rng(seed)
    sim = simulate_fitted_sweep(model, partial_rho, settings, seeds, reps, rng, design)
    members = np.arange(settings * seeds).reshape(settings, seeds)
    idx = members[rng.integers(0, settings, (boot, settings))].reshape(boot, -1)
    q = [(1 - level) / 2, (1 + level) / 2]
    bounds = {}
    r_trace, r_loss = bootstrap_ranks(sim["trace"], idx), bootstrap_ranks(sim["loss"], idx)   # = rankdata(v[:, idx])
    for col in ("test_acc", "gap"):
        rho = partial_rank_correlation(r_trace, bootstrap_ranks(sim[col], idx), r_loss)
        bounds[col] = np.nanquantile(rho, q, axis=1)
    rt, rl = rankdata(sim["trace"], axis=1), rankdata(sim["loss"], axis=1)
    rt, rl = rt - rt.mean(1, keepdims=True), rl - rl.mean(1, keepdims=True)
    coll = float(np.mean((rt * rl).sum(1) / np.sqrt((rt ** 2).sum(1) * (rl ** 2).sum(1))))
    codes = c6a_codes(bounds["test_acc"][0], bounds["test_acc"][1], bounds["gap"][0], bounds["gap"][1])
    return {**_rates(codes), "Spearman(trace, loss)": coll}


C6A_DESIGNS = (("fixed epochs", 7, 3), ("loss threshold", 7, 3), ("loss threshold", 21, 2), ("loss threshold", 35, 1))


def c6a_design_table(model: dict, designs: Sequence[tuple[str, int, int]] = C6A_DESIGNS, reps: int = 600,
                     boot: int = 400) -> pd.DataFrame:
    """One row per (design, settings, seeds): C6a's verdict frequencies in the fitted model at partial ρ = 0
    (false), −0.5 (holds) and +0.5 (opposite), and the run-level Spearman(trace, loss) the design sees."""
    rows = []
    for design, settings, seeds in designs:
        row = {"design": design, "settings": settings, "seeds": seeds, "runs": settings * seeds}
        for rho, label in ((0.0, "ρ = 0"), (-0.5, "ρ = −0.5"), (0.5, "ρ = +0.5")):
            r = c6a_fitted_rates(model, rho, settings, seeds, design, reps, boot)
            row |= {f"P(R | {label})": r["P(reproduced)"], f"P(N | {label})": r["P(not reproduced)"]}
        row["Spearman(trace, loss)"] = r["Spearman(trace, loss)"]
        rows.append(row)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- amendment 4: C7
MEASURED_MIDDLE_FULL_SD = 0.000375   # sd of paired middle − full HTR test accuracy (figures/cpu/08, 10 seeds)
MEASURED_REDUCTION_SD_PCT = 0.82     # sd over seeds of the per-seed relative trace reduction, full and middle arms (%)


def c7_acts_rates(middle_pct: float, full_pct: float, sd_pct: float = MEASURED_REDUCTION_SD_PCT, n: int = EVALUATION_SEEDS,
                  reps: int = 20000, seed: int = 0) -> float:
    """P(the amended gate says "acts") when the middle and full arms' true mean reductions are ``middle_pct`` and
    ``full_pct`` (%), per-seed reductions N(·, sd_pct²) independent between arms (:func:`c7_acts`)."""
    rng = np.random.default_rng(seed)
    m = middle_pct + sd_pct * rng.standard_normal((reps, n))
    f = full_pct + sd_pct * rng.standard_normal((reps, n))
    half = t_dist.ppf(0.975, n - 1) * m.std(1, ddof=1) / np.sqrt(n)
    hits = [c7_acts({"mean_pct": mm}, {"mean_pct": ff}, {"hi": -(mm - h)})["acts"]
            for mm, ff, h in zip(m.mean(1), f.mean(1), half)]
    return float(np.mean(hits))


def c7_amended_calibration(sds: Sequence[float] = (MEASURED_MIDDLE_FULL_SD, DECORRELATED_PAIRED_SD), n: int = EVALUATION_SEEDS,
                           gain: float = PAPER_GAIN, reps: int = 20000) -> pd.DataFrame:
    """Amended C7's rates: the gate (P(acts)) at the measured reductions, at the two floors and when both arms act;
    the accuracy half (margin gain / 2, as before) and the secondary ±0.1-pt equivalence at the measured paired sd
    of middle − full (and at a decorrelated pair's sd, as arms at an acting dose may be), differences rounded to one
    test image."""
    rows = []
    for m, f, label in ((1.1, 1.0, "as measured (1 %)"), (5.0, 5.0, "on the 5 % floor"), (10.0, 20.0, "on the half-share floor"),
                        (20.0, 20.0, "both act (20 %)"), (8.0, 20.0, "middle acts weakly (8 % vs 20 %)")):
        rows.append({"part": "acts", "scenario": label, "middle / full reduction (%)": f"{m:g} / {f:g}",
                     "P(acts)": c7_acts_rates(m, f, n=n, reps=min(reps, 4000))})
    rng = np.random.default_rng(1)
    for sd, e, label in ((sd, e, label) for sd in sds for e, label in (
            (0.0, "middle = full"), (-gain / 2, "middle − full = −0.05 pt"), (-gain, "middle − full = −0.1 pt"),
            (C7_EQUIVALENCE_MARGIN, "middle − full = +0.1 pt"))):
        lo, hi = paired_intervals_rounded([e], [sd], n, reps, rng)
        rows.append({"part": "accuracy (margin gain / 2) and equivalence (±0.1 pt)", "scenario": label,
                     "sd (pts)": 100 * sd,
                     **_rates(c7_accuracy_codes(lo[:, 0], hi[:, 0], gain / 2)),
                     "P(equivalent)": float((c7_equivalence_codes(lo[:, 0], hi[:, 0]) == R).mean()),
                     "P(not equivalent)": float((c7_equivalence_codes(lo[:, 0], hi[:, 0]) == N).mean())})
    return pd.DataFrame(rows)
