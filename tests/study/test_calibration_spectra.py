"""Calibration of the C1, C4 and C5 rules (PROTOCOL.md): simulations against exact enumeration, the protocol's numbers,
exact Kendall p-values against scipy, the spiked model of C1."""
import itertools
import math

import numpy as np
import pytest

from htr_utils.study import calibration as cal
from htr_utils.study.spectra_rules import kendall_trend

# C4: LeNet, LeNet-GELU, VGG11_bn × 5 distance epochs, each reading's size-matched null (p_mid, p_out)
CPU_DESIGN = [(0.01, 0.7, 5), (0.01, 0.7, 5), (0.02, 0.6, 5)]
CPU_LENGTHS = [50, 50, 50, 50, 10, 10]  # λ_max and trace of LeNet, LeNet-GELU (50 epochs) and VGG (10 epochs)


def _within(sim: dict, exact: dict, sims: int, k: float = 4.0) -> None:
    for key, p in exact.items():
        assert abs(sim[key] - p) <= k * math.sqrt(p * (1 - p) / sims) + 1e-9, (key, sim[key], p)


# ------------------------------------------------------------------------------------------------------ C4


TRUTHS = {"middle 70 %": [(0.7, 0.3)] * 3, "middle 80 %": [(0.8, 0.2)] * 3, "ties": [(0.3, 0.4)] * 3}


@pytest.mark.parametrize("kw", [{}, {"dependent": True}, {"truth": TRUTHS["middle 70 %"]},
                                {"truth": TRUTHS["middle 80 %"], "dependent": True}, {"truth": TRUTHS["ties"]}])
def test_c4_simulation_agrees_with_enumeration(kw):
    _within(cal.c4_rates(CPU_DESIGN, sims=20000, **kw), cal.c4_exact_rates(CPU_DESIGN, **kw), 20000)


def test_c4_rates_hold_whatever_the_dependence():
    """Under the null the bound is valid for any dependence among a network's readings: the false 'reproduced'
    rate stays below the bound, the dependent case included (the referee's objection to a Poisson-binomial tally)."""
    bound = cal.c4_smallest_p(CPU_DESIGN)
    assert bound == pytest.approx(0.05 / 3) and bound < 0.05         # the smallest network's Markov bound
    for dependent in (False, True):
        rates = cal.c4_exact_rates(CPU_DESIGN, dependent=dependent)
        assert rates["P(reproduced)"] <= bound and sum(rates.values()) == pytest.approx(1.0)
    assert cal.c4_exact_rates(CPU_DESIGN, dependent=True)["P(reproduced)"] == pytest.approx(0.01 * 0.01 * 0.02)
    assert cal.c4_exact_rates(CPU_DESIGN, truth=TRUTHS["middle 80 %"], dependent=True)["P(reproduced)"] == \
        pytest.approx(0.8 ** 3)
    assert cal.c4_exact_rates(CPU_DESIGN, truth=TRUTHS["middle 80 %"])["P(reproduced)"] > 0.75


def test_c4_cannot_reproduce_where_size_predicts_the_middle():
    """LeNet's fc1 holds 78 % of the weights: if the null says "middle" every time, no tally is evidence."""
    design = [(1.0, 0.0, 5), (1.0, 0.0, 5), (0.7, 0.3, 5)]
    assert cal.c4_smallest_p(design) >= 0.05
    assert cal.c4_exact_rates(design, truth=[(1.0, 0.0)] * 3)["P(reproduced)"] == 0.0
    # outer readings where the null never gives "outer" are evidence against the claim
    assert cal.c4_exact_rates(design, truth=[(0.0, 1.0)] * 3)["P(not reproduced)"] == pytest.approx(1.0)


def test_c4_model_shows_the_size_artefact_and_the_null_absorbs_it():
    """In the Gauss–Newton model with no depth effect, LeNet's largest (middle) layer is closest nearly always, and
    the size-matched null predicts it, so the rule does not call C4 reproduced."""
    lenet = cal.model_sizes([150, 2400, 48000, 10080, 840])
    assert lenet == (15, 240, 4800, 1008, 84)
    pool = cal.c4_model_readings(lenet, reps=12, seed=1)
    labels = [lab for lab, _, _ in pool]
    assert labels.count("middle") >= 10
    assert np.mean([pm for _, pm, _ in pool]) > 0.8
    rates = cal.c4_model_rates([pool, pool, pool], [5, 5, 5], studies=200)
    assert rates["P(reproduced)"] == 0.0
    with_floor = cal.c4_model_readings(lenet, reps=4, seed=1, floor_ratio=0.5)   # a floor turns draws into ties
    assert all(0 <= pm <= 1 and 0 <= po <= 1 for _, pm, po in with_floor)
    assert "tie" in [lab for lab, _, _ in with_floor]


