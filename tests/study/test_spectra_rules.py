"""C1-C5 rules of PROTOCOL.md: every branch, exact p-values, exact W1, and their calibration."""
import itertools
import math

import numpy as np
import pytest
from scipy import stats

from htr_utils.study import spectra_rules as r
from htr_utils.study.calibration import c1_rates, c4_rates, c5_rates, min_detectable_tau
from htr_utils.study.verdicts import Verdict


def test_about_c_and_c1():
    assert list(r.about_c_codes([10, 8, 12, 7, 13, 4, 21, 5, 20], 10)) == [r.R, r.R, r.R, r.I, r.I, r.N, r.N, r.I, r.I]
    assert r.c1_rule({"a": 10, "b": 9}, 10) is Verdict.REPRODUCED
    assert r.c1_rule({"a": 10, "b": 3}, 10) is Verdict.NOT_REPRODUCED      # any network not: not reproduced
    assert r.c1_rule({"a": 10, "b": 6}, 10) is Verdict.INCONCLUSIVE


def test_top_disagreement_and_c2():
    assert r.top_disagreement([10, 5, 1], [10, 4, 1], 3) == pytest.approx(0.25)
    assert math.isnan(r.top_disagreement([10], [10, 4], 2))
    ok, bad = [0.01] * 8, [0.5] * 8
    assert r.c2_rule(ok, bad, floor=0.001) is Verdict.REPRODUCED
    assert r.c2_rule(bad, bad, floor=0.001) is Verdict.NOT_REPRODUCED
    assert r.c2_rule(ok, ok, floor=0.001) is Verdict.INCONCLUSIVE           # H passes too: no discrimination
    assert r.c2_rule(ok, bad, floor=0.2) is Verdict.INCONCLUSIVE            # noise floor above the threshold
    assert r.c2_rule(ok[:4] + bad[:4], bad, floor=0.001) is Verdict.INCONCLUSIVE
    assert r.c2_rule(ok, bad, floor=0.10) is Verdict.INCONCLUSIVE           # floor must lie below the threshold
    assert r.c2_rule(ok, bad, floor=float("nan")) is Verdict.INCONCLUSIVE   # no floor measured
    assert r.c2_rule(ok, bad[:6] + [0.01] * 2, floor=0.001) is Verdict.REPRODUCED   # H passes in 25 %: still discriminates
    assert r.c2_rule(ok, bad[:5] + [0.01] * 3, floor=0.001) is Verdict.INCONCLUSIVE  # H passes in 37.5 %
    assert r.c2_rule(ok[:6] + bad[:2], bad, floor=0.001) is Verdict.REPRODUCED      # exactly 75 % pass
    assert r.c2_rule(ok[:2] + bad[:6], bad, floor=0.001) is Verdict.NOT_REPRODUCED  # exactly 25 % pass
    # a NaN disagreement (too few Ritz values) is a missing reading: it neither passes nor fails
    assert r.c2_rule(ok + [float("nan")] * 8, bad, floor=0.001) is Verdict.REPRODUCED
    assert r.c2_rule(ok, [float("nan")] * 8, floor=0.001) is Verdict.INCONCLUSIVE  # H unread: no discrimination check
    assert r.c2_rule([], bad, floor=0.001) is Verdict.INCONCLUSIVE


def test_c3():
    assert r.c3_rule([10] * 8, 10, [0.01] * 4) is Verdict.REPRODUCED
    assert r.c3_rule([1] * 8, 10, [0.01] * 4) is Verdict.NOT_REPRODUCED
    assert r.c3_rule([10] * 8, 10, [0.5] * 4) is Verdict.NOT_REPRODUCED
    assert r.c3_rule([10] * 4 + [1] * 4, 10, [0.01] * 4) is Verdict.INCONCLUSIVE
    assert r.c3_rule([10] * 8, 10, []) is Verdict.INCONCLUSIVE               # no smooth network: (b) undecided


