"""Issue 31's new C6b arms: the acting-dose arm's selection order and the authors'-schedule split, on stub runs."""
from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pandas as pd
import pytest

import htr_utils.study.regularisation_arms as ra
from htr_utils.study.profiles import RegStudy
from htr_utils.study.training import TrainConfig

BASE = TrainConfig(dataset="digits", model="lenet", width=0.25, train_size=120, test_size=60, val_fraction=0.2,
                   batch_size=40, lr=0.05, epochs=2, htr_freq=5, htr_start_epoch=1, htr_probes=2, curvature_every=2,
                   curvature_init=False, lanczos_iters=8, examples_per_class=2, trace_probes=4)


@dataclasses.dataclass(frozen=True)
class DoseStudy(RegStudy):
    dose_arm: bool = True


def _stub(monkeypatch, trace_of, acc_of=lambda cfg: 0.9):
    trained = []

    def run(cfg, root, data_root, progress):
        trained.append(cfg)
        return SimpleNamespace(cfg=cfg)

    monkeypatch.setattr(ra, "_run", run)
    monkeypatch.setattr(ra, "run_summary", lambda r: {"trace": trace_of(r.cfg), "test_acc": acc_of(r.cfg),
                                                      "penalty_steps": 4 if r.cfg.htr_gamma else 0, "steps": 12})
    return trained


def test_no_dose_arm_unless_the_profile_asks():
    study = RegStudy(base=BASE, seeds=(1, 2), l2=1e-4, gamma=1e-3, middle_gamma=1e-4, gamma_grid=(1e-3,))
    assert ra.acting_dose_arm(study, pd.DataFrame(), None) is None and not ra.has_dose_arm(study)


def test_acting_dose_is_the_first_candidate_in_order_and_later_ones_are_not_trained(monkeypatch):
    # seed-0 SGD trace 100; γ 1e-3 lowers it 10 %, 3e-3 25 % (acts), 1e-2 would lower it 50 %
    reductions = {(1e-3, 5): 0.10, (3e-3, 5): 0.25, (1e-2, 5): 0.50, (1e-3, 10): 0.3, (1e-2, 10): 0.6}
    trace = lambda c: 100.0 * (1 - reductions[(c.htr_gamma, c.htr_freq)]) if c.htr_gamma else 100.0  # noqa: E731
    trained = _stub(monkeypatch, trace, acc_of=lambda c: 0.9 + (0.001 if c.htr_gamma else 0.0) + 0.0001 * c.seed ** 2)
    study = DoseStudy(base=BASE, seeds=(1, 2, 3), l2=1e-4, gamma=1e-3, middle_gamma=1e-4, gamma_grid=(1e-3,))
    sgd = pd.DataFrame([{"arm": "sgd", "seed": s, "status": "done", "test_acc": 0.9 + 0.0001 * s ** 2, "trace": 100.0,
                         "penalty_steps": 0, "steps": 12} for s in (1, 2, 3)])
    out = ra.acting_dose_arm(study, sgd, None)
    assert out["chosen"] == "γ 3e-3"
    assert [(c.htr_gamma, c.seed) for c in trained] == [(0.0, 0), (1e-3, 0), (3e-3, 0), (3e-3, 1), (3e-3, 2), (3e-3, 3)]
    assert out["selection"]["status"].fillna("").tolist()[2:] == ["not needed"] * 3
    assert out["comparison"]["diff"] == pytest.approx(0.001) and out["dose"]["mean_pct"] == pytest.approx(25.0)
    # the study's schedule candidates are the γ grid's runs (same config, shared cache)
    assert dict(ra.dose_candidate_configs(study))["γ 1e-3"] == study.grid_configs("all")[1e-3]


def test_no_candidate_acts(monkeypatch):
    _stub(monkeypatch, lambda c: 95.0 if c.htr_gamma else 100.0)
    study = DoseStudy(base=BASE, seeds=(1,), l2=1e-4, gamma=1e-3, middle_gamma=1e-4)
    out = ra.acting_dose_arm(study, pd.DataFrame(), None)
    assert out["chosen"] is None and out["comparison"] is None and "no dose arm" in out["text"]


def test_authors_schedule_reads_epoch_30_of_the_40_epoch_runs(monkeypatch):
    study = RegStudy(base=BASE.replace(epochs=40), seeds=(1, 2, 3), l2=1e-4, gamma=1e-5, middle_gamma=1e-6,
                     decides=False, arm_names=("sgd", "htr"))
    assert ra.is_authors_schedule(study)

    def run(cfg, root, data_root, progress):  # test acc. rises 0.0002 per epoch after 30; HTR adds 0.0001 at 40
        acc = [0.80 + 0.001 * cfg.seed + (0.0002 * max(0, e - 30)) + (0.0001 if cfg.htr_gamma and e == 40 else 0)
               for e in range(1, 41)]
        return SimpleNamespace(metrics=pd.DataFrame({"epoch": range(1, 41), "test_acc": acc}))

    monkeypatch.setattr(ra, "_run", run)
    out = ra.authors_schedule_table(study, 1e-5, None)
    comps = out["comparisons"]
    assert comps["SGD 40 − SGD 30 (10 extra epochs)"]["diff"] == pytest.approx(0.002)
    assert comps["HTR 40 − SGD 30 (the authors' comparison)"]["diff"] == pytest.approx(0.0021)
    assert out["share_of_published"]["diff"] == pytest.approx(200.0)  # 0.2 pt = twice the +0.1-point gain
    with pytest.raises(ValueError, match="no epoch 45"):
        ra.epoch_accuracy(study, "sgd", 1e-5, 45, None)


def test_a_shorter_run_is_the_longer_runs_prefix(tmp_path):
    """Amendment 2 reads SGD 30 / HTR 30 as epoch 30 of the 40-epoch runs: same seed, schedule, data order and penalty
    steps up to there, so a k-epoch run's evaluation after epoch k must equal the longer run's, bit for bit."""
    from htr_utils.study.runs import train_run
    cfg = BASE.replace(val_fraction=0.0, epochs=6, milestones=(2, 4), htr_gamma=1e-3, htr_start_epoch=2,
                       eval_every=2, curvature_every=6)
    long = train_run(cfg, root=tmp_path, progress=False).metrics.set_index("epoch")
    short = train_run(cfg.replace(epochs=4, curvature_every=4), root=tmp_path, progress=False).metrics.set_index("epoch")
    assert short.loc[4, "penalty_steps"] > 0
    for col in ("test_acc", "test_loss", "train_loss"):
        assert short.loc[4, col] == long.loc[4, col], col
