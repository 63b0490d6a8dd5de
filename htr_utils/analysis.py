"""The computations behind the notebooks' verdict rules: distance tables, middle-layer test, trends, outliers.

Each function states its rule in its docstring, so a notebook can quote it before the result.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from .lanczos import SpectralDensity
from .spectra import authors_distance, count_outliers, spectral_distance

DISTANCE_VARIANTS: dict[str, dict] = {
    "W1 raw": {"metric": "wasserstein", "rescale": False},
    "W1 [0,1]": {"metric": "wasserstein", "rescale": True},
    "KL raw": {"metric": "kl", "rescale": False},
    "KL [0,1]": {"metric": "kl", "rescale": True},
    "authors": {"authors": True},
}


def layer_distances(full: SpectralDensity, layers: Mapping[str, SpectralDensity]) -> pd.DataFrame:
    """One row per layer (forward order): its depth, normalised depth (0..1) and every distance variant to ``full``.

    KL is KL(layer ‖ full). "authors" is the public code's density-value variant.
    """
    names = list(layers)
    rows = []
    for i, name in enumerate(names):
        row = {"layer": name, "depth": i, "normalised_depth": i / max(len(names) - 1, 1)}
        for label, kw in DISTANCE_VARIANTS.items():
            if kw.get("authors"):
                row[label] = authors_distance(layers[name], full)
            else:
                row[label] = spectral_distance(layers[name], full, kw["metric"], rescale=kw["rescale"])
        rows.append(row)
    return pd.DataFrame(rows)


def is_middle(index: int, num_layers: int) -> bool:
    """The middle half of L layers: indices i with L/4 <= i < 3L/4 (the same rule as layers.middle_layers)."""
    return num_layers / 4 <= index < 3 * num_layers / 4


def closest_layer_is_middle(distances: Sequence[float]) -> tuple[int, bool]:
    """Rule for C4: the layer with the smallest distance (ties: the first) lies in the middle half."""
    d = np.asarray(distances, dtype=float)
    k = int(np.argmin(d))
    return k, is_middle(k, len(d))


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


def outlier_verdict(top: Sequence[float], num_classes: int, tolerance: int = 2) -> dict:
    """Rule for C1/C3: with the top 2C eigenvalues, the largest ratio gap λ_k/λ_{k+1} falls at |k − C| <= tolerance."""
    values = np.sort(np.asarray(top, dtype=float))[::-1][: 2 * num_classes]
    k = count_outliers(values)
    return {"outliers": k, "C": num_classes, "ok": abs(k - num_classes) <= tolerance,
            "gap_ratio": float(values[k - 1] / values[k]) if 0 < k < len(values) and values[k] > 0 else float("nan")}


def mean_std(values: Sequence[float]) -> str:
    """'mean ± std' (sample std, ddof=1) for a handful of seeds."""
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4g} ± {v.std(ddof=1) if len(v) > 1 else float('nan'):.2g}"
