"""Notebooks 04/05 helpers on constructed curvature records with known answers."""
import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest

from htr_utils.study import depth_trends as ts
from htr_utils.study import plotting
from htr_utils.study.records import BlockCurvature, CurvatureRecord, KindCurvature, TraceRecord
from htr_utils.spectra import exact_spectrum_density, spectral_distance

FULL = np.array([0.0] * 20 + [0.5, 1.0, 2.0, 4.0])
LAYERS = ("l0", "l1", "l2", "l3", "l4")  # middle half of 5 layers: l2, l3


def _entry(eigs, trace=1.0, stderr=0.1, top=None):
    eigs = np.asarray(eigs, dtype=float)
    top = sorted(eigs, reverse=True)[:4] if top is None else top
    return BlockCurvature(exact_spectrum_density(eigs), tuple(top), len(eigs), TraceRecord(trace, stderr, 10))


def _record(epoch, powers, traces=None, lam=None):
    """Layer l's spectrum = FULL ** powers[l] (power 1: identical to the full spectrum; others differ in
    scale and in shape, more so the farther the power is from 1)."""
    traces = traces or [1.0] * len(powers)
    layers = {name: _entry(FULL ** k, trace=t, top=None if lam is None else [lam / 2])
              for name, k, t in zip(LAYERS, powers, traces)}
    full = _entry(FULL, trace=sum(traces), top=None if lam is None else [lam])
    return CurvatureRecord(epoch, 24, (), tuple(layers), {"hessian": KindCurvature(full, layers)})


def test_narrow_layer_spectrum_is_resolved():
    """A layer spectrum ~1e-7 wide against a full spectrum ~1 wide: the 4096-point common grid misses it."""
    full = exact_spectrum_density(FULL)
    narrow = exact_spectrum_density(FULL * 1e-7)
    table = ts.layer_distances(full, {"narrow": narrow, "same": full})
    # W1 between ~a point mass at 0 and the full measure = mean |λ| (the Gaussian smoothing adds a little)
    assert table.loc[0, "W1 raw"] == pytest.approx(np.abs(FULL).mean(), rel=0.05)
    # KL(narrow ‖ full) grows like log(1 / width) as the layer spectrum narrows (resolved, not grid-limited)
    wider = exact_spectrum_density(FULL * 1e-5)
    gain = table.loc[0, "KL raw"] - spectral_distance(wider, full, "kl")
    assert gain == pytest.approx(np.log(100), rel=0.05)
    assert table.loc[1, "W1 raw"] < 1e-9 and np.isfinite(table.to_numpy()[:, 3:].astype(float)).all()


def _records_middle_wins():
    # epoch 0: l0 identical to the full spectrum; epochs 1-3: l2 identical (and l0 far off)
    return [_record(0, [1.0, 1.5, 2, 2.5, 3])] + [_record(e, [3.0, 2, 1.0, 1.5, 2.5]) for e in (1, 2, 3)]


def test_distance_table_and_closest_layers():
    dist = ts.distance_table(_records_middle_wins())
    assert len(dist) == 4 * 5 and list(dist.columns[:4]) == ["epoch", "layer", "depth", "normalised_depth"]
    assert set(ts.METRICS) <= set(dist.columns)
    summed = ts.summed_distances(dist)  # epochs >= 1 only
    assert list(summed["layer"]) == list(LAYERS) and summed["W1 raw"].idxmin() == 2
    at0 = ts.closest_layers({"m": dist}, epoch=0)
    assert (at0.loc[at0["faithful"], "closest"] == 0).all()
    closest = ts.closest_layers({"m": dist})
    faithful = closest[closest["faithful"]]
    assert (faithful["closest"] == 2).all() and faithful["middle"].all()
    assert closest.loc[0, "middle_layers"] == "l2, l3"
    table = ts.closest_summary(closest)
    assert table.loc["m", "W1 raw"] == "2 (l2): yes" and list(table.columns) == list(ts.METRICS)
    frac = ts.middle_fraction_by_epoch({"m": dist})
    assert frac.loc["m", "W1 raw"] == 1.0
    assert ts.c4_verdict(closest).verdict == "reproduced"


def _closest(rows):
    return pd.DataFrame([{"run": r, "metric": m, "middle": mid} for r, m, mid in rows])


def test_c4_verdict_branches():
    f = ts.FAITHFUL
    good = _closest([(r, m, True) for r in "ab" for m in f] + [("a", "authors", False), ("b", "authors", True)])
    v = ts.c4_verdict(good)
    assert v.verdict == "reproduced" and v.details["pairs_middle"] == 8
    assert v.details["authors_middle"] == {"a": False, "b": True} and "8/8" in v.measured
    # majority, but run b never in the middle -> inconclusive
    mixed = _closest([("a", m, True) for m in f] + [("b", m, False) for m in f] + [("c", m, True) for m in f])
    assert ts.c4_verdict(mixed).verdict == "inconclusive"
    assert ts.c4_verdict(mixed).details["runs_never_middle"] == ["b"]
    # exactly half -> not reproduced
    half = _closest([("a", m, i < 2) for i, m in enumerate(f)])
    assert ts.c4_verdict(half).verdict == "not reproduced"
    # the authors' variant does not count
    only_authors = _closest([("a", m, False) for m in f] + [("a", "authors", True)])
    assert ts.c4_verdict(only_authors).verdict == "not reproduced"


