"""Error rates of issue 31's amended C6a, C6b and C7 rules by simulation, at what the committed cpu run measured.

Every function draws synthetic measurements and applies the rule's own implementation
(:mod:`htr_utils.study.regularisation_rules`), so a rule cannot be calibrated in one form and
applied in another. The earlier rules' calibration stays in :mod:`htr_utils.study.calibration`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import t as t_dist

from .regularisation_rules import (ACCURACY_RESOLUTION, GAIN_THRESHOLD, MEASURED_PAIRED_CORR, MEASURED_PAIRED_SD,
                                   PAPER_GAIN, I, N, R, any_gain_codes, paper_gain_codes)


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


def c6b_amended_rates(effect: float, sds: Sequence[float] = MEASURED_PAIRED_SD, n: int = 10,
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


def c6b_min_detectable(sds: Sequence[float] = MEASURED_PAIRED_SD, n: int = 10, corr: float = MEASURED_PAIRED_CORR,
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


def c6b_amended_calibration(sds: Sequence[float] = MEASURED_PAIRED_SD, n: int = 10, corr: float = MEASURED_PAIRED_CORR,
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
    from scipy.special import gammaln

    c4 = np.sqrt(2 / (n - 1)) * np.exp(gammaln(n / 2) - gammaln((n - 1) / 2))
    return float(100 * t_dist.ppf(0.5 + level / 2, n - 1) * c4 * sd / np.sqrt(n) / published_gain)


def authors_schedule_precision(sds: Sequence[float] = (MEASURED_PAIRED_SD[0], 0.0005, 0.001),
                               seeds: Sequence[int] = (3, 5, 10)) -> pd.DataFrame:
    """:func:`share_halfwidth` for each paired sd of SGD 40 − SGD 30 and number of seeds: how precisely the
    authors'-schedule row can say what share of a +0.1-point gain the extra epochs explain."""
    return pd.DataFrame([{"sd of SGD 40 − SGD 30 (pts)": 100 * sd, "seeds": n,
                          "share interval ± (% of +0.1 pt)": share_halfwidth(sd, n)} for sd in sds for n in seeds])
