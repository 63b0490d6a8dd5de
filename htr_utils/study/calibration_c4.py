"""Calibration of C4's amendment 6 (PROTOCOL.md): the normalised-W1 depth regression whose noise comes from its own
residuals, on the real layer structure of LeNet (5 layers) and VGG11_bn w0.125 (9 layers).

Model: log normalised W1_ki = α_k + b log(n_ki / N_k) + c |d_i − 1/2| + σ ε_ki, ε iid N(0, 1), c = 2 ln ρ. Under it
ĉ ~ N(c, (kσ)²) with k = √[(XᵀX)⁻¹]_cc and σ̂² ~ σ² χ²_df / df independent of ĉ, so the rule's verdict frequencies
are drawn from those two laws (:func:`c4_rates`); :func:`c4_rates_through_rule` checks them through the rule's own
code (:func:`htr_utils.study.spectra_rules.c4_normalised_test`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from . import spectra_rules as rules
from .calibration_spectra import C4_SIZES, rates
from .regularisation_rules import I, N, R

C4_SIGMAS = (0.2, 0.3, 0.4, 0.5, 0.63)   # residual sd of log W1 over the real layers (0.63: amendment 5's assumption)
C4_RATIOS = (1.0, 2.0, 3.0, 4.0, 6.0)   # true end-to-centre ratio ρ (1: no depth effect)


def design_factor(sizes: Sequence[Sequence[int]] = tuple(C4_SIZES.values())) -> tuple[float, int]:
    """k = √[(XᵀX)⁻¹]_cc of the depth regression (se(ĉ) = kσ) and its residual degrees of freedom."""
    X, _ = rules._depth_design(sizes)
    return float(np.sqrt(np.linalg.inv(X.T @ X)[-1, -1])), X.shape[0] - X.shape[1]


def c4_rates(ratio: float, sigma: float, sizes: Sequence[Sequence[int]] = tuple(C4_SIZES.values()),
             stated_ratio: float = rules.C4_NORMALISED_RATIO, sims: int = 200_000, seed: int = 0) -> dict[str, float]:
    """Verdict frequencies of amendment 6 at true ratio ``ratio`` and residual sd ``sigma``: P(R), P(N), P(I) and
    P(underpowered) (part of P(I)), from ĉ and σ̂ drawn from their exact laws."""
    k, df = design_factor(sizes)
    rng = np.random.default_rng(seed)
    c = 2 * np.log(ratio) + k * sigma * rng.standard_normal(sims)
    se = k * sigma * np.sqrt(rng.chisquare(df, sims) / df)
    t = stats.t.ppf(1 - rules.ALPHA, df)
    c1 = 2 * np.log(stated_ratio)
    power = stats.nct.sf(t, df, c1 / se)
    under = power < rules.C4_MIN_POWER
    codes = np.where(under, I, np.where(c / se > t, R, np.where((c - c1) / se < -t, N, I)))
    return {**rates(codes), "P(underpowered)": float(under.mean())}


def c4_rates_through_rule(ratio: float, sigma: float, sizes: Sequence[Sequence[int]] = tuple(C4_SIZES.values()),
                          sims: int = 2000, seed: int = 0, slope: float = 0.3) -> dict[str, float]:
    """The same frequencies by simulating layers' log W1 and applying :func:`spectra_rules.c4_normalised_test`."""
    X, z = rules._depth_design(sizes)
    splits = np.cumsum([len(s) for s in sizes])[:-1]
    rng = np.random.default_rng(seed)
    codes, under = [], []
    for _ in range(sims):
        y = slope * X[:, -2] + 2 * np.log(ratio) * z + sigma * rng.standard_normal(len(z))
        out = rules.c4_normalised_test(np.split(y, splits), sizes)
        codes.append(out["code"])
        under.append(out["underpowered"])
    return {**rates(np.array(codes)), "P(underpowered)": float(np.mean(under))}


def c4_calibration(ratios: Sequence[float] = C4_RATIOS, sigmas: Sequence[float] = C4_SIGMAS,
                   sims: int = 20_000) -> pd.DataFrame:
    """One row per (residual sd, true ratio): amendment 6's verdict frequencies on LeNet's and VGG11_bn's real layers,
    beside the power the same design would have without the underpowered gate (exact, noncentral t)."""
    k, df = design_factor()
    rows = []
    for s in sigmas:
        for q in ratios:
            rows.append({"sigma": s, "true ratio": q, **c4_rates(q, s, sims=sims),
                         "power without gate": rules.c4_power_at(k * s, df, q)})
    return pd.DataFrame(rows)


def largest_deciding_sigma(stated_ratio: float = rules.C4_NORMALISED_RATIO) -> float:
    """The residual sd above which the design has under 50 % power at the stated ratio (where the gate trips)."""
    k, df = design_factor()
    lo, hi = 1e-3, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if rules.c4_power_at(k * mid, df, stated_ratio) >= rules.C4_MIN_POWER else (lo, mid)
    return lo