def _trend_records(full_trace, layer_trace_sign=-1, epochs=11):
    recs = []
    for e in range(epochs):
        t = full_trace(e)
        layer = [max(1.0, 5 + layer_trace_sign * (e - 2) * (i + 1)) if e >= 2 else 1.0 + e for i in range(5)]
        recs.append(_record(e, [0.5, 0.7, 1.0, 1.2, 1.5], traces=[t / 5 + l for l in layer], lam=t))
    return recs


def test_curvature_series_layout():
    s = ts.curvature_series(_trend_records(lambda e: 10.0 - e))
    assert list(s.columns) == ["epoch", "scope", "depth", "trace", "trace_stderr", "lambda_max"]
    assert list(s["scope"].unique()) == ["full", *LAYERS] and len(s) == 11 * 6
    full = s[s["scope"] == "full"]
    assert np.allclose(full["lambda_max"], 10.0 - np.arange(11))


def test_trend_table_and_c5_verdict():
    rise_then_fall = lambda e: 5.0 + e if e <= 2 else 20.0 - e  # noqa: E731
    trends = ts.trend_table({"r": ts.curvature_series(_trend_records(rise_then_fall))})
    assert set(trends["quantity"]) == {"trace", "λ_max"} and len(trends) == 2 * 6
    full = trends[trends["level"] == "full"]
    assert (full["trend"] == "decreasing").all() and full["early_rise"].all()
    assert (full["n"] == 6).all()  # epochs 5..10
    assert np.isfinite(trends.loc[trends["quantity"] == "trace", "noise"]).all()
    assert trends.loc[trends["quantity"] == "λ_max", "noise"].isna().all()
    v = ts.c5_verdict(trends)
    assert v.verdict == "reproduced" and v.details["layer_decreasing_share"] == 1.0 and v.details["full_early_rise"] == 2

    rising = ts.trend_table({"r": ts.curvature_series(_trend_records(lambda e: 1.0 + e, layer_trace_sign=1))})
    assert ts.c5_verdict(rising).verdict == "not reproduced"
    both = pd.concat([trends, rising.assign(run="r2")], ignore_index=True)
    assert ts.c5_verdict(both).verdict == "inconclusive"
    short = ts.trend_table({"r": ts.curvature_series(_trend_records(lambda e: 10.0 - e, epochs=4))})
    assert ts.c5_verdict(short).verdict == "inconclusive" and ts.c5_verdict(short).details["too_few_epochs"]


def test_figures_build():
    dist = {"m": ts.distance_table(_records_middle_wins())}
    fig = plotting.plot_depth_profiles(dist, {"m": 3})
    assert len(fig.axes) == 2 * len(ts.METRICS)
    fig = plotting.plot_distance_heatmaps(dist, "W1 [0,1]")
    assert fig.axes[0].get_title() == "m"
    series = {"r": ts.curvature_series(_trend_records(lambda e: 10.0 - e)),
              "q": ts.curvature_series(_trend_records(lambda e: e - 1.0))}  # a trace <= 0 at epochs 0, 1
    fig = plotting.plot_trends(series)
    assert len(fig.axes) == 6 and fig.axes[0].get_yscale() == "log"
    matplotlib.pyplot.close("all")


def test_middle_rule():
    assert [i for i in range(8) if ts.is_middle(i, 8)] == [2, 3, 4, 5]
    assert [i for i in range(5) if ts.is_middle(i, 5)] == [2, 3]
    assert ts.closest_layer_is_middle([5, 4, 1, 3, 6]) == (2, True)
    assert ts.closest_layer_is_middle([1, 4, 2, 3, 6]) == (0, False)


def test_layer_distances_find_the_matching_layer():
    grid = np.linspace(-1, 11, 2048)
    full = exact_spectrum_density([0, 0, 0, 1, 5, 9], grid=grid, sigma=0.1)
    # σ proportional to the spectrum's range, as SLQ's kappa rule sets it.
    layers = {f"l{i}": exact_spectrum_density(np.array([0, 0, 0, 1, 5, 9]) * s, grid=grid * s, sigma=0.1 * s)
              for i, s in enumerate([0.2, 0.6, 1.0, 0.5, 0.1])}
    table = ts.layer_distances(full, layers)
    assert list(table["layer"]) == ["l0", "l1", "l2", "l3", "l4"]
    assert table["W1 raw"].idxmin() == 2 and table["W1 raw"][2] < 1e-6
    assert table["W1 [0,1]"].max() < 1e-2  # same shape at every scale
    assert np.all(table[["W1 raw", "KL raw", "authors"]].to_numpy() >= 0)
