"""Issue-30 verdicts (spectra_verdicts) on constructed runs and readings: the wiring from records to the rules."""
from types import SimpleNamespace

import numpy as np
import pytest
import pandas as pd

from htr_utils.study import spectra_verdicts as sv
from htr_utils.study.verdicts import Verdict


def _run(model: str, activation: str, epochs: list[int], ggn_scale: float):
    """A run whose Hess top spectrum moves with the epoch (λ_k = 100 e / k); G = ggn_scale × Hess at each epoch."""
    metrics = pd.DataFrame({"epoch": range(1, max(epochs) + 1), "train_loss": 0.5, "train_acc": 0.9, "test_acc": 0.8})

    def rec(e):
        top = tuple(100.0 * e / k for k in range(1, 31))
        full = lambda s: SimpleNamespace(top=tuple(s * t for t in top),  # noqa: E731
                                         density=SimpleNamespace(nodes=np.array([-1.0, 1.0])))
        return SimpleNamespace(kinds={"hessian": SimpleNamespace(full=full(1.0)), "ggn": SimpleNamespace(full=full(ggn_scale)),
                                      "residual": SimpleNamespace(full=full(0.01))})

    return SimpleNamespace(config=SimpleNamespace(dataset="digits", model=model, model_kwargs={"activation": activation}),
                           metrics=metrics, curvature_epochs=lambda: [0] + epochs, curvature=rec)


def test_c2_network_verdict_relu_networks_decide_and_the_far_epoch_control_fails():
    runs = {"lenet": _run("lenet", "relu", [1, 5, 10, 20], 0.98), "vgg": _run("vgg11_bn", "relu", [3, 15, 30], 0.97),
            "gelu": _run("lenet", "gelu", [1, 5, 10, 20], 0.7)}
    table = sv.gauss_newton_control_table(runs)
    lenet = table[table["run"] == "lenet"]
    assert list(lenet["control_epoch"]) == [20, 20, 20, 1]
    assert np.allclose(lenet["a_control"], [18.6, 2.92, 0.96, 0.951])        # |G_far − Hess_e| / Hess_e, scale 0.98 G
    assert list(table.groupby("run", sort=False)["decides"].first()) == [True, True, False]
    result = sv.c2_network_verdict(table, {"lenet": 1e-3, "vgg": 1e-3, "gelu": 1e-3})
    assert result.verdict == Verdict.REPRODUCED
    assert result.details["per_network"]["gelu"] == "not reproduced" and "extension" in result.measured
    bad = {**runs, "vgg": _run("vgg11_bn", "relu", [3, 15, 30], 0.6)}
    assert sv.c2_network_verdict(sv.gauss_newton_control_table(bad), {"lenet": 1e-3, "vgg": 1e-3}).verdict \
        == Verdict.NOT_REPRODUCED


def test_c4_depth_verdict_on_a_constructed_table():
    """Two ReLU networks whose W1 grows steeply away from the middle, read at two epochs, and a GELU extension."""
    rows = []
    for run, sizes, decides in (("lenet", (150, 2400, 48000, 10080, 840), True),
                                ("vgg", (72, 1152, 4608, 9216, 18432, 36864, 36864, 36864, 640), True),
                                ("gelu", (150, 2400, 48000, 10080, 840), False)):
        L = len(sizes)
        for epoch in (10, 20):
            for i, n in enumerate(sizes):
                d = (i + 0.5) / L
                w1 = np.exp(6.0 * abs(d - 0.5) + 0.01 * np.sin(7 * i + epoch)) * (n / sum(sizes)) ** 0.3
                rows.append({"run": run, "epoch": epoch, "layer": f"l{i}", "index": i, "num_layers": L, "depth": d,
                             "middle": 0.25 <= d <= 0.75, "size": n, "share": n / sum(sizes), "w1": w1,
                             "w1_normalised": w1, "decides": decides})
    result = sv.c4_depth_verdict(pd.DataFrame(rows))
    assert result.verdict == Verdict.REPRODUCED and result.details["deciding"] == ["lenet", "vgg"]
    assert result.details["fit"]["c"] > 5 and "extension" in result.measured and "p_N" in result.measured
    noise = np.random.default_rng(0).normal(0, 0.3, len(rows))
    flat = pd.DataFrame(rows).assign(w1=np.exp(noise))                   # no depth effect, no size effect
    assert sv.c4_depth_verdict(flat).verdict == Verdict.NOT_REPRODUCED
    step = {"run": "vgg", "epoch": 20, "steps": (32, 64), "mean_abs_delta_log_w1": 0.42, "stands": False}
    stated = sv.c4_depth_verdict(pd.DataFrame(rows), step)
    assert stated.verdict == result.verdict and "takes every reading at 64 steps" in stated.measured
    assert stated.details["step_check"]["stands"] is False


