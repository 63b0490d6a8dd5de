"""C4 amendment 6 (PROTOCOL.md): the normalised-W1 depth test with its own noise, its calibration and its verdict."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from htr_utils.study import calibration_c4 as cal
from htr_utils.study import spectra_rules as r
from htr_utils.study import spectra_verdicts as sv
from htr_utils.study.verdicts import Verdict

LENET = (150, 2400, 48000, 10080, 840)
VGG = (72, 1152, 4608, 9216, 18432, 36864, 36864, 36864, 640)


def _layers(c: float, sd: float, rng: np.random.Generator) -> list[np.ndarray]:
    return [0.3 * np.log(np.array(s) / sum(s)) + c * np.abs(r.normalised_depth(len(s)) - 0.5)
            + sd * rng.standard_normal(len(s)) for s in (LENET, VGG)]


def test_decision_region_brackets_the_p_values():
    """exp(ĉ/2) at the region's R edge gives p_R = α exactly, at its N edge p_N = α (t quantiles by scipy)."""
    se, df = 0.8, 10
    reg = r.c4_decision_region(se, df, 3.0)
    t = stats.t.ppf(0.95, df)
    assert 2 * np.log(reg["R_if_ratio_at_least"]) / se == pytest.approx(t)
    assert (2 * np.log(reg["N_if_ratio_at_most"]) - 2 * np.log(3.0)) / se == pytest.approx(-t)


def test_power_matches_a_monte_carlo_of_the_t_test():
    rng = np.random.default_rng(1)
    se, df, ratio = 1.0, 10, 3.0
    c = 2 * np.log(ratio) + se * rng.standard_normal(200_000)
    s = se * np.sqrt(rng.chisquare(df, 200_000) / df)
    mc = np.mean(c / s > stats.t.ppf(0.95, df))
    assert r.c4_power_at(se, df, ratio) == pytest.approx(mc, abs=0.005)


def test_normalised_rule_reproduced_not_reproduced_and_underpowered():
    rng = np.random.default_rng(0)
    assert r.c4_normalised_rule(_layers(2 * np.log(8.0), 0.1, rng), (LENET, VGG)) is Verdict.REPRODUCED
    assert r.c4_normalised_rule(_layers(0.0, 0.1, rng), (LENET, VGG)) is Verdict.NOT_REPRODUCED
    noisy = r.c4_normalised_test(_layers(2 * np.log(8.0), 2.0, rng), (LENET, VGG))
    assert noisy["underpowered"] and noisy["code"] == r.I and noisy["power"] < 0.5


def test_calibration_false_reproduced_at_most_5_percent_and_agrees_with_the_rule():
    for sigma in cal.C4_SIGMAS:
        assert cal.c4_rates(1.0, sigma, sims=40_000)["P(reproduced)"] <= 0.05 + 0.005
    exact = cal.c4_rates(3.0, 0.3, sims=40_000)
    through = cal.c4_rates_through_rule(3.0, 0.3, sims=600, seed=4)
    for key in ("P(reproduced)", "P(not reproduced)", "P(underpowered)"):
        assert through[key] == pytest.approx(exact[key], abs=0.06)
    assert exact["P(reproduced)"] > 0.5                                   # power at the stated effect, σ = 0.3
    assert cal.c4_rates(3.0, 0.63, sims=40_000)["P(underpowered)"] > 0.8  # amendment 5's assumed noise: cannot decide
    assert 0.35 < cal.largest_deciding_sigma() < 0.5


def _table(effect: float, noise: float, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for run, sizes, decides in (("lenet", LENET, True), ("vgg", VGG, True), ("gelu", LENET, False)):
        L = len(sizes)
        layer_noise = noise * rng.standard_normal(L)
        for epoch in (10, 20):
            for i, n in enumerate(sizes):
                d = (i + 0.5) / L
                w = np.exp(effect * abs(d - 0.5) + layer_noise[i]) * (n / sum(sizes)) ** 0.3
                rows.append({"run": run, "epoch": epoch, "layer": f"l{i}", "index": i, "num_layers": L, "depth": d,
                             "middle": 0.25 <= d <= 0.75, "size": n, "share": n / sum(sizes), "w1": 50 * w,
                             "w1_normalised": w, "probe_se": 0.05, "decides": decides})
    return pd.DataFrame(rows)


def test_c4_normalised_verdict_prints_the_region_and_flags_underpowered():
    res = sv.c4_normalised_verdict(_table(2 * np.log(10.0), 0.05))
    assert res.verdict == Verdict.REPRODUCED and "decision region" in res.measured and "raw W1" in res.measured
    assert res.details["probe_sd"] == pytest.approx(0.05 / np.sqrt(2))
    weak = sv.c4_normalised_verdict(_table(2 * np.log(10.0), 1.5))
    assert weak.verdict == Verdict.INCONCLUSIVE and weak.measured.startswith(sv.UNDERPOWERED)
    assert sv.c4_normalised_verdict(_table(0.0, 0.05)).verdict == Verdict.NOT_REPRODUCED
    # the normalised column decides, not the raw one
    flipped = _table(0.0, 0.05).assign(w1=_table(2 * np.log(10.0), 0.05)["w1"])
    assert sv.c4_normalised_verdict(flipped).verdict == Verdict.NOT_REPRODUCED


def test_probe_se_from_independent_probes():
    """Five probes whose single-atom measures sit at 1.0..1.4 × the full measure's scale-free shape."""
    full = [(np.array([0.0, 1.0]), np.array([0.5, 0.5]))] * 2
    probes = [(np.array([0.0, 1.0]), np.array([0.5 + 0.05 * k, 0.5 - 0.05 * k])) for k in range(1, 6)]
    a = sv._measure(full)
    logs = [np.log(r.w1_atoms(np.array([0.0, 1.0]), w, *a)) for _, w in probes]
    assert sv._probe_se(probes, a) == pytest.approx(np.std(logs, ddof=1) / np.sqrt(5))


def test_partial_residuals_carry_the_depth_term_and_nothing_of_size():
    """The figure's partial residuals are ĉ |d − 1/2| + e with e orthogonal to every regressor: refitting them on
    the design gives intercepts and size slope 0 and the same ĉ; b̂ recovers the simulated size slope."""
    rng = np.random.default_rng(3)
    y = _layers(-1.0, 0.05, rng)
    parts = r.c4_depth_partial(y, [LENET, VGG])
    assert parts["c"] == pytest.approx(r.c4_depth_test(y, [LENET, VGG])["c"])
    assert parts["b"] == pytest.approx(0.3, abs=0.05)
    X, z = r._depth_design([LENET, VGG])
    again, *_ = np.linalg.lstsq(X, np.concatenate(parts["partial"]), rcond=None)
    assert np.allclose(again[:-1], 0, atol=1e-10) and again[-1] == pytest.approx(parts["c"])
    assert np.allclose(np.concatenate(parts["z"]), z)
