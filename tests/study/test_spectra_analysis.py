"""The spectra notebooks' helpers (htr_utils.study.spectra_analysis) on constructed records with known answers."""
from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from htr_utils.lanczos import density_from_quadrature  # noqa: E402
from htr_utils.spectra import exact_spectrum_density, spectral_distance  # noqa: E402
from htr_utils.study.plotting import (plot_full_spectrum, plot_gauss_newton_grid, plot_gauss_newton_trends,  # noqa: E402
                                      plot_layer_tops, plot_outlier_counts, plot_outlier_history, plot_top_comparison)
from htr_utils.study.spectra_analysis import (bulk_mass, epochs_with_kinds, full_spectrum_summary,  # noqa: E402
                                              gauss_newton_comparison, gauss_newton_pass, gauss_newton_table,
                                              layer_table, relative_top_difference, rule_values, run_overview,
                                              spectral_radius, spectral_support, top_within_trace, w1_distance)
from htr_utils.study import spectra_analysis as ss  # noqa: E402
from htr_utils.study.records import BlockCurvature, CurvatureRecord, KindCurvature, TraceRecord  # noqa: E402
from htr_utils.study.training import TrainConfig  # noqa: E402

C = 4
# C outliers well separated from a bulk of 60 eigenvalues in [0, 0.05]
OUTLIERS = np.array([40.0, 25.0, 16.0, 10.0])
BULK = np.linspace(0.0, 0.05, 60)
SPECTRUM = np.concatenate([OUTLIERS, BULK])


def entry(eigenvalues, k=2 * C, top=None):
    ev = np.sort(np.asarray(eigenvalues, dtype=float))[::-1]
    top = ev[:k].tolist() if top is None else top
    return BlockCurvature(exact_spectrum_density(ev), tuple(top), len(ev), TraceRecord(float(ev.sum()), 0.0, 1))


def record(epoch=3, ggn_scale=1.0, residual=None, kinds=("hessian", "ggn", "residual"), ggn_top=None):
    """Hess = SPECTRUM; G = SPECTRUM * ggn_scale; H = ``residual`` eigenvalues (default: small, in ±0.1);
    two layers with Hess_l = G_l and H_l = 0 (as for piecewise-linear networks)."""
    residual = np.linspace(-0.1, 0.1, 8) if residual is None else np.asarray(residual, dtype=float)
    spectra = {"hessian": SPECTRUM, "ggn": SPECTRUM * ggn_scale, "residual": residual}
    out = {}
    for kind in kinds:
        layer_ev = spectra[kind] if kind != "residual" else np.zeros(1)
        out[kind] = KindCurvature(entry(spectra[kind], top=ggn_top if kind == "ggn" else None),
                                  {"a": entry(layer_ev), "b": entry(layer_ev * 0.5)})
    return CurvatureRecord(epoch, 64, (), ("a", "b"), out)


class FakeRun:
    def __init__(self, config, records):
        self.config, self.records = config, records
        self.metrics = pd.DataFrame({"epoch": [1, 2, 3], "test_acc": [0.5, 0.6, 0.7]})

    def curvature_epochs(self):
        return sorted(self.records)

    def curvature(self, epoch):
        return self.records[epoch]


CFG = TrainConfig(dataset="digits", epochs=3, curvature_every=1, curvature_kinds=("hessian", "ggn", "residual"),
                  curvature_kinds_epochs=(0, 3))


def test_support_radius_and_bulk_mass():
    d = density_from_quadrature(np.array([[-2.0, 0.0, 0.001, 5.0, 10.0]]), np.array([[0.1, 0.4, 0.3, 0.1, 0.1]]))
    assert spectral_support(d) == (-2.0, 10.0)
    assert spectral_radius(d) == 10.0
    assert bulk_mass(d, 0.01) == pytest.approx(0.7)   # |θ| < 0.1
    assert bulk_mass(d, 0.3) == pytest.approx(0.8)    # |θ| < 3 includes -2


def test_rule_values_keep_the_upper_half_of_few_ritz_values():
    ritz = np.array([1e-9, 0.01, 0.02, 2.0, 5.0, 9.0])           # 6 Ritz values, padded with the max
    nodes = np.concatenate([ritz, [9.0, 9.0]])[None, :]
    weights = np.array([[0.3, 0.3, 0.2, 0.1, 0.05, 0.05, 0.0, 0.0]])
    e = BlockCurvature(density_from_quadrature(nodes, weights), tuple(ritz[::-1]), 6)
    np.testing.assert_allclose(rule_values(e, C), [9.0, 5.0, 2.0])   # not down to 1e-9 (≈ λ_min)
    assert len(rule_values(entry(SPECTRUM), C)) == 2 * C


