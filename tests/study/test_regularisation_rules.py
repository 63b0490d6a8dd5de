"""PROTOCOL.md's C6a/C6b/C7 rules, the statistics under them against textbook results, and their calibration."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from htr_utils.study import calibration as cal
from htr_utils.study import regularisation_rules as rr
from htr_utils.study.statistics import (min_detectable_effect, paired_difference, partial_spearman,
                                        partial_spearman_bootstrap)


# ---------------------------------------------------------------------------- statistics

def test_paired_difference_is_scipys_paired_t_interval_on_common_seeds():
    rng = np.random.default_rng(0)
    a = {s: 0.87 + 0.003 * rng.standard_normal() for s in range(1, 11)}
    b = {s: a[s] - 0.001 + 0.0009 * rng.standard_normal() for s in range(1, 11)}
    b[11] = 0.5        # a seed only one arm has is not paired
    a[3] = np.nan      # a diverged run drops its seed
    seeds = [s for s in range(1, 11) if s != 3]
    want = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    ci = want.confidence_interval(0.95)
    got = paired_difference(a, b)
    assert got["n"] == 9 and got["seeds"] == seeds
    assert got["lo"] == pytest.approx(ci.low, rel=1e-12) and got["hi"] == pytest.approx(ci.high, rel=1e-12)
    assert got["p"] == pytest.approx(want.pvalue, rel=1e-10)
    one = paired_difference({1: 0.9}, {1: 0.8})
    assert one["n"] == 1 and np.isnan(one["lo"])


def test_min_detectable_effect_has_the_stated_power():
    sd, n = 0.0009, 10
    mde = min_detectable_effect(sd, n)
    rng = np.random.default_rng(1)
    d = rng.normal(mde, sd, (40000, n))
    lo = d.mean(1) - stats.t.ppf(0.975, n - 1) * d.std(1, ddof=1) / np.sqrt(n)
    assert (lo > 0).mean() == pytest.approx(0.8, abs=0.02)
    assert min_detectable_effect(sd, 40) < mde / 1.9  # ~1/√n


def test_partial_spearman_is_the_rank_regression_definition():
    rng = np.random.default_rng(2)
    z = rng.normal(size=30)
    x, y = z + rng.normal(size=30), z - 0.5 * rng.normal(size=30)
    rx, ry, rz = (stats.rankdata(v) for v in (x, y, z))
    design = np.column_stack([np.ones(30), rz])
    res = [r - design @ np.linalg.lstsq(design, r, rcond=None)[0] for r in (rx, ry)]
    assert partial_spearman(x, y, z) == pytest.approx(np.corrcoef(*res)[0, 1], abs=1e-12)
    # y driven by z alone: the plain ρ is large, the partial one is not
    y2 = z + 0.01 * rng.normal(size=30)
    assert stats.spearmanr(x, y2)[0] > 0.5 and abs(partial_spearman(x, y2, z)) < 0.4
    stacked = partial_spearman(np.stack([x, y]), np.stack([y, x]), np.stack([z, z]))
    assert stacked.shape == (2,) and stacked[0] == pytest.approx(stacked[1])


def test_cluster_bootstrap_resamples_whole_settings():
    rng = np.random.default_rng(3)
    setting = np.repeat(np.arange(6), 3)
    level = rng.normal(size=6)[setting]
    x, y, z = level + 0.1 * rng.normal(size=18), -level + 0.1 * rng.normal(size=18), rng.normal(size=18)
    out = partial_spearman_bootstrap(x, y, z, setting, num=500)
    assert out["groups"] == 6 and out["n"] == 18 and out["lo"] <= out["rho"] <= out["hi"] < 0


# ---------------------------------------------------------------------------- the rules

def test_c6b_rule_cases():
    iv = lambda lo, hi: {"lo": lo, "hi": hi}  # noqa: E731
    assert rr.c6b_rule([iv(0.0002, 0.002), iv(0.0001, 0.003)]) == "reproduced"
    assert rr.c6b_rule([iv(0.0002, 0.002), iv(-0.0001, 0.003)]) == "inconclusive"
    assert rr.c6b_rule([iv(-0.0006, 0.0009), iv(-0.001, 0.0005)]) == "not reproduced"  # both below +0.1 pt
    assert rr.c6b_rule([iv(-0.0006, 0.0011), iv(-0.001, 0.0005)]) == "inconclusive"
    assert rr.c6b_rule([iv(np.nan, np.nan), iv(0.1, 0.2)]) == "inconclusive"


def test_c7_rule_gate_margin_and_cost():
    acts, idle = {"lo": -50.0, "hi": -5.0}, {"lo": -5.0, "hi": 3.0}
    ok = {"lo": -0.0004, "hi": 0.0006}   # above −m for m = 0.0005
    worse = {"lo": -0.003, "hi": -0.0008}
    assert rr.c7_rule(acts, ok, 0.3, gain=0.001)["C7"] == "reproduced"
    assert rr.c7_rule(acts, worse, 0.3, gain=0.001)["C7"] == "not reproduced"
    assert rr.c7_rule(acts, ok, 1.2, gain=0.001)["C7"] == "not reproduced"       # dearer
    assert rr.c7_rule(acts, ok, 0.95, gain=0.001)["cost"] == "inconclusive"
    r = rr.c7_rule(idle, ok, 0.3, gain=0.001)
    assert r["acts"] == "no" and r["accuracy"] == "inconclusive" and r["C7"] == "inconclusive"
    r = rr.c7_rule(acts, ok, 0.3, gain=None)
    assert r["accuracy"] == "inconclusive" and "cannot be judged" in r["accuracy_note"]
    # the margin is half the gain: the same interval passes at gain 0.001 and not at 0.0006
    assert rr.c7_rule(acts, ok, 0.3, gain=0.0006)["accuracy"] == "inconclusive"
    assert rr.established_gain({"diff": 0.001, "lo": 0.0002, "hi": 0.002}) == 0.001
    assert rr.established_gain({"diff": 0.001, "lo": -0.0002, "hi": 0.002}) is None


def test_c6a_rule_cases():
    iv = lambda lo, hi: {"lo": lo, "hi": hi}  # noqa: E731
    assert rr.c6a_rule(iv(-0.9, -0.2), iv(0.1, 0.8)) == "reproduced"
    assert rr.c6a_rule(iv(-0.9, 0.2), iv(0.1, 0.8)) == "inconclusive"
    assert rr.c6a_rule(iv(0.1, 0.9), iv(-0.5, 0.5)) == "not reproduced"
    assert rr.c6a_rule(iv(-0.5, 0.5), iv(-0.9, -0.1)) == "not reproduced"


# ---------------------------------------------------------------------------- calibration

def test_c6b_error_rates_match_the_t_distribution():
    # one comparison: P(lo > 0 | no effect) is the one-sided 2.5 % of the t interval, exactly
    lo, hi = cal.paired_intervals(np.array([0.0]), 0.0009, 10, 40000, np.random.default_rng(4))
    assert (lo > 0).mean() == pytest.approx(0.025, abs=0.004)
    # equivalence side: at a true effect on the margin, "below the margin" also happens 2.5 % of the time
    lo, hi = cal.paired_intervals(np.array([rr.EQUIVALENCE_MARGIN]), 0.0009, 10, 40000, np.random.default_rng(5))
    assert (hi < rr.EQUIVALENCE_MARGIN).mean() == pytest.approx(0.025, abs=0.004)


def test_c6b_rates_go_the_right_way():
    null = cal.c6b_rates(0.0, 0.0009, 10, reps=5000)
    holds = cal.c6b_rates(rr.EQUIVALENCE_MARGIN, 0.0009, 10, reps=5000)
    assert null["P(reproduced)"] < 0.01 and holds["P(not reproduced)"] < 0.01
    assert null["P(not reproduced)"] > 0.6 and holds["P(reproduced)"] > 0.6
    three = cal.c6b_rates(rr.EQUIVALENCE_MARGIN, 0.0009, 3, reps=5000)
    assert three["P(reproduced)"] < 0.15  # the earlier 3-seed design could hardly see the claimed gain


def test_c7_and_c6a_rates_can_come_out_either_way():
    holds = cal.c7_accuracy_rates(0.0, 0.0003, 10, margin=0.0005, reps=4000)
    false = cal.c7_accuracy_rates(-0.001, 0.0003, 10, margin=0.0005, reps=4000)
    assert holds["P(reproduced)"] > 0.9 and false["P(not reproduced)"] > 0.9
    strong = cal.c6a_rates(-0.95, settings=12, seeds=3, reps=60, boot=200, seed_noise=0.05)
    opposite = cal.c6a_rates(0.95, settings=12, seeds=3, reps=60, boot=200, seed_noise=0.05)
    assert strong["P(reproduced)"] > 0.5 and opposite["P(not reproduced)"] > 0.5
