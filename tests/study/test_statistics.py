"""The statistics behind the verdict rules, on inputs with known answers."""
import math

import numpy as np
import pytest
from scipy import stats

from htr_utils.study.statistics import bootstrap_difference, decreasing_trend, mean_std, spearman_bootstrap, welch_difference


def test_trend():
    epochs = np.arange(20)
    down = decreasing_trend(epochs, np.r_[np.linspace(1, 5, 5), np.linspace(5, 1, 15)])
    assert down["trend"] == "decreasing" and down["early_rise"]
    up = decreasing_trend(epochs, np.linspace(1, 2, 20))
    assert up["trend"] == "increasing"
    rng = np.random.default_rng(0)
    flat = decreasing_trend(epochs, rng.normal(size=20))
    assert flat["trend"] in ("no trend", "decreasing", "increasing") and 0 <= flat["p_one_sided"] <= 1


def test_mean_std():
    assert mean_std([1, 2, 3]) == "2 ± 1"


def test_welch_interval_matches_the_textbook_formula():
    a, b = [0.91, 0.93, 0.92, 0.95], [0.90, 0.89, 0.915]
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))  # Welch-Satterthwaite
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    d = np.mean(a) - np.mean(b)
    w = welch_difference(a, b)
    assert w["diff"] == pytest.approx(d, abs=1e-12)
    assert (w["lo"], w["hi"]) == pytest.approx((d - half, d + half), abs=1e-10)
    assert w["p"] == pytest.approx(2 * stats.t.sf(abs(d) / math.sqrt(va + vb), df), rel=1e-8)


def test_welch_drops_nan_and_needs_two_values():
    w = welch_difference([0.9, float("nan"), 0.92], [0.8, 0.81])
    assert w["n_a"] == 2 and math.isfinite(w["lo"])
    w = welch_difference([0.9], [0.8, 0.81])
    assert w["diff"] == pytest.approx(0.095) and math.isnan(w["lo"])
    w = welch_difference([0.9, 0.9], [0.8, 0.8])  # no spread: no interval, not a zero-width one
    assert w["diff"] == pytest.approx(0.1) and math.isnan(w["lo"]) and math.isnan(w["p"])


def test_bootstrap_interval_covers_the_difference_and_shrinks_with_n():
    rng = np.random.default_rng(1)
    small = bootstrap_difference(rng.normal(1, 1, 20), rng.normal(0, 1, 20))
    big = bootstrap_difference(rng.normal(1, 1, 2000), rng.normal(0, 1, 2000))
    assert big[0] < 1 < big[1] and big[1] - big[0] < 0.2 < small[1] - small[0]


def test_spearman_bootstrap():
    x = np.arange(8.0)
    perfect = spearman_bootstrap(x, -x ** 3)
    assert perfect["rho"] == pytest.approx(-1) and perfect["hi"] == pytest.approx(-1)
    rng = np.random.default_rng(0)
    y = rng.normal(size=8)
    r = spearman_bootstrap(x, y)
    assert r["rho"] == pytest.approx(stats.spearmanr(x, y)[0]) and r["lo"] <= r["rho"] <= r["hi"]
