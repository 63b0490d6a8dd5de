"""C6/C7 study helpers: statistics against textbook formulas, γ selection, run summaries, verdict rules."""
from __future__ import annotations

from types import SimpleNamespace

import pandas as pd
import torch
import pytest

import htr_utils.study.regularisation as rs
from htr_utils.study.profiles import RegStudy
from htr_utils.study.runs import train_run
from htr_utils.study.training import TrainConfig, Trainer, penalty_parameter_names

TINY = TrainConfig(dataset="digits", model="lenet", width=0.25, train_size=120, test_size=60, val_fraction=0.2,
                   batch_size=40, lr=0.05, epochs=2, htr_freq=1, htr_start_epoch=1, htr_probes=2, curvature_every=2,
                   curvature_init=False, lanczos_iters=8, examples_per_class=2, trace_probes=4)


# ---------------------------------------------------------------------------- earlier rules (shown beside)

def _comparisons(*rows):
    return pd.DataFrame([{"welch_diff": d, "welch_lo": lo, "welch_hi": hi} for d, lo, hi in rows])


def test_earlier_rules():
    rho = lambda r, lo, hi: {"rho": r, "lo": lo, "hi": hi}  # noqa: E731
    assert rs.sweep_verdict(rho(-0.8, -0.95, -0.3), rho(0.7, 0.2, 0.9)) == "reproduced"
    assert rs.sweep_verdict(rho(-0.8, -0.95, 0.1), rho(0.7, 0.2, 0.9)) == "inconclusive"
    assert rs.sweep_verdict(rho(0.3, -0.5, 0.8), rho(-0.1, -0.6, 0.5)) == "not reproduced"
    assert rs.improvement_verdict(_comparisons((0.01, 0.001, 0.02), (0.005, 0.001, 0.01))) == "reproduced"
    assert rs.improvement_verdict(_comparisons((0.01, -0.001, 0.02), (0.005, 0.001, 0.01))) == "inconclusive"
    assert rs.improvement_verdict(_comparisons((-0.01, -0.02, 0.0), (0.0, -0.01, 0.01))) == "not reproduced"


def test_earlier_c7_needs_one_rule_to_pass_both_parts():
    comp = pd.DataFrame([{"arm": "htr_middle", "welch_lo": -0.02, "welch_hi": -0.005},   # worse
                         {"arm": "htr_middle_authors", "welch_lo": -0.001, "welch_hi": 0.001}])
    costs = pd.DataFrame({"step": ["plain", "all", "middle", "middle_authors"], "median_s": [0.01, 1.0, 0.1, 1.1]})
    # accuracy passes only for the authors' rule, cost only for the layer rule: not one method
    assert rs.earlier_c7_verdict(comp, costs, ("middle", "middle_authors")) == "not reproduced"
    costs.loc[3, "median_s"] = 0.2
    assert rs.earlier_c7_verdict(comp, costs, ("middle", "middle_authors")) == "reproduced"


# ---------------------------------------------------------------------------- γ on validation

def test_select_gamma_picks_best_validation_accuracy_never_a_diverged_run(monkeypatch, tmp_path):
    val = {0.0: 0.80, 1e-4: 0.82, 1e-3: 0.85, 1e-2: None}  # None: diverged
    trained = []

    def fake(cfg, root, data_root, progress):
        trained.append(cfg)
        acc = val[cfg.htr_gamma]
        return None if acc is None else SimpleNamespace(metrics=pd.DataFrame({"val_acc": [acc], "val_loss": [1.0]}))

    monkeypatch.setattr(rs, "_train_or_diverge", fake)
    study = RegStudy(base=TINY, seeds=(3, 4), l2=1e-4, gamma=1e-4, middle_gamma=1e-5, gamma_grid=(1e-4, 1e-3, 1e-2),
                     middle_gamma_grid=(1e-5,), selection_seed=7)
    table, gamma = rs.select_gamma(study, "all", tmp_path)
    assert gamma == 1e-3 and table.loc[table["chosen"], "gamma"].tolist() == [1e-3]
    assert table.set_index("gamma").loc[1e-2, "status"] == "diverged"
    assert all(c.seed == 7 and c.weight_decay == 0 for c in trained)  # the selection seed only, no L2
    # the γ = 0 reference run is the SGD arm's config at the selection seed
    assert trained[0] == study.arms()["sgd"].replace(seed=7)
    # middle rule: its own grid, and the chosen arm's config equals the grid run's
    val[1e-5] = 0.81
    trained.clear()
    _, mg = rs.select_gamma(study, "middle", tmp_path)
    assert mg == 1e-5 and trained[-1] == study.arms({"middle": mg})["htr_middle"].replace(seed=7)


