"""Comparing spectra as probability distributions over the eigenvalue axis, and counting outliers.

A :class:`~htr_utils.lanczos.SpectralDensity` is a probability density φ on a grid. Two
spectra are compared by

    Wasserstein-1:  W₁(φ_a, φ_b) = ∫ |F_a(λ) − F_b(λ)| dλ       (F = cumulative distribution)
    KL:             KL(φ_a ‖ φ_b) = Σ_i p_i log(p_i / q_i)       on a common grid,

where p_i, q_i are the two densities' probabilities per grid cell, each floored at ``floor``
and renormalised so that KL stays finite where φ_b vanishes (a documented, fixed floor).
``rescale=True`` first maps each spectrum's support [min θ, max θ] to [0, 1], so only the
shape is compared, not the scale. :func:`authors_distance` is the public code's variant
(a distance between arrays of transformed density values), kept for comparison only.
"""
from __future__ import annotations

import numpy as np
from scipy.stats import wasserstein_distance

from .lanczos import SpectralDensity, gaussian_density

METRICS = ("wasserstein", "kl")
KL_FLOOR = 1e-10
COMMON_GRID_POINTS = 4096


def exact_spectrum_density(eigenvalues: np.ndarray, grid: np.ndarray | None = None, sigma: float | None = None,
                           grid_points: int = 1024, margin: float = 0.05) -> SpectralDensity:
    """The exact spectral measure (1/n) Σ δ(λ − λ_i) as a SpectralDensity, smoothed like SLQ's."""
    ev = np.sort(np.asarray(eigenvalues, dtype=float))
    if grid is None:
        span = max(ev[-1] - ev[0], 1e-12)
        grid = np.linspace(ev[0] - margin * span, ev[-1] + margin * span, grid_points)
    if sigma is None:
        sigma = (grid[-1] - grid[0]) / 200
    weights = np.full((1, len(ev)), 1.0 / len(ev))
    return SpectralDensity(grid, gaussian_density(ev[None, :], weights, grid, sigma), ev[None, :], weights, sigma,
                           {"exact": True, "dim": len(ev)})


def _support(d: SpectralDensity) -> tuple[float, float]:
    nodes, weights = d.atoms
    live = nodes[weights > 0]
    lo, hi = float(live.min()), float(live.max())
    return lo, (hi if hi > lo else lo + 1.0)


def _rescaled(d: SpectralDensity) -> SpectralDensity:
    """The same spectrum on the axis (λ − min θ) / (max θ − min θ); density rescaled to stay normalised."""
    lo, hi = _support(d)
    s = hi - lo
    return SpectralDensity((d.grid - lo) / s, d.density * s, (d.nodes - lo) / s, d.weights, d.sigma / s, dict(d.meta))


def _on_common_grid(a: SpectralDensity, b: SpectralDensity, points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both densities interpolated (zero outside their own grids) onto one grid spanning both, renormalised.

    The grid is the union of both densities' own grids and ``points`` uniform points, so a
    spectrum far narrower than the other keeps its resolution.
    """
    uniform = np.linspace(min(a.grid[0], b.grid[0]), max(a.grid[-1], b.grid[-1]), points)
    grid = np.unique(np.concatenate([uniform, a.grid, b.grid]))
    out = []
    for d in (a, b):
        f = np.interp(grid, d.grid, d.density, left=0.0, right=0.0)
        area = np.trapezoid(f, grid)
        if not area > 0:
            raise ValueError("a spectral density integrates to zero on its grid; was it computed correctly?")
        out.append(f / area)
    return grid, out[0], out[1]


def spectral_distance(a: SpectralDensity, b: SpectralDensity, metric: str = "wasserstein", rescale: bool = False,
                      floor: float = KL_FLOOR, points: int = COMMON_GRID_POINTS) -> float:
    """Distance between two spectral densities as distributions over λ: "wasserstein" (W₁) or "kl" (KL(a‖b))."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}.")
    if rescale:
        a, b = _rescaled(a), _rescaled(b)
    grid, fa, fb = _on_common_grid(a, b, points)
    if metric == "wasserstein":
        Fa = np.concatenate([[0.0], np.cumsum((fa[1:] + fa[:-1]) / 2 * np.diff(grid))])
        Fb = np.concatenate([[0.0], np.cumsum((fb[1:] + fb[:-1]) / 2 * np.diff(grid))])
        return float(np.trapezoid(np.abs(Fa - Fb), grid))
    cell = np.zeros_like(grid)  # trapezoid weight of each grid point
    cell[1:] += np.diff(grid) / 2
    cell[:-1] += np.diff(grid) / 2
    p, q = fa * cell, fb * cell
    p, q = np.maximum(p / p.sum(), floor), np.maximum(q / q.sum(), floor)
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def atoms_wasserstein(a: SpectralDensity, b: SpectralDensity) -> float:
    """W₁ between the unsmoothed quadrature measures Σ τ_j δ(λ − θ_j) of two spectra."""
    (na, wa), (nb, wb) = a.atoms, b.atoms
    return float(wasserstein_distance(na, nb, wa, wb))


def _authors_transform(density: np.ndarray) -> np.ndarray:
    """Zeros → smallest positive value, log, min-max to [0, 1], divide by the sum (the public code's steps)."""
    d = np.asarray(density, dtype=float)
    positive = d[d > 0]
    d = np.where(d > 0, d, positive.min() if positive.size else 1.0)
    p = np.log(d)
    p = (p - p.min()) / max(p.max() - p.min(), 1e-300)
    return p / max(p.sum(), 1e-300)


def authors_distance(a: SpectralDensity, b: SpectralDensity) -> float:
    """The public code's layer-vs-full distance: W₁ between the two arrays of transformed *density values*.

    This treats density values as samples, so it ignores where on the λ axis mass lies; it is
    reported beside :func:`spectral_distance` so readers can see whether a conclusion
    depends on it.
    """
    return float(wasserstein_distance(_authors_transform(a.density), _authors_transform(b.density)))


def count_outliers(top_eigenvalues: np.ndarray, max_count: int | None = None) -> int:
    """Number of outliers among the top eigenvalues: position of the largest ratio gap λ_k / λ_{k+1}.

    Only positive eigenvalues are considered; ``max_count`` limits k (default: all but the
    last, which needs a successor). For the paper's "about C outliers", pass the top 2C values.
    """
    ev = np.sort(np.asarray(top_eigenvalues, dtype=float))[::-1]
    ev = ev[ev > 0]
    if len(ev) < 2:
        return len(ev)
    ratios = ev[:-1] / ev[1:]
    if max_count is not None:
        ratios = ratios[:max_count]
    return int(np.argmax(ratios)) + 1
