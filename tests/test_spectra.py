"""Distances between spectral densities and the outlier count."""
import numpy as np
import pytest
from scipy.stats import entropy, wasserstein_distance

from htr_utils import authors_distance, count_outliers, exact_spectrum_density, spectral_distance
from htr_utils.lanczos import density_from_quadrature


def _spectrum(values, sigma=0.05):
    grid = np.linspace(-2, 12, 2048)
    return exact_spectrum_density(np.asarray(values, float), grid=grid, sigma=sigma)


def test_zero_on_identical_and_non_negative():
    a, b = _spectrum([0, 0, 1, 5]), _spectrum([0, 2, 3, 7])
    for metric in ("wasserstein", "kl"):
        for rescale in (False, True):
            assert spectral_distance(a, a, metric, rescale=rescale) == pytest.approx(0, abs=1e-12)
            assert spectral_distance(a, b, metric, rescale=rescale) > 0
    assert authors_distance(a, a) == pytest.approx(0, abs=1e-15)


def test_wasserstein_equals_shift_for_translated_spectrum():
    # W1 between a measure and its translate by s is |s|; smoothing does not change that.
    a, b = _spectrum([1, 2, 4]), _spectrum([2.5, 3.5, 5.5])
    assert spectral_distance(a, b) == pytest.approx(1.5, rel=1e-3)
    assert spectral_distance(a, b, rescale=True) == pytest.approx(0, abs=1e-3)  # same shape


def test_wasserstein_matches_scipy_on_atoms():
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=40), rng.normal(1, 2, size=60)
    grid = np.linspace(-12, 12, 8000)
    a = exact_spectrum_density(u, grid=grid, sigma=0.01)
    b = exact_spectrum_density(v, grid=grid, sigma=0.01)
    assert spectral_distance(a, b, points=8000) == pytest.approx(wasserstein_distance(u, v), rel=1e-2)


def test_kl_matches_scipy_entropy_on_common_grid():
    a, b = _spectrum([0, 1, 2], sigma=0.5), _spectrum([0.5, 1, 3], sigma=0.5)
    grid = np.linspace(-2, 12, 4096)
    p = np.interp(grid, a.grid, a.density)
    q = np.interp(grid, b.grid, b.density)
    assert spectral_distance(a, b, "kl", floor=1e-300) == pytest.approx(entropy(p, q), rel=1e-3)


def test_kl_is_finite_with_disjoint_support():
    a, b = _spectrum([0, 0.1], sigma=0.01), _spectrum([9, 9.1], sigma=0.01)
    d = spectral_distance(a, b, "kl")
    assert np.isfinite(d) and d > 10  # about log(1/floor)


def test_unknown_metric():
    a = _spectrum([0, 1])
    with pytest.raises(ValueError, match="unknown metric"):
        spectral_distance(a, a, "cosine")


def test_count_outliers():
    assert count_outliers([100, 90, 80, 1.0, 0.9, 0.8]) == 3
    assert count_outliers(np.r_[np.linspace(50, 40, 10), np.linspace(1, 0.5, 10)]) == 10
    assert count_outliers([5, 1, 0.9], max_count=1) == 1


def test_density_from_quadrature_width_follows_kappa_rule():
    nodes = np.linspace(0, 1, 128)[None, :]
    weights = np.full_like(nodes, 1 / 128)
    d = density_from_quadrature(nodes, weights, margin=0.05, kappa=1.25)
    # Range 1.1 after the 5 % margins, 128 nodes: σ = 1.1 / (127 √(8 ln 1.25)).
    assert d.sigma == pytest.approx(1.1 / (127 * np.sqrt(8 * np.log(1.25))))
    assert np.trapezoid(d.density, d.grid) == pytest.approx(1.0)


def test_narrow_spectrum_against_wide_one_keeps_its_mass():
    """A spectrum narrower than one cell of the uniform grid must not vanish (it is at ~0 here)."""
    narrow = exact_spectrum_density(np.array([1e-7, 2e-7, 3e-7]))
    wide = _spectrum([0, 5, 9])
    d = spectral_distance(narrow, wide)
    assert np.isfinite(d) and d == pytest.approx(wasserstein_distance([2e-7], [0, 5, 9]), rel=0.02)
    assert np.isfinite(spectral_distance(narrow, wide, "kl"))