def test_c1_and_c3_class_direction_verdicts_from_readings():
    """k_cls from the readings' per-vector overlaps decides; the count above the strongest within-class direction is
    reported apart; readings without per-vector overlaps stop with the remedy."""
    from htr_utils.study.spectra_readings import ClassBlock, ClassReading, RunReadings

    def reading(epoch, n, class_dirs, above):
        top = tuple(float(v) for v in np.linspace(100, 1, 30))
        ov = tuple([0.9] * class_dirs + [0.05] * (20 - class_dirs))
        b = ClassBlock(dim=1000, bulk_edge=top[above] + 0.5, hess_top=top, outliers=above, overlap=0.6,
                       overlap_chance=0.01, overlaps=ov,
                       within_top=(top[above] + 0.5, 3.0) + tuple(np.linspace(2.0, 1.5, 10)))
        return ClassReading(epoch, n, 16, {"full": b, "conv1": b, "fc": b}, 1.0)

    run = _run("lenet", "relu", [1, 2], 1.0)
    runs = {"a": run, "b": run}
    readings = {"a": RunReadings(classes={(2, 10): reading(2, 10, 3, 1), (2, 100): reading(2, 100, 10, 1)}),
                "b": RunReadings(classes={(2, 100): reading(2, 100, 9, 2)})}
    table = sv.class_direction_table(runs, readings)
    assert set(table["class_directions"]) == {3, 10, 9} and (table["within_2"] == 3.0).all()
    c1 = sv.c1_class_verdict(table, 10)
    assert c1.verdict == Verdict.REPRODUCED and c1.details["class_directions"] == {"a": 10, "b": 9}
    assert c1.details["clear_within"] == "not reproduced" and "does not decide" in c1.measured
    c3 = sv.c3_class_verdict(table, pd.DataFrame({"a_ggn": [0.01] * 4}), 10)
    assert c3.verdict == Verdict.REPRODUCED and c3.details["share_clear_within"] == 0.0
    old = {"a": RunReadings(classes={(2, 100): ClassReading(2, 100, 16, {"full": ClassBlock(
        dim=1000, bulk_edge=1.0, hess_top=tuple(np.linspace(10, 1, 30)), outliers=9, overlap=0.6, overlap_chance=0.01)})})}
    with pytest.raises(ValueError, match="take the class readings again"):
        sv.c1_class_verdict(sv.class_direction_table({"a": run}, old), 10)


def test_lanczos_step_check_isolates_the_steps():
    from htr_utils.study.spectra_readings import DistanceReading

    def reading(iters, shift, probes):
        runs = lambda c, s: [([c + p, c + p + 1.0 + s], [0.5, 0.5]) for p in range(probes)]  # noqa: E731
        return DistanceReading(30, probes, iters, runs(0.0, 0.0), runs(0.0, 0.0),
                               {"l0": runs(2.0, shift), "l1": runs(5.0, shift)})   # more steps move the layers

    same = sv.lanczos_step_check(reading(32, 0.0, 5), reading(64, 0.0, 2))
    assert same["mean_abs_delta_log_w1"] == pytest.approx(0.0, abs=1e-12) and same["steps"] == (32, 64)
    moved = sv.lanczos_step_check(reading(32, 0.0, 5), reading(64, 1.0, 2))
    assert moved["mean_abs_delta_log_w1"] > 0.05
    with pytest.raises(ValueError, match="at least 2 probes"):
        sv.lanczos_step_check(reading(32, 0.0, 1), reading(64, 0.0, 2))


