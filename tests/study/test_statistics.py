"""Verdict-rule helpers on constructed inputs with known answers."""
import numpy as np

from htr_utils.study.statistics import (closest_layer_is_middle, decreasing_trend, is_middle, layer_distances, mean_std,
                                outlier_verdict)
from htr_utils.spectra import exact_spectrum_density


def test_middle_rule():
    assert [i for i in range(8) if is_middle(i, 8)] == [2, 3, 4, 5]
    assert [i for i in range(5) if is_middle(i, 5)] == [2, 3]
    assert closest_layer_is_middle([5, 4, 1, 3, 6]) == (2, True)
    assert closest_layer_is_middle([1, 4, 2, 3, 6]) == (0, False)


def test_layer_distances_find_the_matching_layer():
    grid = np.linspace(-1, 11, 2048)
    full = exact_spectrum_density([0, 0, 0, 1, 5, 9], grid=grid, sigma=0.1)
    # σ proportional to the spectrum's range, as SLQ's kappa rule sets it.
    layers = {f"l{i}": exact_spectrum_density(np.array([0, 0, 0, 1, 5, 9]) * s, grid=grid * s, sigma=0.1 * s)
              for i, s in enumerate([0.2, 0.6, 1.0, 0.5, 0.1])}
    table = layer_distances(full, layers)
    assert list(table["layer"]) == ["l0", "l1", "l2", "l3", "l4"]
    assert table["W1 raw"].idxmin() == 2 and table["W1 raw"][2] < 1e-6
    assert table["W1 [0,1]"].max() < 1e-2  # same shape at every scale
    assert np.all(table[["W1 raw", "KL raw", "authors"]].to_numpy() >= 0)


def test_trend():
    epochs = np.arange(20)
    down = decreasing_trend(epochs, np.r_[np.linspace(1, 5, 5), np.linspace(5, 1, 15)])
    assert down["trend"] == "decreasing" and down["early_rise"]
    up = decreasing_trend(epochs, np.linspace(1, 2, 20))
    assert up["trend"] == "increasing"
    rng = np.random.default_rng(0)
    flat = decreasing_trend(epochs, rng.normal(size=20))
    assert flat["trend"] in ("no trend", "decreasing", "increasing") and 0 <= flat["p_one_sided"] <= 1


def test_outlier_verdict():
    top = np.r_[np.linspace(60, 20, 10), np.linspace(2, 1, 10)]
    v = outlier_verdict(top, 10)
    assert v["outliers"] == 10 and v["ok"] and v["gap_ratio"] == 10.0
    assert not outlier_verdict(np.r_[50, np.linspace(2, 1, 19)], 10)["ok"]


def test_mean_std():
    assert mean_std([1, 2, 3]) == "2 ± 1"