def test_selection_seed_may_not_be_evaluated():
    with pytest.raises(ValueError, match="selection_seed"):
        RegStudy(base=TINY, seeds=(0, 1), l2=1e-4, gamma=1e-4, middle_gamma=1e-5, gamma_grid=(1e-4,))


def test_select_middle_gamma_matches_full_htrs_trace_reduction(monkeypatch, tmp_path):
    # SGD trace 100; full HTR at 1e-3 lowers it to 80 (target reduction 20)
    trace = {("all", 0.0): 100.0, ("all", 1e-3): 80.0, ("middle", 1e-5): 99.0, ("middle", 1e-4): 90.0,
             ("middle", 1e-3): 78.0, ("middle", 1e-2): None}

    def fake(cfg, root, data_root, progress):
        key = ("all" if cfg.htr_params == "all" else cfg.htr_params, cfg.htr_gamma)
        t = trace[key]
        return None if t is None else SimpleNamespace(config=cfg, t=t)

    monkeypatch.setattr(rs, "_train_or_diverge", fake)
    monkeypatch.setattr(rs, "run_summary", lambda run: {"trace": run.t, "val_acc": 0.5})
    study = RegStudy(base=TINY, seeds=(1, 2), l2=1e-4, gamma=1e-4, middle_gamma=1e-5, gamma_grid=(1e-3,),
                     middle_gamma_grid=(1e-5, 1e-4, 1e-3, 1e-2))
    table, g = rs.select_middle_gamma(study, "middle", 1e-3, tmp_path)
    assert g == 1e-3  # reduction 22 is closest to 20 (1e-4: 10)
    assert table.set_index("gamma").loc[1e-2, "status"] == "diverged"
    trace[("all", 1e-3)] = 101.0  # full HTR did not lower the trace: the largest reduction
    assert rs.select_middle_gamma(study, "middle", 1e-3, tmp_path)[1] == 1e-3
    for k in list(trace):
        if k[0] == "middle" and trace[k] is not None:
            trace[k] = 100.5  # nothing acts: the largest γ that trained
    assert rs.select_middle_gamma(study, "middle", 1e-3, tmp_path)[1] == 1e-3


@pytest.mark.slow
def test_select_gamma_without_grid_uses_the_published_value(tmp_path):
    study = RegStudy(base=TINY, seeds=(0,), l2=1e-4, gamma=2e-5, middle_gamma=1e-6)
    table, gamma = rs.select_gamma(study, "all", tmp_path)
    assert gamma == 2e-5 and table["status"].tolist() == ["published"]


# ---------------------------------------------------------------------------- real tiny runs

@pytest.fixture(scope="module")
def htr_run(tmp_path_factory):
    return train_run(TINY.replace(htr_gamma=1e-3), root=tmp_path_factory.mktemp("runs"), progress=False)


@pytest.mark.slow
def test_run_summary_reads_the_run(htr_run):
    s = rs.run_summary(htr_run)
    m = htr_run.metrics
    rec = htr_run.curvature(2).kinds["hessian"].full
    assert s["test_acc"] == m["test_acc"].iloc[-1] and s["trace"] == rec.trace.mean
    assert s["lambda_max"] == rec.top[0] and s["penalty_steps"] == m["penalty_steps"].sum() > 0
    assert s["penalty_step_seconds"] > 0 and s["train_seconds"] == pytest.approx(m["epoch_seconds"].sum())
    # epoch 2 has only penalty steps (htr_freq = 1): the plain-step time comes from epoch 1 alone
    assert (m["steps"] == m["penalty_steps"]).iloc[1] and s["step_seconds"] == pytest.approx(m["step_seconds"].iloc[0])


@pytest.mark.slow
def test_train_accuracy_matches_an_independent_evaluation(htr_run):
    loss, acc = rs.train_accuracy(htr_run)
    trainer = Trainer(htr_run.config)  # same data split, fresh model: load the trained weights
    trainer.model.load_state_dict(htr_run.load_model().state_dict())
    ref_loss, ref_acc = trainer.evaluate(trainer.data.train)
    assert acc == pytest.approx(ref_acc) and loss == pytest.approx(ref_loss, rel=1e-6)
    assert len(trainer.data.train) == 120


