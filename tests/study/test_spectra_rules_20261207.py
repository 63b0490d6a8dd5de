"""The spectra rules' amendments of 2026-12-07 (PROTOCOL.md, C1/C3 (a), C2, C5), on constructed numbers."""
import numpy as np
import pandas as pd
import pytest

from htr_utils.study import spectra_rules as rules
from htr_utils.study import spectra_verdicts as sv
from htr_utils.study.verdicts import Verdict


def test_about_c_class_codes_has_no_upper_not_reproduced_branch():
    C = 10
    k = np.arange(0, 21)
    codes = rules.about_c_class_codes(k, C)
    assert (codes[(k >= 8) & (k <= 12)] == rules.R).all() and (codes[k < 5] == rules.N).all()
    assert (codes[(k >= 5) & (k < 8)] == rules.I).all() and (codes[k > 12] == rules.I).all()
    assert (rules.about_c_codes(k, C)[k > 20] == rules.N).all()                      # the earlier codes unchanged


def test_the_dropped_bound_could_never_fire():
    """2C orthonormal vectors hold at most C of mass in a C-dimensional span, so k_cls ≤ C / CLASS_MASS < 2C."""
    rng = np.random.default_rng(0)
    C, dim = 10, 60
    for _ in range(200):
        U = np.linalg.qr(rng.standard_normal((dim, C)))[0]
        V = np.linalg.qr(rng.standard_normal((dim, dim)))[0][:, :2 * C]
        mixed = np.linalg.qr(0.2 * V + np.hstack([U, U]) @ rng.standard_normal((2 * C, 2 * C)) * 0.1)[0]
        ov = ((U.T @ mixed) ** 2).sum(0)
        assert ov.sum() <= C + 1e-9 and rules.class_direction_count(ov) <= C / rules.CLASS_MASS


def test_class_direction_count_with_the_edge():
    ov = [0.9, 0.8, 0.1, 0.7, 0.95]
    ev = [10.0, 8.0, 7.0, 3.0, 1.0]
    assert rules.class_direction_count(ov) == 4
    assert rules.class_direction_count(ov, eigenvalues=ev, edge=2.0) == 3
    assert rules.class_direction_count(ov, eigenvalues=ev, edge=9.0) == 1
    with pytest.raises(ValueError, match="both"):
        rules.class_direction_count(ov, eigenvalues=ev)
    with pytest.raises(ValueError, match="Ritz value per overlap"):
        rules.class_direction_count(ov, eigenvalues=ev[:3], edge=1.0)


def test_within_continuous_edge_sets_aside_c_within_outliers():
    w = [50.0, 40.0, 9.0, 8.0, 7.0]
    assert rules.within_continuous_edge(w, 2) == 9.0
    assert rules.within_continuous_edge(list(reversed(w)), 2) == 9.0
    with pytest.raises(ValueError, match="C \\+ 1 = 6"):
        rules.within_continuous_edge(w, 5)


def test_c2_without_the_control_is_decided_by_g_and_the_floor():
    a = np.array([0.01, 0.02, 0.03, 0.5])
    far = np.array([0.9, 0.8, 0.7, 1.1])
    assert rules.c2_network_codes(a, None, 1e-3) == rules.R
    assert rules.c2_network_codes(a, np.full(4, 0.01), 1e-3) == rules.I              # the gated, superseded rule
    assert rules.c2_network_codes(a, None, 0.2) == rules.I
    assert rules.c2_network_codes(np.array([0.3, 0.4, 0.2, 0.05]), None, 1e-3) == rules.N
    verdict, per = rules.c2_network_rule({"lenet": (a, np.full(4, 0.01), 1e-3), "gelu": (a * 10, far, 1e-3)},
                                         ["lenet"])
    assert verdict == Verdict.REPRODUCED and per["gelu"] == Verdict.NOT_REPRODUCED
    assert rules.c2_network_rule({"lenet": (a, np.full(4, 0.01), 1e-3)}, ["lenet"], control=True)[0] \
        == Verdict.INCONCLUSIVE