def test_full_spectrum_summary_counts_the_outliers():
    row = full_spectrum_summary(record(), C)
    assert row["outliers"] == C and row["rule_ok"]
    assert row["lambda_max"] == pytest.approx(40.0)
    assert row["gap_ratio_at_C"] == pytest.approx(10.0 / 0.05)
    assert row["bulk_mass_1%"] == pytest.approx(60 / 64)      # the bulk is below 0.4 = 1 % of 40
    assert row["positive_top"] == 2 * C


def test_relative_top_difference():
    np.testing.assert_allclose(relative_top_difference([10, 5, 2], [9, 5, 3], 2), [0.1, 0.0])
    assert len(relative_top_difference([10, 5], [9], 4)) == 1


def test_gauss_newton_comparison_and_rule():
    same = gauss_newton_comparison(record(), C)
    assert same["w1_hess_ggn"] == pytest.approx(0.0, abs=1e-9)
    assert same["topC_rel_diff_median"] == 0.0
    assert same["res_radius_rel"] == pytest.approx(0.1 / 40.0)
    assert gauss_newton_pass(same)
    off = gauss_newton_comparison(record(ggn_scale=1.5, residual=[-8.0, 0.0, 1.0]), C)
    assert off["topC_rel_diff_median"] == pytest.approx(0.5)
    assert off["res_top_rel"] == pytest.approx(1.0 / 40.0)
    assert off["res_radius_rel"] == pytest.approx(8.0 / 40.0)   # the negative end counts
    assert off["w1_hess_ggn_rel"] > 0
    assert not gauss_newton_pass(off)
    small_res = gauss_newton_comparison(record(residual=[-1.0, 0.0, 1.0]), C)
    assert gauss_newton_pass(small_res) and not gauss_newton_pass(small_res, res_rel=0.02)
    layer = gauss_newton_comparison(record(), C, part="b")   # H_l is exactly zero: a point mass
    assert layer["part"] == "b" and layer["lambda_max_hess"] == pytest.approx(20.0)
    assert layer["res_radius_rel"] == 0.0 and layer["w1_hess_ggn"] == pytest.approx(0.0, abs=1e-9)


def test_w1_with_point_masses():
    grid = np.linspace(-1, 3, 4001)
    d = exact_spectrum_density([0.0, 2.0], grid=grid, sigma=0.01)
    zero = exact_spectrum_density(np.zeros(3))
    # half the mass at distance 2 (+ the smoothing: E|N(0, σ)| / 2 = 0.004)
    assert w1_distance(d, zero) == pytest.approx(1.0 + 0.01 * np.sqrt(2 / np.pi) / 2, rel=1e-4)
    assert w1_distance(zero, d) == pytest.approx(w1_distance(d, zero))
    assert w1_distance(zero, exact_spectrum_density(np.full(2, 0.5))) == pytest.approx(0.5)
    other = exact_spectrum_density([0.0, 2.0], grid=grid + 1, sigma=0.01)
    assert w1_distance(d, other) == pytest.approx(spectral_distance(d, other))


def test_epochs_and_table_over_runs():
    run = FakeRun(CFG, {e: record(epoch=e, kinds=CFG.kinds_at(e)) for e in range(4)})
    assert epochs_with_kinds(run) == [0, 3]
    assert epochs_with_kinds(run, ("hessian",)) == [0, 1, 2, 3]
    table = gauss_newton_table({"r": run})
    assert list(table["epoch"]) == [0, 3] and list(table["final"]) == [False, True]
    assert list(table["run"]) == ["r", "r"]
    overview = run_overview({"r": run})
    assert overview.loc[0, "Hess/G/H epochs"] == "0, 3" and overview.loc[0, "C"] == 10
    assert overview.loc[0, "final test acc"] == 0.7 and overview.loc[0, "curvature epochs"] == 4


def test_layer_table():
    t = layer_table(record(), C)
    assert list(t["layer"]) == ["a", "b"] and list(t["depth"]) == [0, 1]
    assert list(t["outliers"]) == [C, C] and t["rule_ok"].all()
    np.testing.assert_allclose(t["lambda_max"], [40.0, 20.0])
    np.testing.assert_allclose(t["res_norm"], 0.0)
    np.testing.assert_allclose(t["w1_hess_ggn_rel"], 0.0, atol=1e-9)
    only_hess = layer_table(record(kinds=("hessian",)), C)
    assert "res_norm" not in only_hess and "w1_hess_ggn_rel" not in only_hess


