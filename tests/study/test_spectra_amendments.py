"""Issue-30 amendments of the spectra rules (PROTOCOL.md, C1–C5): known answers of every new rule, and each rule
applied to a simulated claim-true and claim-false case."""
import math

import numpy as np
import pytest

from htr_utils.study import spectra_rules as r
from htr_utils.study.calibration import kendall_null
from htr_utils.study.verdicts import Verdict


# ------------------------------------------------------------------------------------------------------ C5


def test_lag1_autocorrelation_known_answers():
    assert r.lag1_autocorrelation(np.arange(10.0)) == 0.0                     # a line: no residual
    alt = np.array([1.0, -1.0] * 10)
    assert r.lag1_autocorrelation(alt) < -0.9                                 # alternating residuals
    e = r.ar1_series(4000, 0.6, 1, np.random.default_rng(0))[0]
    assert r.lag1_autocorrelation(e + 0.01 * np.arange(4000)) == pytest.approx(0.6, abs=0.04)
    with pytest.raises(ValueError, match="at least 3"):
        r.lag1_autocorrelation([1.0, 2.0])


def test_ar1_null_at_phi_zero_is_the_exact_kendall_null():
    """At φ = 0 the Monte Carlo null of D is the exact inversion distribution: same mean, variance and tails."""
    for n in (10, 50):
        null = r.ar1_kendall_null(n, 0.0)
        exact = kendall_null(n)
        d = np.arange(len(exact))
        mean, var = float(d @ exact), float((d - d @ exact) ** 2 @ exact)
        assert null.mean() == pytest.approx(mean, abs=4 * math.sqrt(var / len(null)))
        assert null.var() == pytest.approx(var, rel=0.05)
        q = int(np.searchsorted(np.cumsum(exact), 0.05))                      # the exact lower 5 % point
        assert np.mean(null <= q) == pytest.approx(np.cumsum(exact)[q], abs=0.006)
    assert r.ar1_kendall_null(10, 0.5) is r.ar1_kendall_null(10, 0.5)        # one table per (n, φ)


def test_ar1_null_widens_with_phi():
    """Serial dependence spreads D: the null at φ = 0.5 is wider than the iid one (why the iid p is too small)."""
    assert r.ar1_kendall_null(50, 0.5).std() > 1.5 * r.ar1_kendall_null(50, 0.0).std()


def test_kendall_trend_ar1_known_answers():
    down = np.linspace(10, 1, 50)
    tau, p_dec, p_inc, phi = r.kendall_trend_ar1(down)
    assert tau == -1.0 and phi == r.PHI_MEASURED
    assert p_dec == pytest.approx(1 / (r.AR1_NULL_DRAWS + 1)) and p_inc == 1.0
    tau, p_dec, p_inc, _ = r.kendall_trend_ar1(down[::-1])
    assert tau == 1.0 and p_inc == pytest.approx(1 / (r.AR1_NULL_DRAWS + 1)) and p_dec == 1.0
    # the series' own r₁ is used when above φ₀, rounded up to the grid, capped
    e = r.ar1_series(50, 0.95, 1, np.random.default_rng(3))[0]
    assert r.phi_used(e) == pytest.approx(min(r.PHI_CAP, math.ceil(r.lag1_autocorrelation(e) / r.PHI_GRID) * r.PHI_GRID))
    assert r.phi_used(e, phi0=0.0) >= 0.0
    with pytest.raises(ValueError, match="at least"):
        r.kendall_trend_ar1([1.0, 2.0, 3.0])


def test_kendall_trend_ar1_with_phi_zero_matches_the_exact_iid_test():
    rng = np.random.default_rng(1)
    for _ in range(5):
        v = rng.standard_normal(10) - 0.2 * np.arange(10)
        if r.lag1_autocorrelation(v) > 0:
            continue
        _, p_dec, p_inc, phi = r.kendall_trend_ar1(v, phi0=0.0)
        _, e_dec, e_inc = r.kendall_trend(v)
        assert phi == 0.0
        assert p_dec == pytest.approx(e_dec, abs=0.01) and p_inc == pytest.approx(e_inc, abs=0.01)


def test_c5_ar1_rule_claim_true_and_false():
    rng = np.random.default_rng(2)
    lengths = (50, 50, 10, 10)
    down = {f"s{j}": -1.0 * np.arange(n) + r.ar1_series(n, 0.5, 1, rng)[0] for j, n in enumerate(lengths)}
    up = {**down, "s0": 1.0 * np.arange(50) + r.ar1_series(50, 0.5, 1, rng)[0]}
    assert r.c5_ar1_rule(down) is Verdict.REPRODUCED
    assert r.c5_ar1_rule(up) is Verdict.NOT_REPRODUCED
    flat = {f"s{j}": np.sin(np.arange(n)) for j, n in enumerate(lengths)}
    assert r.c5_ar1_rule(flat) is Verdict.INCONCLUSIVE
    with pytest.raises(ValueError, match="fewer than"):
        r.c5_ar1_rule({"a": [1.0, 2.0]})