def _series(run, n, slope, decides):
    t = np.arange(n)
    return pd.DataFrame({"run": run, "scope": "full", "epoch": t + 1, "lambda_max": 10 + slope * t + 0.01 * np.sin(t),
                         "trace": 100 + slope * t + 0.02 * np.cos(t), "decides": decides})


def test_c5_only_the_papers_networks_decide_and_a_short_extension_is_shown():
    series = pd.concat([_series("lenet", 14, -1.0, True), _series("vgg", 7, -1.0, True),
                        _series("gelu", 4, +1.0, False)], ignore_index=True)
    trends = sv.trend_table_ar1(series)
    gelu = trends[trends["run"] == "gelu"]
    assert gelu["p_decrease"].isna().all() and gelu["p_decrease_iid"].notna().all()
    result = sv.c5_ar1_verdict(trends)
    assert result.verdict == Verdict.REPRODUCED and result.details["total"] == 4
    assert "extensions, never deciding" in result.measured and "too few points" in result.measured
    short = pd.concat([_series("lenet", 14, -1.0, True), _series("vgg", 4, -1.0, True)], ignore_index=True)
    with pytest.raises(ValueError, match="need at least 5 finite values"):
        sv.trend_table_ar1(short)


def test_spiked_model_mixing_moves_mass_out_of_the_read_span():
    """An isolated class spike's eigenvector holds 1 − mix of its mass in the read span (dense eigh, not the model)."""
    from htr_utils.study.calibration_spectra import spiked_top

    strengths = np.full(4, 1e4) * np.array([1.0, 0.9, 0.8, 0.7])
    for mix in (0.0, 0.3):
        ev, ov = spiked_top(80, strengths, 1.0, 0.5, np.random.default_rng(1), 4, mix=mix)
        assert ov == pytest.approx(np.full(4, 1 - mix), abs=1e-3)
    with pytest.raises(ValueError, match="mix"):
        spiked_top(80, strengths, 1.0, 0.5, np.random.default_rng(1), 4, mix=1.0)


def test_sampling_mix_inverts_its_model():
    from htr_utils.study.calibration_spectra import sampling_mix

    o_inf, c = 0.7, 2.0
    o = lambda n: o_inf * (1 - c / n)  # noqa: E731
    assert sampling_mix(o(10), o(100), 10, 100) == pytest.approx(c / 100)
    assert sampling_mix(0.7, 0.6, 10, 100) == 0.0
    with pytest.raises(ValueError, match="sampling_mix"):
        sampling_mix(0.5, 0.6, 100, 10)


@pytest.mark.parametrize("run,measured", [
    # the committed last-epoch, 100-per-class readings (figures/cpu/01_full_spectrum/class_structure.csv):
    # λ_1, λ_C, λ_C+1, mean top-C overlap
    ("lenet_fashionmnist", (35.04, 8.858, 7.876, 0.603)),
    ("lenet_gelu_fashionmnist", (36.42, 8.843, 8.425, 0.622)),
    ("vgg11_bn_fashionmnist", (752.9, 79.16, 78.12, 0.622))])
def test_mixed_fits_reproduce_the_measured_readings(run, measured):
    """Amendment S2's mixed models (rounded to 3 digits) still match what they were fitted to: dense eigh of the
    model over 3 random subspaces."""
    from htr_utils.study.calibration_spectra import C1_FITS_MIXED, spiked_top

    fit = C1_FITS_MIXED[run]
    draws = [spiked_top(fit.dim, fit.strengths(), fit.edge, fit.beta, np.random.default_rng(s), 11, mix=fit.mix)
             for s in range(3)]
    ev = np.mean([d[0] for d in draws], 0)
    ov = np.mean([d[1][:10].mean() for d in draws])
    assert ev[0] == pytest.approx(measured[0], rel=0.1) and ev[9] == pytest.approx(measured[1], rel=0.1)
    assert ev[10] == pytest.approx(measured[2], rel=0.1) and ov == pytest.approx(measured[3], abs=0.05)

