"""C1 and C4 tables and verdicts (spectra_verdicts) on constructed readings: the wiring from readings to rules."""
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from htr_utils.study import spectra_verdicts as sv
from htr_utils.study.spectra_readings import ClassBlock, ClassReading, DistanceReading, RunReadings
from htr_utils.study.verdicts import Verdict


def _run(model="lenet", epochs=5):
    metrics = pd.DataFrame({"epoch": range(1, epochs + 1), "train_loss": np.linspace(1, 0.1, epochs),
                            "train_acc": np.linspace(0.5, 0.99, epochs), "test_acc": np.linspace(0.5, 0.9, epochs)})
    return SimpleNamespace(config=SimpleNamespace(dataset="digits", model=model, model_kwargs={}), metrics=metrics,
                           curvature_epochs=lambda: [])


def _class_reading(epoch, n, k):
    top = tuple(float(v) for v in np.r_[np.linspace(100, 50, k), np.linspace(5, 1, 30 - k)])
    block = ClassBlock(dim=1000, bulk_edge=10.0, hess_top=top, outliers=k, overlap=0.6, overlap_chance=0.01)
    return ClassReading(epoch, n, 16, {"full": block, "conv1": block}, 1.0)


def test_c1_reads_the_last_epoch_on_most_examples():
    runs = {"a": _run(), "b": _run()}
    readings = {"a": RunReadings(classes={(1, 10): _class_reading(1, 10, 3), (5, 10): _class_reading(5, 10, 3),
                                          (5, 100): _class_reading(5, 100, 10)}),
                "b": RunReadings(classes={(5, 10): _class_reading(5, 10, 2), (5, 100): _class_reading(5, 100, 9)})}
    table = sv.class_table(runs, readings)
    assert set(table["block"]) == {"full", "conv1"} and table["train_loss"].notna().all()
    primary = sv.primary_rows(table[table["block"] == "full"])
    assert list(primary["per_class"]) == [100, 100] and list(primary["outliers"]) == [10, 9]
    assert sv.c1_verdict(table, 10).verdict is Verdict.REPRODUCED
    readings["b"].classes[(5, 100)] = _class_reading(5, 100, 2)
    assert sv.c1_verdict(sv.class_table(runs, readings), 10).verdict is Verdict.NOT_REPRODUCED


def _distance(epoch: int, closest: int, sized_middle: int | None = None, far_middle: bool = False) -> DistanceReading:
    """Five layers; the full spectrum's atoms are copied into layer ``closest``, the others are shifted away."""
    full = [([0.0, 1.0, 5.0], [0.6, 0.3, 0.1])] * 2
    layers = {f"l{i}": ([([0.0, 1.0, 5.0], [0.6, 0.3, 0.1])] * 2 if i == closest
                        else [([0.0, 1.0 + i, 9.0], [0.5, 0.3, 0.2])] * 2) for i in range(5)}
    return DistanceReading(epoch, 2, 16, full, full, layers, _null(sized_middle, far_middle))


def _null(sized_middle: int | None = None, far_middle: bool = False) -> dict:
    """Three random subsets per layer whose measures sit at W1 = 1, 2, 3 from the full one (the largest atom moved);
    ``sized_middle``: that layer's subsets sit at W1 0.1 (a layer whose size alone makes it closest);
    ``far_middle``: the middle layers' (l2, l3) subsets sit at 5, 6, 7 (size alone never makes them closest)."""
    def subset(w1: float) -> list:
        return [([0.0, 1.0, 5.0 + 10 * w1], [0.6, 0.3, 0.1])] * 2

    def levels(i: int) -> tuple[float, ...]:
        return (0.1,) * 3 if i == sized_middle else (5.0, 6.0, 7.0) if far_middle and i in (2, 3) else (1.0, 2.0, 3.0)
    return {f"l{i}": [subset(w) for w in levels(i)] for i in range(5)}