def test_model_sizes_keep_the_model_small_and_refuse_nonsense():
    from htr_utils.study.models import build_model
    from htr_utils.study.spectra_readings import layer_sizes

    vgg = layer_sizes(build_model("vgg11_bn", 1, 10, width=0.125))
    assert len(vgg) == 9 and vgg["classifier"] == 640 and sum(vgg.values()) == 144_712
    assert cal.model_sizes(list(vgg.values())) == (7, 115, 461, 922, 1843, 3686, 3686, 3686, 64)
    assert sum(cal.model_sizes([10**6] * 9)) <= cal.MODEL_COLUMNS + 9
    assert cal.model_sizes([5, 100]) == (1, 10)
    for bad in ([100], [0, 100], [[1, 2]]):
        with pytest.raises(ValueError, match="layer sizes"):
            cal.model_sizes(bad)


# ------------------------------------------------------------------------------------------------------ C5


def test_kendall_null_is_the_inversion_distribution():
    assert np.allclose(cal.kendall_null(3), np.array([1, 2, 2, 1]) / 6)
    for n in (5, 10, 50):
        d = cal.kendall_null(n)
        assert len(d) == n * (n - 1) // 2 + 1 and d.sum() == pytest.approx(1.0) and np.allclose(d, d[::-1])
    assert cal.kendall_null(10)[0] == pytest.approx(1 / math.factorial(10))


def test_vectorised_kendall_equals_the_rules_kendall():
    rng = np.random.default_rng(3)
    perms = np.array(list(itertools.permutations(range(5))), dtype=float)  # every inversion count at n = 5
    for v in (perms, rng.standard_normal((200, 10)), rng.standard_normal((100, 50))):
        tau, p_dec, p_inc = cal.kendall_exact(v)
        ref = np.array([kendall_trend(x) for x in v])
        assert np.allclose(tau, ref[:, 0], rtol=0, atol=1e-12)
        assert np.allclose(p_dec, ref[:, 1], rtol=1e-9, atol=0) and np.allclose(p_inc, ref[:, 2], rtol=1e-9, atol=0)


def test_slope_for_tau_hits_the_expected_tau():
    for n, tau in ((10, -0.5), (50, -0.3), (20, 0.2)):
        s = cal.slope_for_tau(n, tau)
        assert cal.expected_tau(n, s) == pytest.approx(tau, abs=1e-9) and np.sign(s) == np.sign(tau)
        taus, _, _ = cal.simulate_trends([n], [s], 4000, np.random.default_rng(0))
        assert taus.mean() == pytest.approx(tau, abs=0.01)
    assert cal.slope_for_tau(10, 0.0) == 0.0
    with pytest.raises(ValueError):
        cal.slope_for_tau(10, -1.0)


def test_c5_null_rates_are_bounded_and_the_simulation_agrees():
    exact = cal.c5_null_rates(CPU_LENGTHS)
    assert exact["P(reproduced)"] < 1e-6                       # intersection-union: far below 5 %
    assert 0.04 < exact["P(not reproduced)"] <= 0.05           # Bonferroni over 6 series
    rates = cal.c5_rates(CPU_LENGTHS, sims=20000)
    assert list(rates["scenario"]) == ["no trend", "decrease, E[τ] = -0.3", "decrease, E[τ] = -0.5"]
    _within(rates.iloc[0].to_dict(), exact, 20000)
    assert list(rates["P(reproduced)"]) == sorted(rates["P(reproduced)"])   # power grows with the effect


def test_c5_rates_with_a_signal_to_noise_ratio():
    rates = cal.c5_rates([10, 50], sims=2000, snr=8.0)
    assert rates.loc[1, "scenario"].startswith("decrease of 8")
    assert rates.loc[1, "P(reproduced)"] > 0.9 and rates.loc[1, "P(not reproduced)"] == 0


def test_min_detectable_tau_is_conservative_for_the_exact_test():
    for n in (10, 50):
        tau = cal.min_detectable_tau(n)
        assert 0.8 <= cal.trend_power(n, -tau, sims=4000) < 0.95
    assert cal.min_detectable_tau(10) > cal.min_detectable_tau(50) > 0


# ------------------------------------------------------------------------------------------------------ C1


def test_c1_spiked_model():
    rates = cal.c1_rates(dim=200, n_examples=200, C=10, spike_strengths=(0.0, 0.1, 1.0), sims=20)
    no_spike, weak, strong = (rates.iloc[i] for i in range(3))
    assert no_spike["P(not reproduced)"] == 1 and no_spike["mean count"] < 5       # k small: below C / 2
    assert weak["P(reproduced)"] == 0                                               # below the separation threshold
    assert strong["P(reproduced)"] == 1 and strong["mean count"] == 10              # every class mean separates


# ------------------------------------------------------------------------------- issue 30: C5 under AR(1) noise


def test_c5_ar1_calibration_claim_false_and_true():
    """At the measured autocorrelation (φ = 0.5) the amended rule keeps both false rates ≤ 5 % where the earlier
    iid rule says "not reproduced" about a third of the time; a strong decrease is still found."""
    from htr_utils.study.calibration_spectra import c5_ar1_rates

    lengths, sims = [50, 50, 50, 50, 10, 10], 1500
    se = 4 * math.sqrt(0.05 * 0.95 / sims)
    null = c5_ar1_rates(lengths, 0.5, 0.0, sims, seed=1)
    assert null["P(reproduced)"] <= 0.05 + se and null["P(not reproduced)"] <= 0.05 + se
    assert c5_ar1_rates(lengths, 0.5, 0.0, sims, seed=1, adjusted=False)["P(not reproduced)"] > 0.2
    assert c5_ar1_rates(lengths, 0.5, -0.7, sims, seed=2)["P(reproduced)"] >= 0.6


