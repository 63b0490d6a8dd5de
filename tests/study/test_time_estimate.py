"""The time estimate's arithmetic (runs × steps × sampled costs) and the grid's stages."""
from __future__ import annotations

import math

import pytest

from htr_utils.study import grid
from htr_utils.study.profiles import SpectraReading, get_profile
from htr_utils.study.time_estimate import RunCost, StageRow, reading_seconds, run_seconds, table
from htr_utils.study.training import TrainConfig


def test_run_seconds_counts_steps_penalty_steps_evaluations_and_curvature_records():
    cfg = TrainConfig(dataset="digits", batch_size=100, epochs=6, htr_gamma=1e-3, htr_freq=4, htr_start_epoch=2,
                      curvature_every=3, curvature_kinds=("hessian", "ggn"), curvature_kinds_epochs=(0, 6))
    cost = RunCost(step=1.0, penalty_step=10.0, evaluation=100.0,
                   curvature={("hessian",): 1000.0, ("hessian", "ggn"): 10000.0})
    # 1000 images, batch 100: 10 steps per epoch; penalty on steps 0, 4, 8 of epochs 3-6 (4 epochs × 3)
    steps, penalised = 6 * 10, 4 * 3
    records = {0: 10000.0, 3: 1000.0, 6: 10000.0}  # epoch 0 and 6 with both kinds, epoch 3 the Hessian only
    expected = (steps - penalised) * 1.0 + penalised * 10.0 + 6 * 100.0 + sum(records.values())
    assert run_seconds(cfg, cost, train_size=1000) == pytest.approx(expected)


def test_a_run_without_htr_or_curvature_is_steps_and_evaluations():
    cfg = TrainConfig(dataset="digits", batch_size=64, epochs=3)
    cost = RunCost(step=0.5, penalty_step=math.nan, evaluation=2.0, curvature={})
    assert run_seconds(cfg, cost, train_size=1000) == pytest.approx(3 * 16 * 0.5 + 3 * 2.0)


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_stages_hold_every_planned_run_and_the_htr_arms_to_come(profile):
    P = get_profile(profile)
    stages = dict(grid.stages(P))
    planned = [t for t in grid.plan(P) if not t.skipped]
    later = ("HTR arms at the chosen γ", "acting-dose arm (worst case: no candidate acts before the last)")
    assert sum(len(c) for name, c in stages.items() if name not in later) == len(planned)
    arms = stages["HTR arms at the chosen γ"]
    assert arms and all(c.htr_gamma > 0 for c in arms)
    studies = [s for s in P.regularisation.values() if s.decides]
    assert len(arms) >= sum(len(s.seeds) for s in studies)  # at least full HTR at every evaluation seed


def test_table_totals_the_minutes_and_skips_unknown_ones():
    rows = [StageRow("a", 2, 0, 10.0, "x"), StageRow("b", 0, 3, 5.5, "y"), StageRow("c", 0, 0, math.nan, "z")]
    text = table(rows)
    assert "| **total** | 2 | 3 | **15.5** | |" in text


def test_reading_seconds_count_the_products_of_each_planned_reading():
    reading = SpectraReading(class_epochs=(1,), distance_epochs=(2,), slq_probes=5, lanczos_iters=128,
                             distance_lanczos_iters=32)
    sample = {"class": 30.0, "column": 0.01, "layers": 5.0}
    assert reading_seconds("class", 100, reading, sample) == pytest.approx(300.0)
    # 2K + K·L + K·L·S chains of 32 steps: S = 0 gives 10 + 25 = 35 chains
    assert reading_seconds("distance", 0, reading, sample) == pytest.approx(35 * 32 * 0.01)
    assert reading_seconds("distance", 5, reading, sample) == pytest.approx((35 + 125) * 32 * 0.01)
    # the step check: its own K = 3 probes, at twice the distance steps
    assert reading_seconds("step_check", 3, reading, sample) == pytest.approx((6 + 15) * 64 * 0.01)
    with pytest.raises(ValueError, match="unknown reading kind"):
        reading_seconds("spectra", 1, reading, sample)