# ------------------------------------------------------------------------------------------------------ C2


def test_c2_network_codes_every_branch():
    ok, bad = np.full(8, 0.01), np.full(8, 0.5)
    assert r.c2_network_codes(ok, bad, 1e-3) == r.R
    assert r.c2_network_codes(bad, bad, 1e-3) == r.N
    assert r.c2_network_codes(ok, ok, 1e-3) == r.I                       # the control passes: no discrimination
    assert r.c2_network_codes(ok, bad, 0.2) == r.I                       # restart floor above the threshold
    assert r.c2_network_codes(ok, np.full(8, np.nan), 1e-3) == r.I       # control not read
    assert r.c2_network_codes(np.r_[ok[:6], bad[:2]], bad, 1e-3) == r.R  # exactly 75 %
    assert r.c2_network_codes(np.r_[ok[:2], bad[:6]], bad, 1e-3) == r.N  # exactly 25 %
    assert r.c2_network_codes(np.r_[ok[:4], bad[:4]], bad, 1e-3) == r.I
    assert r.c2_network_codes(ok, np.r_[bad[:6], ok[:2]], 1e-3) == r.R   # control passes in 25 %: still fine
    assert r.c2_network_codes(ok, np.r_[bad[:5], ok[:3]], 1e-3) == r.I
    stacked = r.c2_network_codes(np.stack([ok, bad]), np.stack([bad, bad]), 1e-3)
    assert list(stacked) == [r.R, r.N]


def test_c2_per_network_rule_extension_never_decides():
    ok, bad = [0.01] * 7, [0.5] * 7
    readings = {"lenet": (ok, bad, 1e-3), "vgg": (ok[:3], bad[:3], 1e-3), "gelu": (bad, bad, 1e-3)}
    verdict, per = r.c2_network_rule(readings, ["lenet", "vgg"])
    assert verdict is Verdict.REPRODUCED and per["gelu"] is Verdict.NOT_REPRODUCED
    verdict, _ = r.c2_network_rule({**readings, "vgg": (bad[:3], bad[:3], 1e-3)}, ["lenet", "vgg"])
    assert verdict is Verdict.NOT_REPRODUCED
    with pytest.raises(ValueError, match="no readings"):
        r.c2_network_rule(readings, ["resnet"])


def test_far_epoch():
    assert r.far_epoch([1, 5, 10, 20, 30, 40, 50], 1) == 50
    assert r.far_epoch([1, 5, 10, 20, 30, 40, 50], 30) == 1
    assert r.far_epoch([3, 15, 30], 15) == 30                            # 30 lies 15 away, 3 lies 12
    assert r.far_epoch([1, 3, 5], 3) == 5                                # a tie goes to the later epoch
    with pytest.raises(ValueError, match="second epoch"):
        r.far_epoch([5], 5)


# ------------------------------------------------------------------------------------------------------ C1 / C3 (a)


def test_class_direction_count_known_answers():
    assert r.class_direction_count([0.9, 0.8, 0.61, 0.6, 0.5, 0.1]) == 3     # more than 60 %, strictly
    assert r.class_direction_count([0.0] * 20) == 0
    for bad in ([], [0.5, float("nan")], [1.5]):
        with pytest.raises(ValueError, match="take the class reading again"):
            r.class_direction_count(bad)


def test_c1_and_c3_class_rules():
    assert r.c1_class_rule({"a": 10, "b": 9}, 10) is Verdict.REPRODUCED
    assert r.c1_class_rule({"a": 10, "b": 4}, 10) is Verdict.NOT_REPRODUCED
    assert r.c1_class_rule({"a": 10, "b": 7}, 10) is Verdict.INCONCLUSIVE
    assert r.c3_class_rule([10] * 8, 10, [0.01] * 4) is Verdict.REPRODUCED
    assert r.c3_class_rule([3] * 8, 10, [0.01] * 4) is Verdict.NOT_REPRODUCED