def test_c4_tally_from_readings():
    runs = {n: _run() for n in ("a", "b", "c")}
    middle = {n: RunReadings(distances={e: _distance(e, 2) for e in range(1, 6)}) for n in runs}
    table = sv.distance_table(runs, middle)
    assert (table.loc[table["layer"] == "l2", "w1"] == 0).all() and (table["floor"] == 0).all()
    null = sv.null_table(runs, middle, table)
    assert np.allclose(np.stack(null["null_w1"]), [1.0, 2.0, 3.0])      # W1 of the pooled subset measures
    classified = sv.c4_readings(table, null)
    assert (classified["reading"] == "middle").all() and (classified["floor / null"] == 0).all()
    # one subset per layer at random, W1 1, 2 or 3 each; equal minima are ties, so
    # P(min over 2 middle < min over 3 outer) = sum_k P(mid min = k) P(out min > k) = (5/9)(8/27) + (3/9)(1/27)
    assert classified["p_mid"].iloc[0] == pytest.approx(5 / 9 * 8 / 27 + 3 / 9 * 1 / 27, abs=1e-12)
    assert (classified["p_mid_hi"] > classified["p_mid"]).all()
    # 0.18 a reading is no evidence under Markov's bound (5 · 0.18 / 3 > 0.05), however many networks agree
    result = sv.c4_verdict(classified)
    assert result.verdict is Verdict.INCONCLUSIVE and "cannot reproduce" in result.measured
    assert sv.c4_verdict(classified, null="middle share").verdict is Verdict.REPRODUCED
    # the middle layer is closest although its own-size subsets never are: reproduced
    far = {n: RunReadings(distances={e: _distance(e, 2, far_middle=True) for e in range(1, 6)}) for n in runs}
    t_far = sv.distance_table(runs, far)
    result = sv.c4_verdict(sv.c4_readings(t_far, sv.null_table(runs, far, t_far)))
    assert result.verdict is Verdict.REPRODUCED and result.details["bound_middle"] == 0.0
    assert "cannot refute" in result.measured                       # size alone predicts the outer layers
    # outer layer closest everywhere, while size alone (the middle l2's subsets closest) predicts the middle
    outer = {n: RunReadings(distances={e: _distance(e, 0, sized_middle=2) for e in range(1, 6)}) for n in runs}
    t_out = sv.distance_table(runs, outer)
    result = sv.c4_verdict(sv.c4_readings(t_out, sv.null_table(runs, outer, t_out)))
    assert result.verdict is Verdict.NOT_REPRODUCED and result.details["bound_outer"] == 0.0


def test_c4_a_middle_winner_that_size_explains_is_no_evidence():
    """The middle layer l2 is closest in all 15 readings, but so are its own-size random subsets: the fixed chance
    rate (amendment 1) says reproduced, the size-matched null (amendment 2) does not."""
    runs = {n: _run() for n in ("a", "b", "c")}
    sized = {n: RunReadings(distances={e: _distance(e, 2, sized_middle=2) for e in range(1, 6)}) for n in runs}
    table = sv.distance_table(runs, sized)
    classified = sv.c4_readings(table, sv.null_table(runs, sized, table))
    assert (classified["p_mid"] == 1.0).all()
    assert sv.c4_verdict(classified, null="middle share").verdict is Verdict.REPRODUCED
    result = sv.c4_verdict(classified)
    assert result.verdict is Verdict.INCONCLUSIVE and "cannot reproduce" in result.measured


def test_c4_without_the_size_matched_null_says_how_to_get_it():
    runs = {"a": _run()}
    bare = {"a": RunReadings(distances={1: DistanceReading(1, 2, 16, *(_distance(1, 2).__dict__[k]
                                                                     for k in ("full_a", "full_b", "layers")))})}
    table = sv.distance_table(runs, bare)
    with pytest.raises(ValueError, match="null_subsets > 0"):
        sv.c4_readings(table, sv.null_table(runs, bare, table))


def test_c2_a_nan_floor_makes_c2_inconclusive_wherever_it_sits():
    """max() would keep 0.001 when the NaN comes second; the rule says an unread floor is inconclusive."""
    table = pd.DataFrame({"a_ggn": [0.01] * 8, "a_residual": [0.9] * 8})
    assert sv.c2_verdict(table, {"a": 0.001, "b": 0.002}).verdict == Verdict.REPRODUCED
    for floors in ({"a": float("nan"), "b": 0.001}, {"a": 0.001, "b": float("nan")}):
        assert sv.c2_verdict(table, floors).verdict == Verdict.INCONCLUSIVE


def test_c3_b_leaves_out_the_output_layer_where_h_is_zero_by_construction():
    top = tuple(float(v) for v in np.linspace(50, 1, 12))
    blocks = lambda shift: {"conv1": SimpleNamespace(top=tuple(t * shift for t in top)),  # noqa: E731
                            "fc3": SimpleNamespace(top=top)}
    rec = SimpleNamespace(layers=["conv1", "fc3"], kinds={"hessian": SimpleNamespace(layers=blocks(1.0)),
                                                          "ggn": SimpleNamespace(layers=blocks(0.5)),
                                                          "residual": SimpleNamespace(layers=blocks(0.5))})
    run = _run()
    run.config.model_kwargs = {"activation": "gelu"}
    run.curvature_epochs, run.curvature = (lambda: [0, 1, 2]), (lambda e: rec)
    table = sv.gelu_layer_agreement({"gelu": run})
    assert list(table["layer"]) == ["conv1", "conv1"] and list(table["epoch"]) == [1, 2]
    assert (table["a_ggn"] > 0.4).all()  # G_l at half of Hess_l disagrees; fc3 (G = Hess there) is not counted
    run.config.model_kwargs = {}
    assert sv.gelu_layer_agreement({"relu": run}).empty