def test_w1_atoms_is_exact():
    rng = np.random.default_rng(0)
    for _ in range(5):
        xa, xb = rng.normal(size=7), rng.normal(1, 2, size=5)
        wa, wb = rng.random(7), rng.random(5)
        assert r.w1_atoms(xa, wa, xb, wb) == pytest.approx(stats.wasserstein_distance(xa, xb, wa, wb), rel=1e-12)
    assert r.w1_atoms([0.0], [1.0], [3.0], [1.0]) == pytest.approx(3.0)


def test_pooled_atoms_and_common_width_kl():
    nodes, weights = r.pooled_atoms([([0.0, 1.0], [2.0, 2.0]), ([5.0], [1.0])])
    assert list(nodes) == [0, 1, 5] and np.allclose(weights, [0.25, 0.25, 0.5])
    a, b, sigma = (np.array([0.0]), np.array([1.0])), (np.array([1.0]), np.array([1.0])), 0.5
    # two Gaussians of one width: KL = (Δμ)² / (2σ²), up to the tails beyond the grid (± 3σ)
    assert r.common_width_kl(a, b, sigma, grid_points=4096) == pytest.approx(1 / (2 * sigma ** 2), rel=1e-2)
    assert r.common_width_kl(a, a, sigma) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="positive"):
        r.common_width_kl(a, b, 0.0)


def test_common_width_kl_against_a_direct_integral():
    from scipy import integrate

    a = (np.array([0.0, 0.5, 2.0]), np.array([1.0, 2.0, 1.0]))
    b = (np.array([0.3, 1.5]), np.array([1.0, 1.0]))
    sigma = 0.4
    lo, hi = -3 * sigma, 2.0 + 3 * sigma

    def density(measure):
        x, w = measure
        f = lambda t: float(np.sum(w * np.exp(-0.5 * ((t - x) / sigma) ** 2)))  # noqa: E731
        z = integrate.quad(f, lo, hi, points=list(x), limit=200)[0]
        return lambda t: f(t) / z

    p, q = density(a), density(b)
    direct = integrate.quad(lambda t: p(t) * np.log(p(t) / q(t)), lo, hi, points=[0, 0.3, 0.5, 1.5, 2], limit=200)[0]
    assert r.common_width_kl(a, b, sigma, grid_points=4096) == pytest.approx(direct, rel=1e-3)