def test_c2_a_network_with_g_at_one_epoch_is_decided_without_the_control():
    """Amendment of 2026-12-07: the far-epoch control no longer gates, so a network with G at one epoch (the smoke
    VGG) is decided by its readings; the superseded issue-30 rule (control not read: inconclusive) is shown beside."""
    runs = {"lenet": _run("lenet", "relu", [1, 5, 10, 20], 0.98), "vgg": _run("vgg11_bn", "relu", [30], 0.97)}
    table = sv.gauss_newton_control_table(runs)
    assert table[table["run"] == "vgg"]["a_control"].isna().all()
    result = sv.c2_network_verdict(table, {"lenet": 1e-3, "vgg": 1e-3})
    assert result.details["per_network"] == {"lenet": "reproduced", "vgg": "reproduced"}
    assert result.verdict == Verdict.REPRODUCED and result.details["issue30_with_control"] == "inconclusive"
    assert "vgg (decides): reproduced" in result.measured and "control not read" in result.measured
    floor_high = sv.c2_network_verdict(table, {"lenet": 1e-3, "vgg": 0.2})
    assert floor_high.details["per_network"]["vgg"] == "inconclusive"


def test_step_check_finds_the_named_run_and_the_verdict_states_it():
    from htr_utils.study.profiles import SpectraReading
    from htr_utils.study.spectra_readings import DistanceReading, RunReadings

    def reading(iters, shift, probes):
        runs = lambda c, s: [([c + p, c + p + 1.0 + s], [0.5, 0.5]) for p in range(probes)]  # noqa: E731
        return DistanceReading(30, probes, iters, runs(0.0, 0.0), runs(0.0, 0.0),
                               {"l0": runs(2.0, shift), "l1": runs(5.0, shift)})

    settings = {"a": SpectraReading((30,), (30,)), "b": SpectraReading((30,), (30,), step_check_epoch=30)}
    far = {"a": RunReadings(), "b": RunReadings(distances={30: reading(32, 0.0, 5)}, step_check=reading(64, 3.0, 2))}
    check = sv.step_check(far, settings)
    assert check["run"] == "b" and check["steps"] == (32, 64) and not check["stands"]
    near = {"b": RunReadings(distances={30: reading(32, 0.0, 5)}, step_check=reading(64, 0.0, 2))}
    assert sv.step_check(near, settings)["stands"]
    with pytest.raises(ValueError, match="twice the steps"):
        sv.step_check({"b": RunReadings(distances={30: reading(32, 0.0, 5)})}, settings)
    with pytest.raises(ValueError, match="step_check_epoch"):
        sv.step_check(far, {"a": settings["a"]})


def test_class_directions_below_the_continuous_edge_are_not_counted():
    """Amendment of 2026-12-07: a top vector with most of its mass in the class-mean span whose Ritz value lies below
    λ_C+1(G_within) is not counted; the count without the edge is shown beside."""
    from htr_utils.study.spectra_readings import ClassBlock, ClassReading, RunReadings

    top = tuple(float(v) for v in np.linspace(100, 1, 30))
    ov = tuple([0.9] * 10 + [0.05] * 10)
    within = (200.0,) + tuple(np.linspace(150, 120, 9)) + (top[5] - 0.1, 1.0)   # λ_11(G_within) just below top[5]
    b = ClassBlock(dim=1000, bulk_edge=200.0, hess_top=top, outliers=0, overlap=0.6, overlap_chance=0.01,
                   overlaps=ov, within_top=within)
    run = _run("lenet", "relu", [1, 2], 1.0)
    table = sv.class_direction_table({"a": run}, {"a": RunReadings(classes={(2, 100): ClassReading(
        2, 100, 16, {"full": b}, 1.0)})})
    row = table.iloc[0]
    assert row["class_directions"] == 6 and row["class_directions_any_eigenvalue"] == 10
    assert row["within_continuous_edge"] == pytest.approx(top[5] - 0.1)
    c1 = sv.c1_class_verdict(table, 10)
    assert c1.verdict == Verdict.INCONCLUSIVE and "superseded: reproduced" in c1.measured


def test_a_block_of_dimension_at_most_c_has_no_continuous_edge():
    """All of a small block's within-class eigenvalues are read: no bulk, so the edge does not bind (−inf)."""
    from htr_utils.study.spectra_readings import ClassBlock, ClassReading, RunReadings

    b = ClassBlock(dim=8, bulk_edge=5.0, hess_top=tuple(np.linspace(9, 1, 8)), outliers=2, overlap=0.9,
                   overlap_chance=1.0, overlaps=(0.9,) * 8, within_top=tuple(np.linspace(5, 0.5, 8)))
    run = _run("lenet", "relu", [1, 2], 1.0)
    table = sv.class_direction_table({"a": run}, {"a": RunReadings(classes={(2, 100): ClassReading(
        2, 100, 16, {"full": b}, 1.0)})})
    assert table.iloc[0]["class_directions"] == 8 and table.iloc[0]["within_continuous_edge"] == -np.inf