# ------------------------------------------------------------------------------- issue 30: C2 per network


def test_c2_amended_rates_claim_false_and_true():
    """In the model fitted to the committed a(G): a network twice the threshold away gives a false 'reproduced'
    ≤ 5 %; the measured levels are found more often than not; a passing control makes the rule abstain."""
    from htr_utils.study.calibration_spectra import C2_SIGMA_IID, c2_rates

    iid = ((0.0,) * 7, (0.0,) * 3)
    assert c2_rates((0.20, 0.05), iid, C2_SIGMA_IID, sims=4000)["P(reproduced)"] <= 0.02
    assert c2_rates((0.05, 0.20), iid, C2_SIGMA_IID, sims=4000)["P(reproduced)"] <= 0.02
    assert c2_rates((0.10, 0.05), iid, C2_SIGMA_IID, sims=4000)["P(reproduced)"] <= 0.05
    assert c2_rates((0.02, 0.02), iid, C2_SIGMA_IID, sims=4000)["P(reproduced)"] >= 0.5
    assert c2_rates((0.20, 0.20), iid, C2_SIGMA_IID, sims=4000)["P(not reproduced)"] >= 0.5
    # the superseded issue-30 rule: a passing control makes it abstain; the amended rule ignores the control
    assert c2_rates((0.02, 0.02), iid, C2_SIGMA_IID, control_median=0.05, sims=4000, control=True)["P(reproduced)"] == 0.0
    assert c2_rates((0.02, 0.02), iid, C2_SIGMA_IID, control_median=0.05, sims=4000)["P(reproduced)"] >= 0.5


# ------------------------------------------------------------------------------- issue 30: C1 / C3 (a)


def test_fit_spiked_recovers_a_known_model():
    """Measure λ_1, λ_C, λ_C+1 and the top-C overlap in a model with known parameters, fit, and get them back."""
    from htr_utils.study.calibration_spectra import SpikedFit, fit_spiked, spiked_top

    truth = SpikedFit(dim=120, C=10, a1=40.0, aC=6.0, edge=15.0, beta=0.6)
    draws = [spiked_top(120, truth.strengths(), truth.edge, truth.beta, np.random.default_rng(s), 11) for s in range(3)]
    ev = np.mean([d[0] for d in draws], 0)
    ov = float(np.mean([d[1][:10].mean() for d in draws]))
    fit = fit_spiked(ev[0], ev[9], ev[10], truth.edge, ov, dim=120, max_dim=120)
    assert fit.loss < 1e-3
    assert fit.a1 == pytest.approx(truth.a1, rel=0.15) and fit.beta == pytest.approx(truth.beta, rel=0.25)
    with pytest.raises(ValueError, match="fit_spiked"):
        fit_spiked(1.0, 2.0, 0.5, 1.0, 0.5, 100)


def test_c1_class_calibration_rates():
    from htr_utils.study.calibration_spectra import SpikedFit, c1_class_calibration, c3a_class_rates

    fit = SpikedFit(dim=400, C=10, a1=33.25, aC=2.2, edge=17.17, beta=0.476)   # LeNet's fit (PROTOCOL.md)
    t = c1_class_calibration({"lenet": fit}, sims=40).set_index("scenario")
    assert t.loc["true: weakest class direction at edge / 2", "P(R)"] >= 0.8
    assert t.loc["true, masked: within top at 2 × the strongest class direction", "P(R)"] >= 0.8
    assert t.loc["true, masked: within top at 2 × the strongest class direction", "earlier P(N)"] >= 0.8
    for scenario in ("false: 5 class directions, the rest hidden", "false: 7 class directions, the rest hidden"):
        assert t.loc[scenario, "P(R)"] <= 0.1
    assert t.loc["false: no class directions", "P(N)"] == 1.0
    assert c3a_class_rates([fit] * 3, "false: no class directions", sims=20)["P(not reproduced)"] == 1.0


# ------------------------------------------------------------------------------- issue 30: C4 depth regression


def test_c4_depth_rates_exact_against_simulation_and_the_protocols_numbers():
    from htr_utils.study.calibration_spectra import c4_depth_power, c4_depth_rates

    sims = 800
    for ratio in (1.0, 6.0):
        exact, sim = c4_depth_power(ratio), c4_depth_rates(ratio, sims=sims, seed=3)
        _within(sim, exact, sims)
    assert c4_depth_power(1.0)["P(reproduced)"] == pytest.approx(0.05, abs=1e-9)    # false R at no depth effect
    assert c4_depth_power(6.0)["P(reproduced)"] >= 0.5                              # power at the stated effect
    assert c4_depth_power(6.0)["P(not reproduced)"] == pytest.approx(0.05, abs=1e-9)
