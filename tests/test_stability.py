"""benchmarks/stability.py (issue 17): the spread over CPU variants and the run-against-run comparison."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from benchmarks.stability import compare_devices, spread
from htr_utils.study.runs import train_run
from htr_utils.study.training import TrainConfig

TINY = TrainConfig(dataset="digits", model="mlp", width=0.25, train_size=60, test_size=30, batch_size=30, epochs=3,
                   curvature_every=1, curvature_init=False, lanczos_iters=4, examples_per_class=1, trace_probes=2,
                   layerwise=True)  # depth_trends' series read the layer spectra too


def _arm(acc: float, loss: float, trace: float, lmax: float) -> dict[str, float]:
    return {"test_acc": acc, "train_loss": loss, "trace": trace, "lambda_max": lmax}


def test_spread_is_max_minus_min_over_variants_with_paired_differences():
    rows = {"a": {"sgd": _arm(0.870, 0.30, 440.0, 70.0), "htr": _arm(0.872, 0.31, 430.0, 69.0)},
            "b": {"sgd": _arm(0.874, 0.29, 446.0, 72.0), "htr": _arm(0.873, 0.30, 441.0, 68.0)},
            "c": {"sgd": _arm(0.871, 0.33, 443.0, 71.0), "htr": _arm(0.875, 0.32, 435.0, 70.5)}}
    s = spread(rows)
    assert s["sgd test_acc"] == {"min": 0.870, "max": 0.874, "spread": pytest.approx(0.004)}
    assert s["htr lambda_max"]["spread"] == pytest.approx(2.5)
    # paired per variant: +0.002, −0.001, +0.004 → spread 0.005; trace −10, −5, −8 → spread 5
    assert s["htr − sgd test_acc"]["min"] == pytest.approx(-0.001)
    assert s["htr − sgd test_acc"]["spread"] == pytest.approx(0.005)
    assert s["htr − sgd trace"] == {"min": -10.0, "max": -5.0, "spread": 5.0}


def test_compare_devices_reads_identical_copies_as_zero_and_refuses_different_configs(tmp_path, one_thread):
    a = train_run(TINY, root=tmp_path / "a", progress=False)
    b = train_run(TINY, root=tmp_path / "b", progress=False)
    out = compare_devices(a.path, b.path)
    assert out["epochs"] == [1, 2, 3]
    assert all(v == 0.0 for v in out["max"].values()), out["max"]
    for q, (ta, tb) in out["kendall_tau"].items():
        assert ta == tb and math.isfinite(ta), q

    c = train_run(TINY.replace(lr=TINY.lr * 2), root=tmp_path / "c", progress=False)
    with pytest.raises(ValueError, match="different configs"):
        compare_devices(a.path, c.path)


def test_compare_devices_reports_a_changed_number(tmp_path, one_thread):
    a = train_run(TINY, root=tmp_path / "a", progress=False)
    b = train_run(TINY, root=tmp_path / "b", progress=False)
    metrics = b.path / "metrics.csv"
    lines = metrics.read_text().splitlines()
    header = lines[0].split(",")
    col = header.index("test_acc")
    last = lines[-1].split(",")
    last[col] = repr(float(last[col]) + 0.25)
    metrics.write_text("\n".join([*lines[:-1], ",".join(last)]) + "\n")
    out = compare_devices(a.path, b.path)
    assert out["max"]["test_acc diff"] == pytest.approx(0.25)
    assert out["max"]["train_loss diff"] == 0.0


def test_trend_p_values_are_scipys_exact_ones():
    from scipy import stats

    from benchmarks.stability import _trend_p
    rng = np.random.default_rng(3)
    for n in (5, 9, 20):
        v = np.cumsum(rng.normal(size=n)) + 0.3 * np.arange(n)
        x = np.arange(n)
        tau = stats.kendalltau(x, v).statistic
        p_dec, p_inc = _trend_p(tau, n)
        assert p_dec == pytest.approx(stats.kendalltau(x, v, method="exact", alternative="less").pvalue, rel=1e-9)
        assert p_inc == pytest.approx(stats.kendalltau(x, v, method="exact", alternative="greater").pvalue, rel=1e-9)


def test_c6b_is_stable_only_when_no_shift_by_the_spread_changes_it():
    from benchmarks.stability import assess_c6b
    far = [{"lo": -0.0003, "hi": 0.0003}, {"lo": -0.0004, "hi": 0.0001}]  # upper bounds 0.03 pts < margin 0.1 pts
    assert assess_c6b(far, 0.0002, "not reproduced")["stable"] == "yes"
    near = [{"lo": -0.0003, "hi": 0.0009}, {"lo": -0.0004, "hi": 0.0001}]  # 0.09 + 0.02 pts crosses the margin
    out = assess_c6b(near, 0.0002, "not reproduced")
    assert out["stable"] == "no" and "inconclusive" in out["why"]


def test_c5_assessment_applies_the_rule_to_each_devices_copy():
    from benchmarks.stability import assess_c5
    rising = {"tau": {"lambda_max": [0.1, 0.3], "trace": [0.6, 0.6]}}
    devices = {"a": {"epochs": list(range(0, 21)), "kendall_tau": rising["tau"]},
               "short": {"epochs": [1, 2, 3], "kendall_tau": {"lambda_max": [-1.0, 1.0], "trace": [-1.0, 1.0]}}}
    out = assess_c5(devices, "not reproduced")  # trace τ = 0.6 over 20 epochs: p ≈ 1e-4 < 0.05 / 2 on both
    assert out["stable"] == "yes" and "1 spectra runs" in out["why"]
    devices["a"]["kendall_tau"] = {"lambda_max": [0.1, 0.3], "trace": [0.6, 0.05]}  # the GPU copy shows no rise
    assert assess_c5(devices, "not reproduced")["stable"] == "no"


def _c6a_verdict(verdict: str, acc: tuple[float, float, float], gap: tuple[float, float, float]) -> dict:
    corr = {"partial_test_acc": dict(zip(("rho", "lo", "hi"), acc)),
            "partial_acc_gap": dict(zip(("rho", "lo", "hi"), gap)),
            "partial_loss_gap": {"rho": 0.0, "lo": -0.5, "hi": 0.5}}
    return {"claim_id": "C6a", "verdict": verdict, "extra": {"correlations": corr}}


def test_rerun_assessment_is_stable_only_when_every_variant_gives_the_committed_verdict():
    from benchmarks.stability import assess_rerun, key_numbers
    committed = _c6a_verdict("inconclusive", (-0.04, -0.82, 0.50), (-0.06, -0.76, 0.46))
    same = {"a": {"verdict": "inconclusive", "key": key_numbers(_c6a_verdict("inconclusive", (-0.2, -0.9, 0.3),
                                                                              (0.1, -0.5, 0.6)))}}
    out = assess_rerun(same, committed)
    assert out["stable"] == "yes"
    assert "partial_test_acc rho -0.2 … -0.04" in out["why"] and "partial_test_acc hi 0.30 … 0.50" in out["why"]
    flipped = {**same, "b": {"verdict": "reproduced", "key": key_numbers(_c6a_verdict("reproduced", (-0.7, -0.9, -0.2),
                                                                                      (0.6, 0.2, 0.9)))}}
    out = assess_rerun(flipped, committed)
    assert out["stable"] == "no" and "b reproduced" in out["why"]


def test_key_numbers_of_c0_is_the_worst_check_against_its_tolerance():
    from benchmarks.stability import key_numbers
    checks = [{"measured": 1e-15, "tolerance": 1e-10}, {"measured": 1.0, "tolerance": 4.0}]
    assert key_numbers({"claim_id": "C0", "extra": {"checks": checks}}) == {"worst check / tolerance": 0.25}
    assert key_numbers({"claim_id": "C7", "extra": {}}) == {}


def test_key_numbers_of_the_spectra_claims_are_what_their_rules_read():
    from benchmarks.stability import key_numbers
    rows = [{"run": "lenet_x", "outliers": 3, "bulk_edge": 17.2}, {"run": "vgg.b-1", "outliers": 12, "bulk_edge": 150.0}]
    assert key_numbers({"claim_id": "C1", "extra": {"rows": rows}}) == {
        "k lenet_x": 3.0, "k vgg.b-1": 12.0, "edge lenet_x": 17.2, "edge vgg.b-1": 150.0}
    assert key_numbers({"claim_id": "C2", "extra": {"pass_ggn": 9, "pass_residual": 0, "total": 18}}) == {
        "G within 10 % (of total)": 0.5, "H within 10 % (of total)": 0.0}
    assert key_numbers({"claim_id": "C3", "extra": {"share_counts": 0.25, "share_agreement": 0.5}}) == {
        "share of blocks with C ± 2 outliers": 0.25, "share of G_l within 10 %": 0.5}
    measured = ("full network: 1/4 series decrease significantly [a_b lambda_max: 117.8 → 69.58 (epochs 1–50, n = 50, "
                "τ = -0.28, p↓ = 0.001); a_b trace: 490.3 → 430.9 (epochs 1–50, n = 50, τ = 0.41, p↓ = 1)]; "
                "layers: 8/38 [a_b conv1 lambda_max: 1 → 2 (epochs 1–50, n = 50, τ = 0.9, p↓ = 1)]")
    assert key_numbers({"claim_id": "C5", "measured": measured, "extra": {"full_decreasing": 1}}) == {
        "full series decreasing": 1.0, "τ a_b lambda_max": -0.28, "τ a_b trace": 0.41}


def _c6b_verdict(verdict: str, gamma: float, lo: float, hi: float) -> dict:
    rows = [{"comparison": "SGD + HTR − SGD", "quantity": "test_acc", "in_rule": True, "diff": (lo + hi) / 2,
             "lo": lo, "hi": hi},
            {"comparison": "SGD + HTR − SGD", "quantity": "trace", "in_rule": False, "diff": -4.0, "lo": -7, "hi": -1}]
    return {"claim_id": "C6b", "verdict": verdict, "extra": {"per_study": {"s": verdict}, "gammas": {"s": gamma},
                                                             "comparisons": {"s": rows}}}


def test_key_numbers_of_c6b_are_the_chosen_gamma_and_the_paired_accuracy_intervals_in_points():
    from benchmarks.stability import key_numbers
    got = key_numbers(_c6b_verdict("not reproduced", 1e-4, -0.0001, 0.0003))
    assert got == pytest.approx({"log10 γ chosen": -4.0, "SGD + HTR − SGD (pts) diff": 0.01,
                                 "SGD + HTR − SGD (pts) lo": -0.01, "SGD + HTR − SGD (pts) hi": 0.03})


def test_assess_is_stable_only_when_every_measured_check_of_a_verdict_says_so(tmp_path):
    from benchmarks.stability import assess, key_numbers
    verdicts = {"05_t": {"claim_id": "C5", "verdict": "not reproduced", "measured": "", "extra": {"full_decreasing": 0}},
                "06_g": _c6a_verdict("inconclusive", (0.0, -0.5, 0.5), (0.0, -0.5, 0.5)),
                "07_r": _c6b_verdict("not reproduced", 1e-4, -0.0001, 0.0003),
                "08_m": {"claim_id": "C7", "verdict": "not reproduced"},
                "09_x": {"claim_id": "C9", "verdict": "inconclusive"}}
    for name, v in verdicts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "verdict.json").write_text(json.dumps(v))
    rising = {"epochs": list(range(21)), "kendall_tau": {"lambda_max": [0.1, 0.1], "trace": [0.6, 0.6]}}
    flip = {"verdict": "inconclusive", "key": {"full series decreasing": 0.0}}
    results = {"devices": {"a": rising}, "variants": {"spread": {"htr − sgd test_acc": {"spread": 0.0001}}},
               "reruns": {"v1": {"05_t": flip,
                                 "07_r": {"verdict": "not reproduced",
                                          "key": key_numbers(_c6b_verdict("not reproduced", 1e-5, -0.0002, 0.0004))}}}}
    out = assess(tmp_path, results)
    assert out["05_t"]["stable"] == "no"  # its device copies agree, its rerun flips
    assert "CPU and GPU copies" in out["05_t"]["why"] and "v1 inconclusive" in out["05_t"]["why"]
    assert out["07_r"]["stable"] == "yes"  # the shift by the spread and the rerun both keep it
    assert "shifted" in out["07_r"]["why"] and "log10 γ chosen -5 … -4" in out["07_r"]["why"]
    assert out["08_m"]["stable"] == "yes"  # C7 follows C6b
    assert out["06_g"]["stable"] == out["09_x"]["stable"] == "not measured"
    assert json.loads((tmp_path / "stability.json").read_text()) == out
    assert "not measured" in (tmp_path / "REPORT.md").read_text()


def test_collect_rerun_reads_every_finished_notebook_of_a_variant(tmp_path):
    from benchmarks.stability import collect_rerun
    for name, v in {"00_a": {"claim_id": "C0", "verdict": "reproduced", "extra": {"checks": [
            {"measured": 1.0, "tolerance": 2.0}]}}, "02_b": {"claim_id": "C2", "verdict": "inconclusive", "extra": {
            "pass_ggn": 1, "pass_residual": 0, "total": 4}}}.items():
        (tmp_path / "figures" / name).mkdir(parents=True)
        (tmp_path / "figures" / name / "verdict.json").write_text(json.dumps(v))
    (tmp_path / "figures" / "03_unfinished").mkdir()
    rows = collect_rerun(tmp_path, {"threads": 2})
    assert set(rows) == {"00_a", "02_b"}
    assert rows["02_b"]["key"]["G within 10 % (of total)"] == 0.25 and rows["00_a"]["environment"] == {"threads": 2}


def test_variant_env_sets_threads_and_instruction_set_and_nothing_stale(monkeypatch):
    from benchmarks.stability import variant_env
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    native = variant_env("", 2, HTR_RUNS_DIR="/x")
    assert "ATEN_CPU_CAPABILITY" not in native and native["OMP_NUM_THREADS"] == "2" and native["HTR_RUNS_DIR"] == "/x"
    assert variant_env("default", 1)["ATEN_CPU_CAPABILITY"] == "default"


@pytest.mark.slow
def test_a_rerun_executes_the_notebook_in_its_own_cache_under_the_variant(tmp_path):
    """End to end on the smoke profile: notebook 00 rerun under the default instruction set, 1 thread."""
    from benchmarks.stability import run_reruns
    rows = run_reruns(tmp_path, only=["default ISA, 1 thread"], notebooks=["00"], profile="smoke")
    row = rows["default ISA, 1 thread"]["00_routines_check"]
    assert row["verdict"] == "reproduced" and row["claim_id"] == "C0"
    assert row["key"]["worst check / tolerance"] < 1
    assert row["environment"]["capability"] == "DEFAULT" and row["environment"]["threads"] == 1
    assert (tmp_path / "default_ISA_1_thread" / "figures" / "REPORT.md").is_file()