def test_c4_classify_codes_and_rule():
    # LeNet: 5 layers, middle half = indices 2, 3
    assert r.middle_share(5) == pytest.approx(0.4) and r.middle_share(9) == pytest.approx(4 / 9)
    assert r.c4_classify([5, 5, 1, 5, 5], floor=0.5) == "middle"
    assert r.c4_classify([1, 5, 5, 5, 5], floor=0.5) == "outer"
    assert r.c4_classify([1, 5, 1.2, 5, 5], floor=0.5) == "tie"
    assert r.c4_classify([5, 5, 1, 5, 1.6], floor=0.5) == "middle"         # margin just above the floor
    with pytest.raises(ValueError, match="no middle-half or no outer"):
        r.c4_classify([1.0], floor=0.0)
    nets = ["a"] * 5 + ["b"] * 5 + ["c"] * 5
    # the null bound: per network Σ p / majority (Markov, any dependence), the smallest network's (any dependence
    # among networks)
    assert r.majority(5) == 3 and r.majority(4) == 3
    assert r.network_bound([[0.1] * 5, [0.1] * 5, [0.2] * 5]) == pytest.approx(0.5 / 3)
    assert r.network_bound([[0.4] * 5] * 3) == pytest.approx(2 / 3)             # exchangeable layers: never < 0.05
    assert r.network_bound([[1.0] * 5, [0.01] * 5]) == pytest.approx(0.05 / 3)
    assert r.network_bound([[1.0] * 5, [1.0] * 5]) == 1.0                       # capped at 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        r.network_bound([[1.5]])
    assert r.c4_codes(True, False, 0.01, 1.0) == r.R and r.c4_codes(False, False, 0.01, 1.0) == r.I
    assert r.c4_codes(False, True, 1.0, 0.01) == r.N and r.c4_codes(True, False, 0.06, 0.0) == r.I
    low, high = [0.01] * 15, [0.9] * 15
    assert r.c4_rule(["middle"] * 15, low, high, nets) is Verdict.REPRODUCED
    # p = 0.1 a reading: 0.5 / 3 per network is no evidence, however many networks agree
    assert r.c4_rule(["middle"] * 15, [0.1] * 15, high, nets) is Verdict.INCONCLUSIVE
    assert r.c4_rule(["middle"] * 10 + ["outer"] * 5, low, high, nets) is Verdict.INCONCLUSIVE   # network c outer
    assert r.c4_rule(["outer"] * 15, high, low, nets) is Verdict.NOT_REPRODUCED
    # where size alone predicts "middle" (null rate 1), even 15 of 15 is no evidence
    assert r.c4_rule(["middle"] * 15, [1.0] * 15, [0.0] * 15, nets) is Verdict.INCONCLUSIVE
    # and with three networks of exchangeable layers neither can the tally be (the bound stays at 2/3)
    assert r.c4_rule(["middle"] * 15, [0.4] * 15, [0.6] * 15, nets) is Verdict.INCONCLUSIVE
    with pytest.raises(ValueError, match="one entry per reading"):
        r.c4_rule(["middle"] * 15, low[:3], high, nets)
    # amendment 1's superseded tally, shown beside: exact binomial tails against the mean middle share
    p0 = float(np.mean([0.4] * 10 + [4 / 9] * 5))
    n_mid = np.arange(16)
    assert list(r.c4_amendment1_codes(n_mid, 15 - n_mid, 15, p0)) == [r.N] * 3 + [r.I] * 7 + [r.R] * 6


def _enumerated_null_rates(null_w1, floor):
    """The size-matched null rates by listing every choice of one subset per layer (float64, no shortcut)."""
    L = len(null_w1)
    mid = [r.is_middle(i, L) for i in range(L)]
    wins_mid = wins_out = total = 0
    for pick in itertools.product(*null_w1):
        m = min(v for v, k in zip(pick, mid) if k)
        o = min(v for v, k in zip(pick, mid) if not k)
        wins_mid += m + floor < o
        wins_out += o + floor < m
        total += 1
    return wins_mid / total, wins_out / total


def test_c4_null_rates():
    # the middle layer's size-matched subsets are always closest: the null says "middle" every time
    assert r.c4_null_rates([[5, 6], [5, 6], [1, 2], [5, 6], [5, 6]], floor=0.5) == (1.0, 0.0)
    # the closest outer layer is 1 or 3, the closest middle one 2: each wins half of the draws beyond a zero floor
    assert r.c4_null_rates([[1, 3], [9, 9], [2, 2], [9, 9], [9, 9]], floor=0.0) == (0.5, 0.5)
    assert r.c4_null_rates([[1.0], [1.0], [1.0], [1.0], [1.0]], floor=0.1) == (0.0, 0.0)   # all ties
    with pytest.raises(ValueError, match="null_subsets > 0"):
        r.c4_null_rates([[1.0], [], [1.0], [1.0], [1.0]], floor=0.0)
    # exact against enumeration, ties and floors included, uneven subset counts
    rng = np.random.default_rng(3)
    for L, floor in ((5, 0.0), (5, 0.3), (6, 0.1)):
        null = [np.round(rng.random(rng.integers(2, 5)) * (1 + i % 3), 1) for i in range(L)]
        assert r.c4_null_rates(null, floor) == pytest.approx(_enumerated_null_rates(null, floor), abs=1e-12)