@pytest.mark.slow
def test_penalty_step_costs_rows():
    costs = rs.penalty_step_costs(TINY, ("all", "middle"), rounds=2)
    assert costs["step"].tolist() == ["plain", "all", "middle"]
    assert costs.loc[0, "x_plain"] == pytest.approx(1.0) and (costs["median_s"] > 0).all()
    model = Trainer(TINY).model
    named = dict(model.named_parameters())
    n_middle = sum(named[n].numel() for n in penalty_parameter_names(model, "middle"))
    assert costs.loc[2, "penalised parameters"] == n_middle < costs.loc[1, "penalised parameters"]


def test_arm_table_and_comparisons():
    res = pd.DataFrame({"arm": ["sgd"] * 3 + ["htr"] * 3, "seed": [0, 1, 2] * 2, "status": ["done"] * 6,
                        "gamma": [0] * 3 + [1e-3] * 3, "weight_decay": [0.0] * 6,
                        "test_acc": [0.90, 0.91, 0.92, 0.93, 0.94, 0.95]})
    t = rs.arm_table(res, columns=("test_acc",))
    assert t.loc["SGD", "test_acc"] == "0.9100 ± 0.0100" and t.loc["SGD + HTR", "seeds"] == 3
    c = rs.compare_arms(res, [("htr", "sgd")])
    assert c.loc[0, "diff"] == pytest.approx(0.03) and c.loc[0, "welch_lo"] > 0
    # per-seed differences are all 0.03: the paired interval collapses onto it, Welch's does not
    assert c.loc[0, "lo"] == pytest.approx(0.03) == c.loc[0, "hi"] and c.loc[0, "n"] == 3
    assert c.loc[0, "welch_hi"] - c.loc[0, "welch_lo"] > 0.01


@pytest.mark.slow
def test_arms_at_one_seed_share_initialisation_and_data_order(tmp_path):
    """Paired comparisons rest on this: at one seed, every arm starts from the same weights and sees the
    same batches, so SGD and HTR are identical until the penalty starts (epoch 1 here) and then differ."""
    study = RegStudy(base=TINY.replace(htr_start_epoch=1), seeds=(5,), l2=1e-4, gamma=1e-2, middle_gamma=1e-2)
    arms = {k: c.replace(seed=5) for k, c in study.arms().items()}
    inits = [Trainer(c).model.state_dict() for c in arms.values()]
    assert all(all(torch.equal(a[k], b[k]) for k in a) for a, b in zip(inits, inits[1:]))
    sgd, htr = (train_run(arms[k], root=tmp_path, progress=False).metrics for k in ("sgd", "htr"))
    cols = ["train_loss", "train_acc", "test_acc", "val_acc"]
    assert sgd.loc[sgd["epoch"] == 1, cols].to_numpy().tolist() == htr.loc[htr["epoch"] == 1, cols].to_numpy().tolist()
    assert sgd.loc[sgd["epoch"] == 2, "train_loss"].item() != htr.loc[htr["epoch"] == 2, "train_loss"].item()


# ---------------------------------------------------------------------------- issue 31: doses and amended verdicts

def _arms(values: dict[str, list[float]], trace: dict[str, list[float]], penalty: int = 3, steps: int = 30):
    rows = []
    for arm, accs in values.items():
        for seed, (acc, tr) in enumerate(zip(accs, trace[arm]), start=1):
            rows.append({"arm": arm, "seed": seed, "status": "done", "gamma": 0.0 if arm in ("sgd", "sgd_l2") else 1e-3,
                         "weight_decay": 1e-4 if "l2" in arm else 0.0, "test_acc": acc, "trace": tr,
                         "penalty_steps": 0 if arm in ("sgd", "sgd_l2") else penalty, "steps": steps})
    return pd.DataFrame(rows)


def test_arm_dose_is_the_mean_per_seed_relative_reduction():
    res = _arms({"sgd": [0.9, 0.9, 0.9], "htr": [0.9, 0.9, 0.9]}, {"sgd": [100.0, 200.0, 400.0], "htr": [90.0, 150.0, 360.0]})
    d = rs.arm_dose(res, "htr")
    r = [0.10, 0.25, 0.10]  # (sgd − htr) / sgd per seed, by hand
    assert d["mean_pct"] == pytest.approx(100 * sum(r) / 3) and d["lo_pct"] < d["mean_pct"] < d["hi_pct"]
    assert d["penalty_steps"] == 3 and d["steps"] == 30 and "3 of 30 steps per run (10.0 %)" in d["text"]


