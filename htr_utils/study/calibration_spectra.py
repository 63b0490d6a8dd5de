"""Calibration of the spectra rules' issue-30 amendments (PROTOCOL.md, C1–C5): each rule's own implementation
(:mod:`htr_utils.study.spectra_rules`) applied to measurements simulated in a model fitted to what the committed
runs measured, so that the protocol's false-"reproduced" rates and powers can be recomputed.

The earlier rules' calibrations stay in :mod:`htr_utils.study.calibration`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from . import spectra_rules as rules
from .calibration import expected_tau, slope_for_tau
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
    from .calibration import kendall_exact

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