def test_c4_null_upper_limits():
    null = [[0.2, 0.9, 0.5, 0.4, 0.7], [0.3, 0.8, 0.6, 0.9, 0.5], [0.1, 0.6, 0.4, 0.8, 0.3],
            [0.6, 0.2, 0.9, 0.5, 0.4], [0.7, 0.5, 0.3, 0.6, 0.8]]
    p_mid, p_out = r.c4_null_rates(null, 0.05)
    hi_mid, hi_out = r.c4_null_upper(null, 0.05, seed=1)
    assert hi_mid > p_mid and hi_out > p_out and hi_mid <= 1 and hi_out <= 1
    assert r.c4_null_upper(null, 0.05, seed=1) == (hi_mid, hi_out)                 # seeded
    assert r.c4_null_upper(null, 0.05, level=0.5, seed=1)[0] < hi_mid
    # subsets that never vary: nothing to be unsure about
    assert r.c4_null_upper([[5, 5], [5, 5], [1, 1], [5, 5], [5, 5]], 0.5) == (1.0, 0.0)
    with pytest.raises(ValueError, match="level"):
        r.c4_null_upper(null, 0.05, level=1.0)


def test_exact_kendall_and_three_points_never_significant():
    tau, p_dec, p_inc = r.kendall_trend([3, 2, 1])
    assert tau == -1 and p_dec == pytest.approx(1 / 6) and p_dec > 0.05      # n = 3 cannot reach 5 %
    assert r.kendall_trend(list(range(10, 0, -1)))[1] == pytest.approx(1 / math.factorial(10))
    assert r.kendall_trend(list(range(10)))[2] == pytest.approx(1 / math.factorial(10))
    with pytest.raises(ValueError, match="fewer than 5"):
        r.c5_rule({"short": [3, 2, 1]})


def test_c5_codes_and_rule():
    down, up, flat = list(range(10, 0, -1)), list(range(10)), [1, 3, 2, 5, 4, 6, 3, 2, 4, 5]
    assert r.c5_rule({"a": down, "b": down}) is Verdict.REPRODUCED
    assert r.c5_rule({"a": down, "b": up}) is Verdict.NOT_REPRODUCED
    assert r.c5_rule({"a": down, "b": flat}) is Verdict.INCONCLUSIVE
    # N needs p_increase < α / series: with 6 series a 5-point increase (p = 1/120 > 0.05/6) is not enough ...
    five_up = [1, 2, 3, 4, 5]
    assert r.c5_rule({"a": five_up, **{k: flat for k in "bcdef"}}) is Verdict.INCONCLUSIVE
    # ... but one of 6 points is (p = 1/720 < 0.05/6)
    assert r.c5_rule({"a": five_up + [6], **{k: flat for k in "bcdef"}}) is Verdict.NOT_REPRODUCED
    # vectorised over leading axes: rows are simulated designs, the last axis the series
    p_dec = np.array([[0.01, 0.04], [0.01, 0.2], [0.5, 0.5]])
    p_inc = np.array([[0.9, 0.9], [0.9, 0.9], [0.02, 0.9]])
    assert list(r.c5_codes(p_dec, p_inc)) == [r.R, r.I, r.N]
    with pytest.raises(ValueError, match="record the curvature at more epochs"):
        r.c5_rule({"long": down, "vgg trace": [3, 2, 1, 0]})


def test_calibration_matches_the_protocol():
    design = [(0.01, 0.6, 5), (0.01, 0.6, 5), (0.02, 0.5, 5)]
    assert c4_rates(design, sims=20000)["P(reproduced)"] < 0.01      # null: majorities of middle are rare
    assert c4_rates(design, truth=[(0.9, 0.1)] * 3, sims=20000)["P(reproduced)"] > 0.95
    rates = c5_rates([20, 20], sims=200)
    assert rates.loc[0, "P(reproduced)"] <= 0.05 and rates.loc[0, "P(not reproduced)"] <= 0.1
    assert min_detectable_tau(10) > min_detectable_tau(50) > 0
    c1 = c1_rates(dim=120, n_examples=200, C=10, spike_strengths=(0.0, 3.0), sims=10)
    assert c1.loc[0, "P(reproduced)"] == 0 and c1.loc[1, "P(reproduced)"] == 1
