"""pool_map and the calibrations that use it: the same numbers as the serial loops they replace."""
import numpy as np
import pandas as pd
import pytest

from htr_utils.study import calibration_spectra as cs
from htr_utils.study import spectra_rules as rules
from htr_utils.study.parallel import pool_map, workers
from htr_utils.study.regularisation_rules import R


def _square_plus(x: int, y: int) -> int:
    return x * x + y


def test_pool_map_keeps_order_and_matches_serial():
    items = [(i, 10 * i) for i in range(7)]
    assert pool_map(_square_plus, items, processes=2) == [_square_plus(*it) for it in items]
    assert pool_map(_square_plus, [], processes=2) == []


def test_workers_refuses_a_bad_setting(monkeypatch):
    monkeypatch.setenv("HTR_WORKERS", "0")
    with pytest.raises(ValueError, match="HTR_WORKERS"):
        workers()
    monkeypatch.setenv("HTR_WORKERS", "1")
    assert workers() == 1


FIT = cs.SpikedFit(dim=120, C=10, a1=33.25, aC=2.2, edge=17.17, beta=0.476)


def test_c1_class_calibration_parallel_equals_the_serial_definition(monkeypatch):
    """Each (network, scenario) keeps its own seed j, so 2 workers give exactly the serial loop's counts."""
    monkeypatch.setenv("HTR_WORKERS", "2")
    fits = {"a": FIT, "b": cs.SpikedFit(dim=100, C=10, a1=20.0, aC=1.0, edge=8.0, beta=0.6)}
    got = cs.c1_class_calibration(fits, sims=6)
    rows = []
    for label, fit in fits.items():   # the serial definition
        for j, (scenario, (a, lead)) in enumerate(cs.spiked_scenarios(fit).items()):
            k_cls, k_edge = cs.spiked_counts(fit, a, 6, seed=j, lead=lead)
            rows.append({"network": label, "scenario": scenario, "mean k_cls": k_cls.mean(),
                         "mean k_edge": k_edge.mean()})
    want = pd.DataFrame(rows)
    pd.testing.assert_frame_equal(got[want.columns], want)


def test_c3a_class_rates_parallel_equals_the_serial_definition(monkeypatch):
    fits = [FIT, cs.SpikedFit(dim=100, C=10, a1=20.0, aC=1.0, edge=8.0, beta=0.6), FIT]
    scenario = "true: weakest class direction at edge / 2"
    ok = np.zeros((8, 3), dtype=bool)
    for i, fit in enumerate(fits):   # the serial definition
        a, lead = cs.spiked_scenarios(fit)[scenario]
        k_cls, _ = cs.spiked_counts(fit, a, 8, seed=5 + 1000 * i, lead=lead)
        ok[:, i] = rules.about_c_class_codes(k_cls, fit.C) == R
    want = cs.rates(rules.share_codes(ok.mean(1)))
    for n in ("1", "2"):
        monkeypatch.setenv("HTR_WORKERS", n)
        assert cs.c3a_class_rates(fits, scenario, sims=8, seed=5) == want


def test_layer_fits_parallel_equals_serial(monkeypatch):
    """The blocks fitted ahead in workers are the serial fits, and the skipped block is still named."""
    from htr_utils.study.spectra_analysis import layer_fits

    rows = pd.DataFrame([{"run": "a", "block": "fc1", "lambda_1": 33.25, "lambda_C": 2.2, "lambda_C+1": 1.5,
                          "bulk_edge": 17.17, "overlap": 0.48, "dim": 40},
                         {"run": "a", "block": "fc2", "lambda_1": 6.5, "lambda_C": 0.06, "lambda_C+1": -4e-4,
                          "bulk_edge": 1.9, "overlap": 0.54, "dim": 600},
                         {"run": "b", "block": "fc1", "lambda_1": 20.0, "lambda_C": 1.5, "lambda_C+1": 1.0,
                          "bulk_edge": 8.0, "overlap": 0.5, "dim": 45}], index=[7, 7, 3])   # repeated labels
    monkeypatch.setenv("HTR_WORKERS", "2")
    fits, skipped = layer_fits(rows, 10)
    serial = [cs.fit_spiked(r["lambda_1"], r["lambda_C"], r["lambda_C+1"], r["bulk_edge"], r["overlap"],
                            int(r["dim"]), 10) for _, r in rows.iloc[[0, 2]].iterrows()]
    assert fits == serial and list(skipped) == ["a/fc2"]


def test_bootstrap_ranks_equal_rankdata_of_every_resample():
    from scipy.stats import rankdata

    from htr_utils.study.statistics import bootstrap_ranks

    rng = np.random.default_rng(3)
    for shape, groups in (((4, 21), 7), ((2, 3, 12), 12)):
        v = rng.standard_normal(shape)
        members = np.arange(shape[-1]).reshape(groups, -1)
        idx = members[rng.integers(0, groups, (50, groups))].reshape(50, -1)
        np.testing.assert_array_equal(bootstrap_ranks(v, idx), rankdata(v[..., idx], axis=-1))
    tied = np.round(rng.standard_normal((3, 10)), 0)   # ties among the originals: the rankdata fallback
    idx = rng.integers(0, 10, (20, 10))
    np.testing.assert_array_equal(bootstrap_ranks(tied, idx), rankdata(tied[..., idx], axis=-1))


def test_c6a_fitted_rates_match_the_partial_spearman_definition():
    """The rates from bootstrap ranks equal those from partial_spearman on every resample (same seed)."""
    from htr_utils.study import calibration_regularisation as cr
    from htr_utils.study.regularisation_rules import c6a_codes
    from htr_utils.study.statistics import partial_spearman

    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4))
    model = {"between": np.corrcoef(rng.standard_normal((30, 4)) @ a, rowvar=False), "within": 0.3 * np.eye(4)}
    got = cr.c6a_fitted_rates(model, -0.5, 7, 3, "fixed epochs", reps=30, boot=40, seed=2)
    rng = np.random.default_rng(2)   # the slow definition, drawn in the same order
    sim = cr.simulate_fitted_sweep(model, -0.5, 7, 3, 30, rng, "fixed epochs")
    idx = np.arange(21).reshape(7, 3)[rng.integers(0, 7, (40, 7))].reshape(40, -1)
    b = {c: np.nanquantile(partial_spearman(sim["trace"][:, idx], sim[c][:, idx], sim["loss"][:, idx]),
                           [0.025, 0.975], axis=1) for c in ("test_acc", "gap")}
    want = cr._rates(c6a_codes(b["test_acc"][0], b["test_acc"][1], b["gap"][0], b["gap"][1]))
    assert {k: got[k] for k in want} == want


def test_c6a_rates_match_the_partial_spearman_definition():
    from htr_utils.study import calibration as cal
    from htr_utils.study.regularisation_rules import c6a_codes
    from htr_utils.study.statistics import partial_spearman

    got = cal.c6a_rates(-0.5, 7, 3, reps=30, boot=40, seed=4)
    rng = np.random.default_rng(4)   # the slow definition, drawn in the same order
    sim = cal.simulate_sweep(-0.5, 7, 3, 30, rng, 0.3)
    idx = np.arange(21).reshape(7, 3)[rng.integers(0, 7, (40, 7))].reshape(40, -1)
    b = {c: np.nanquantile(partial_spearman(sim["trace"][:, idx], sim[c][:, idx], sim["loss"][:, idx]),
                           [0.025, 0.975], axis=1) for c in ("test_acc", "gap")}
    assert got == cal._rates(c6a_codes(b["test_acc"][0], b["test_acc"][1], b["gap"][0], b["gap"][1]))