def _comparisons_for(res, pairs):
    return pd.concat([rs.compare_arms(res, pairs).assign(in_rule=True),
                      rs.compare_arms(res, pairs, column="trace").assign(in_rule=False)], ignore_index=True)


def test_c6b_verdict_decides_by_the_amended_rule_and_shows_the_earlier_one():
    study = RegStudy(base=TINY, seeds=(1, 2, 3, 4), l2=1e-4, gamma=1e-3, middle_gamma=1e-4)
    trace = {a: [100.0, 110.0, 120.0, 130.0] for a in ("sgd", "sgd_l2")} | {a: [95.0, 104.0, 114.0, 123.0] for a in ("htr", "l2_htr")}
    base = [0.80, 0.81, 0.82, 0.83]
    for gain, amended, earlier in ((0.0003, "not reproduced", "reproduced"),  # +0.03 pt: a gain, under half the paper's
                                   (0.0010, "reproduced", "reproduced")):
        noise = [0.0, 0.0001, -0.0001, 0.0]
        acc = {"sgd": base, "sgd_l2": base, "htr": [b + gain + e for b, e in zip(base, noise)],
               "l2_htr": [b + gain - e for b, e in zip(base, noise)]}
        res = _arms(acc, trace)
        comp = _comparisons_for(res, [("htr", "sgd"), ("l2_htr", "sgd_l2")])
        out = rs.c6b_verdict({"s": comp}, {"s": res}, {"s": 1e-3}, {"s": study})
        assert out.verdict == amended and out.details["earlier_rule"]["s"] == earlier
        assert "any gain: shown" in out.measured and "below SGD's, penalty on 3 of 30 steps" in out.measured
        assert "acting-dose arm: not in this profile" in out.measured and "both shown" in out.measured
        assert ("the authors' schedule (SGD 30 epochs against SGD + HTR 40, amendment 2): not in this profile, "
                "moved to the paper profile (budget)") in out.measured
        assert "the paper's own LeNet + FashionMNIST setting (shown, never deciding): not in this profile" in out.measured


def test_c7_result_gate_needs_a_real_trace_reduction():
    study = RegStudy(base=TINY, seeds=(1, 2, 3, 4), l2=1e-4, gamma=1e-3, middle_gamma=1e-4, middle_rules=("middle",),
                     cost_rules=("middle",))
    costs = pd.DataFrame({"step": ["plain", "all", "middle"], "median_s": [0.1, 1.0, 0.2],
                          "share of parameters": [0.0, 1.0, 0.9], "share of penalty compute": [0.0, 1.0, 0.1],
                          "layers": ["conv1, conv2, fc1, fc2, fc3"] * 3, "penalised layers": ["", "conv1, conv2, fc1, fc2, fc3", "fc1, fc2"]})
    acc = {"sgd": [0.80, 0.81, 0.82, 0.83], "htr": [0.805, 0.8149, 0.8251, 0.835], "htr_middle": [0.805, 0.815, 0.825, 0.835]}
    for mid_trace, acts in (([99.0, 108.9, 118.8, 128.7], "no"), ([80.0, 88.0, 96.0, 104.0], "yes")):  # 1 % / 20 %
        res = _arms(acc, {"sgd": [100.0, 110.0, 120.0, 130.0], "htr": [80.0, 88.0, 96.5, 104.0], "htr_middle": mid_trace})
        comp = pd.concat([rs.compare_arms(res, [("htr_middle", "htr")]).assign(in_rule=True),
                          rs.compare_arms(res, [("htr", "sgd"), ("htr_middle", "sgd")]).assign(in_rule=False),
                          rs.compare_arms(res, [("htr_middle", "sgd"), ("htr", "sgd")], column="trace").assign(in_rule=True)],
                         ignore_index=True)
        out = rs.c7_result({"s": comp}, {"s": res}, {"s": costs}, {"s": {"all": 1e-3, "middle": 1e-2}}, {"s": study}, 3)
        r = out.details["per_study"]["s"]["middle"]
        assert r["acts"] == acts and r["earlier rule"] == "reproduced"  # the earlier gate: trace interval below 0
        assert out.verdict == ("reproduced" if acts == "yes" else "not tested")  # amendment 5: a gate, not the rule
        assert acts == "yes" or "not tested (dose)" in out.measured
        assert "skips conv1, conv2" in out.measured and "equivalent within ±0.1 pt" in out.measured