def test_one_strong_within_direction_masks_the_earlier_count_but_not_k_cls():
    """The issue's case: ten clear class directions and one within-class direction of twice their strength. The
    earlier count above λ_max(G_within) says k ≤ 1 ("not reproduced"); the class-direction count finds the ten."""
    from htr_utils.study.calibration_spectra import SpikedFit, spiked_counts

    fit = SpikedFit(dim=200, C=10, a1=10.0, aC=10.0, edge=5.0, beta=1.0)    # within: 5, 2.5, 1.7, ... ; class: 10
    k_cls, k_edge = spiked_counts(fit, fit.strengths(), sims=20, lead=20.0)  # one within direction at 20
    assert (k_edge <= 1).all() and (r.about_c_codes(k_edge, 10) == r.N).all()
    assert (np.abs(k_cls - 10) <= 2).all() and (r.about_c_codes(k_cls, 10) == r.R).all()


def test_k_cls_claim_false_cases():
    """Only four class directions above the bulk, or none: k_cls is far from C and the rule says not reproduced."""
    from htr_utils.study.calibration_spectra import SpikedFit, spiked_counts

    fit = SpikedFit(dim=200, C=10, a1=30.0, aC=12.0, edge=8.0, beta=0.5)
    weak = fit.strengths().copy()
    weak[4:] *= 0.05
    for a in (weak, np.zeros(10)):
        k_cls, _ = spiked_counts(fit, a, sims=20)
        assert (r.about_c_codes(k_cls, 10) == r.N).all()


# ------------------------------------------------------------------------------------------------------ C4

LENET, VGG = (150, 2400, 48000, 10080, 840), (72, 1152, 4608, 9216, 18432, 36864, 36864, 36864, 640)


def test_symmetric_middle_known_answers():
    assert np.allclose(r.normalised_depth(5), [0.1, 0.3, 0.5, 0.7, 0.9])
    assert list(r.symmetric_middle(5)) == [False, True, True, True, False]          # conv2, fc1, fc2
    assert list(r.symmetric_middle(9)) == [False, False, True, True, True, True, True, False, False]
    assert list(r.symmetric_middle(4)) == [False, True, True, False]
    with pytest.raises(ValueError, match="at least 2"):
        r.normalised_depth(1)


def test_normalised_w1_is_scale_free():
    x, w = np.array([0.0, 1.0, 3.0]), np.array([0.5, 0.3, 0.2])
    assert r.normalised_w1(7 * x, w, x, w) == pytest.approx(0.0, abs=1e-12)
    assert r.normalised_w1(x, w, x ** 2, w) > 0
    with pytest.raises(ValueError, match="no scale"):
        r.normalised_w1(np.zeros(2), np.ones(2), x, w)


def _layers(c: float, noise: float, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    for s in (LENET, VGG):
        s = np.asarray(s, dtype=float)
        z = np.abs(r.normalised_depth(len(s)) - 0.5)
        out.append(1.0 + 0.4 * np.log(s / s.sum()) + c * z + noise * rng.standard_normal(len(s)))
    return out


def test_c4_depth_test_recovers_c_and_matches_frisch_waugh():
    rng = np.random.default_rng(0)
    y = _layers(2.0, 1e-6, rng)
    t = r.c4_depth_test(y, (LENET, VGG))
    assert t["c"] == pytest.approx(2.0, abs=1e-4) and t["ratio"] == pytest.approx(np.e, rel=1e-3) and t["df"] == 10
    assert r.c4_depth_rule(y, (LENET, VGG)) is Verdict.REPRODUCED
    # ĉ equals the slope of y on |d − 1/2| after both are residualised on the network intercepts and log share
    y = _layers(0.5, 0.5, rng)
    X, z = r._depth_design((LENET, VGG))
    X0, yy = X[:, :-1], np.concatenate(y)
    res = lambda v: v - X0 @ np.linalg.lstsq(X0, v, rcond=None)[0]  # noqa: E731
    assert r.c4_depth_test(y, (LENET, VGG))["c"] == pytest.approx(res(z) @ res(yy) / (res(z) @ res(z)), rel=1e-9)


def test_c4_depth_rule_claim_true_and_false():
    rng = np.random.default_rng(1)
    assert r.c4_depth_rule(_layers(2 * np.log(20.0), 0.2, rng), (LENET, VGG)) is Verdict.REPRODUCED
    assert r.c4_depth_rule(_layers(0.0, 0.2, rng), (LENET, VGG)) is Verdict.NOT_REPRODUCED     # no depth effect
    assert r.c4_depth_rule(_layers(-3.0, 0.2, rng), (LENET, VGG)) is Verdict.NOT_REPRODUCED    # middle farthest
    with pytest.raises(ValueError, match="3 or more layers"):
        r.c4_depth_test([[1.0, 2.0]], [(10, 20)])
    with pytest.raises(ValueError, match="one finite log W1"):
        r.c4_depth_test([[1.0] * 5, [1.0] * 8], (LENET, VGG))