def test_figures_draw():
    rec = record()
    fig, (a, b) = plt.subplots(1, 2)
    plot_full_spectrum(a, b, rec.kinds["hessian"].full, C, "test")
    plt.close(fig)
    run = FakeRun(CFG, {e: record(epoch=e, kinds=CFG.kinds_at(e)) for e in range(4)})
    fig = plot_gauss_newton_grid({"r1": run, "r2": run})
    assert fig.axes[0].get_title() == "r1, epoch 0"
    plt.close(fig)
    plt.close(plot_layer_tops(rec, C, "layers"))
    table = gauss_newton_table({"r1": run, "r2": run})
    plt.close(plot_gauss_newton_trends(table))
    plt.close(plot_top_comparison({"r1": run}, {"r1": 3}, res_rel=0.1))
    history = pd.DataFrame([{"run": r, **full_spectrum_summary(record(epoch=e), C)} for r in ("a", "b")
                            for e in range(3)])
    plt.close(plot_outlier_history(history))
    table = pd.concat([layer_table(rec, C).assign(run=r) for r in ("x", "y")])
    fig, ax = plt.subplots()
    plot_outlier_counts(ax, table, C)
    assert len(ax.patches) >= 4
    plt.close(fig)


def test_top_within_trace_flags_spurious_ritz_values():
    good = entry(SPECTRUM)
    assert top_within_trace(good)
    bad = replace(good, top=(1500.0, *good.top[1:]))        # a Ritz value above the trace (~91)
    assert not top_within_trace(bad)
    assert top_within_trace(replace(bad, trace=TraceRecord(1400.0, 50.0, 10)))
    assert top_within_trace(replace(good, top=(1.0,), trace=None))   # no trace recorded: nothing to check
    rec = record(ggn_top=[1500.0])
    assert not gauss_newton_comparison(rec, C)["ggn_valid"] and gauss_newton_comparison(record(), C)["ggn_valid"]
    assert layer_table(record(), C)["valid"].all()


def test_outlier_verdict():
    top = np.r_[np.linspace(60, 20, 10), np.linspace(2, 1, 10)]
    v = ss.outlier_verdict(top, 10)
    assert v["outliers"] == 10 and v["ok"] and v["gap_ratio"] == 10.0
    assert not ss.outlier_verdict(np.r_[50, np.linspace(2, 1, 19)], 10)["ok"]


def test_describe_runs_names_the_gpu_that_trained_a_run():
    from types import SimpleNamespace
    cfg = TrainConfig(dataset="fashionmnist", model="lenet", epochs=50, examples_per_class=10)
    env = {"device": "cuda", "gpu": "NVIDIA H200", "torch": "2.11.0+cu130"}
    gpu = SimpleNamespace(config=cfg, config_info=lambda: {"environment": env})
    cpu = SimpleNamespace(config=cfg, config_info=lambda: {"environment": {**env, "device": "cpu", "gpu": None}})
    old = SimpleNamespace(config=cfg, config_info=lambda: {})   # runs written before the environment was recorded
    text = ss.describe_runs({"a": gpu, "b": cpu, "c": old})
    assert text.count("trained on NVIDIA H200 (torch 2.11.0+cu130)") == 1 and "50 epochs" in text


def test_layer_fits_names_the_blocks_outside_the_spiked_model():
    """C3 (a)'s calibration: a block with λ_C+1 ≤ 0 is left out and named; a valid block is fitted."""
    import pandas as pd

    from htr_utils.study.spectra_analysis import layer_fits

    rows = pd.DataFrame([{"run": "a", "block": "fc1", "lambda_1": 33.25, "lambda_C": 2.2, "lambda_C+1": 1.5,
                          "bulk_edge": 17.17, "overlap": 0.48, "dim": 60},
                         {"run": "a", "block": "fc2", "lambda_1": 6.5, "lambda_C": 0.06, "lambda_C+1": -4e-4,
                          "bulk_edge": 1.9, "overlap": 0.54, "dim": 600}])
    fits, skipped = layer_fits(rows, 10)
    assert len(fits) == 1 and fits[0].dim == 60 and list(skipped) == ["a/fc2"]
    with pytest.raises(ValueError, match="no layer block could be fitted"):
        layer_fits(rows.iloc[1:], 10)