def test_c6a_verdict_follows_the_budget_rule():
    rho = lambda r, lo, hi: {"rho": r, "lo": lo, "hi": hi}  # noqa: E731
    corr = {f"{k}_{c}": rho(-0.5, -0.8, -0.2) if c == "test_acc" else rho(0.5, 0.2, 0.8)
            for k in ("partial", "plain") for c in ("test_acc", "acc_gap", "loss_gap")}
    table = pd.DataFrame({"run": ["base", "base", "lr_low", "lr_low"], "seed": [1, 2, 1, 2],
                          "train_loss": [0.3, 0.31, 0.5, 0.52], "wall_seconds": [60.0, 70.0, 80.0, 90.0]})
    designs = pd.DataFrame([{"design": "loss threshold", "settings": 35, "seeds": 1, "P(R | ρ = −0.5)": 0.57}])
    slow = rs.c6a_budget(designs, table)  # t15 = 65 s: 35 × 1.08 min = 38 min > 20
    assert slow["t15_minutes"] == pytest.approx(65 / 60) and not slow["testable"]
    out = rs.c6a_verdict(table, corr, {}, slow, None)
    assert out.verdict == "not tested" and "not testable at this budget" in out.measured
    assert "not tested at this budget —" in out.measured
    assert out.details["earlier_rule"] == "reproduced"  # the fixed-epoch sweep's reading, shown, never deciding
    fast = rs.c6a_budget(designs, table.assign(wall_seconds=20.0))
    assert fast["testable"]
    assert "not in the profile yet" in rs.c6a_verdict(table, corr, {}, fast, None).measured
    assert rs.c6a_verdict(table, corr, {}, fast, {"table": table, "corr": corr, "diverged": {}}).verdict == "reproduced"
    weak = rs.c6a_budget(designs.assign(**{"P(R | ρ = −0.5)": 0.3}), table.assign(wall_seconds=20.0))
    assert not weak["testable"]


def test_c6a_without_a_sweep_is_not_tested():
    out = rs.c6a_not_in_profile()
    assert out.verdict == "not tested" and "moved to the paper profile (budget)" in out.measured


def test_dose_arm_power_labels_an_underpowered_arm():
    """Amendment 5: at a decorrelated pair's sd (0.097 pts) and 6 seeds the arm cannot see +0.1 pt; at the near-inert
    pair's 0.027 pts it can."""
    weak = rs.dose_arm_power({"sd": 0.00097}, 6, reps=3000)
    assert weak["text"].startswith("underpowered for +0.1 pt") and weak["power"] < 0.3 and weak["mde"] > 0.0015
    strong = rs.dose_arm_power({"sd": 0.00027}, 6, reps=3000)
    assert not strong["text"].startswith("underpowered") and strong["mde"] <= 0.001
    assert "not computable" in rs.dose_arm_power({"sd": float("nan")}, 6)["text"]


def test_penalised_layers_of_lenet():
    model = Trainer(TINY).model
    assert rs.penalised_layers(model, "all") == ["conv1", "conv2", "fc1", "fc2", "fc3"]
    assert rs.penalised_layers(model, "middle") == ["fc1", "fc2"]
    assert rs.penalised_layers(model, "middle_authors") == ["conv2", "fc1", "fc2"]  # conv2.bias is in the index rule
    assert {n.rsplit(".", 1)[0] for n in penalty_parameter_names(model, "middle_authors")} == {"conv2", "fc1", "fc2"}


def test_c6a_design_says_why_it_cannot_decide_without_a_fitted_model():
    table = pd.DataFrame({"run": ["a", "a", "b", "b", "c", "c"], "seed": [1, 2] * 3, "train_loss": [0.3, 0.31, 0.5, 0.52, 0.7, 0.71],
                          "trace": [100.0, 110.0, -0.5, 50.0, 20.0, 25.0], "test_acc": [0.9, 0.89, 0.85, 0.86, 0.8, 0.81],
                          "acc_gap": [0.02, 0.03, 0.01, 0.01, 0.0, 0.01], "wall_seconds": [10.0] * 6})
    designs, design = rs.c6a_design(table, reps=10, boot=10)
    assert designs.empty and not design["testable"] and "['b']" in design["text"] and "non-positive" in design["text"]
