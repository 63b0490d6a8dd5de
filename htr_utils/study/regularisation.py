"""Notebooks 06-08 (C6, C7): trace vs generalisation, Hessian trace regularisation, middle-layer HTR.

* :func:`run_summary` turns a finished run into one row: final accuracies and losses, the
  Hessian trace (Hutchinson, with standard error) and λ_max after the last epoch, and its costs
  (seconds per plain step, per penalty step, training and wall time).
* C6, first half: :func:`train_accuracy` (the final model evaluated on its training set, so
  that the generalisation gap compares like with like) and :func:`sweep_table`.
* C6 second half and C7: :func:`select_gamma` (γ chosen on the validation split at the first
  seed, never on the test set), :func:`train_arms` (every arm × seed at the chosen γ),
  :func:`arm_table`, :func:`compare_arms` (difference of means with Welch and bootstrap
  intervals), and :func:`penalty_step_costs` (plain / full / middle penalty steps timed in turn
  in one process, on the same batches).

Training goes through :func:`htr_utils.study.runs.train_run`, so every run is cached and resumable;
``python -m htr_utils.study.regularisation --profile cpu`` trains all of them ahead of the notebooks.
"""
from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats

from .statistics import bootstrap_difference, welch_difference
from .data import make_loader
from .profiles import RegStudy, get_profile
from .runs import Run, train_run
from .verdicts import Verdict, VerdictResult, combine
from .training import (Trainer, TrainConfig, TrainingDiverged, evaluate, penalty_parameter_names, prepare_data,
                       sgd_step)

ARM_LABELS = {"sgd": "SGD", "sgd_l2": "SGD + L2", "htr": "SGD + HTR", "l2_htr": "SGD + L2 + HTR",
              "htr_middle": "SGD + middle HTR (layer rule)",
              "htr_middle_authors": "SGD + middle HTR (authors' index rule)"}


# ============================================================================ one run


def run_summary(run: Run) -> dict:
    """Final metrics, Hessian trace / λ_max after the last epoch (if recorded) and costs of ``run``."""
    cfg, m = run.config, run.metrics
    last = m.iloc[-1]
    row: dict[str, Any] = {"test_acc": last["test_acc"], "test_loss": last["test_loss"], "val_acc": last["val_acc"],
                           "val_loss": last["val_loss"], "train_acc_running": last["train_acc"],
                           "train_loss_running": last["train_loss"]}
    if cfg.epochs in run.curvature_epochs():
        full = run.curvature(cfg.epochs).kinds["hessian"].full
        row.update(trace=full.trace.mean, trace_stderr=full.trace.stderr, lambda_max=full.top[0])
    else:
        row.update(trace=math.nan, trace_stderr=math.nan, lambda_max=math.nan)
    pen = m[m["penalty_steps"] > 0]
    plain = m[(m["steps"] - m["penalty_steps"]) > 0]  # epochs with at least one plain step
    row["step_seconds"] = (float(np.average(plain["step_seconds"], weights=plain["steps"] - plain["penalty_steps"]))
                           if len(plain) else math.nan)
    row["penalty_steps"] = int(m["penalty_steps"].sum())
    row["penalty_step_seconds"] = (float(np.average(pen["penalty_step_seconds"], weights=pen["penalty_steps"]))
                                   if len(pen) else math.nan)
    row["train_seconds"] = float(m["epoch_seconds"].sum())
    row["wall_seconds"] = float((m["epoch_seconds"] + m["eval_seconds"] + m["curvature_seconds"]).sum())
    return row


def train_accuracy(run: Run, data_root: str | Path = "data") -> tuple[float, float]:
    """(loss, accuracy) of the final model on the run's own training set, eval mode."""
    return evaluate(run.load_model(), prepare_data(run.config, str(data_root)).train)


# ============================================================================ C6 first half: sweep


def describe_change(cfg: TrainConfig, base: TrainConfig) -> str:
    """'batch 64', 'lr 0.05', 'wd 0.0005' ... : how ``cfg`` differs from ``base`` ('base' if it does not)."""
    parts = [f"{short} {getattr(cfg, name):g}" for name, short in
             (("batch_size", "batch"), ("lr", "lr"), ("weight_decay", "wd"))
             if getattr(cfg, name) != getattr(base, name)]
    return ", ".join(parts) or "base"


def sweep_table(runs: Mapping[str, Run], base: TrainConfig, data_root: str | Path = "data") -> pd.DataFrame:
    """One row per sweep run: its change from ``base``, final trace ± stderr, accuracies and both gaps.

    ``acc_gap`` = train accuracy − test accuracy, ``loss_gap`` = test loss − train loss, with the
    training-set numbers from :func:`train_accuracy` (final model, eval mode).
    """
    rows = []
    for label, run in runs.items():
        s = run_summary(run)
        train_loss, train_acc = train_accuracy(run, data_root)
        rows.append({"run": label, "change": describe_change(run.config, base), "batch_size": run.config.batch_size,
                     "lr": run.config.lr, "weight_decay": run.config.weight_decay, "trace": s["trace"],
                     "trace_stderr": s["trace_stderr"], "lambda_max": s["lambda_max"], "train_acc": train_acc,
                     "test_acc": s["test_acc"], "acc_gap": train_acc - s["test_acc"], "train_loss": train_loss,
                     "test_loss": s["test_loss"], "loss_gap": s["test_loss"] - train_loss})
    return pd.DataFrame(rows)


# ============================================================================ γ on validation


def _train_or_diverge(cfg: TrainConfig, root: Path, data_root: str | Path, progress: bool) -> Run | None:
    """The run of ``cfg``, or None if it diverged (its folder keeps diverged.json and the last good checkpoint)."""
    try:
        return train_run(cfg, root=root, data_root=data_root, progress=progress)
    except TrainingDiverged:
        return None


def select_gamma(study: RegStudy, rule: str, root: Path, data_root: str | Path = "data",
                 progress: bool = False) -> tuple[pd.DataFrame, float]:
    """Train the γ grid of ``rule`` ("all" or a middle rule) at the first seed; pick γ by validation accuracy.

    The grid is ``study.grid(rule)`` (:meth:`RegStudy.grid_configs`); without a grid (or without a
    validation split) the study's published γ is used. The choice is the γ with the highest final
    validation accuracy (ties: the smaller γ); diverged runs are shown and never chosen. The SGD
    run (γ = 0) is listed for reference.
    """
    if not study.grid(rule) or study.base.val_fraction <= 0:
        published = study.published_gamma(rule)
        return pd.DataFrame([{"gamma": published, "val_acc": math.nan, "val_loss": math.nan, "status": "published",
                              "chosen": True}]), published
    rows = []
    for gamma, cfg in study.grid_configs(rule).items():
        run = _train_or_diverge(cfg, root, data_root, progress)
        last = run.metrics.iloc[-1] if run is not None else None
        rows.append({"gamma": gamma, "val_acc": last["val_acc"] if run else math.nan,
                     "val_loss": last["val_loss"] if run else math.nan,
                     "status": ("SGD reference" if gamma == 0 else "trained") if run else "diverged"})
    table = pd.DataFrame(rows)
    candidates = table[(table["gamma"] > 0) & table["val_acc"].notna()]
    if candidates.empty:
        raise RuntimeError(f"every γ in {study.grid(rule)} diverged for rule {rule!r}; lower the grid in the profile")
    best = candidates.sort_values(["val_acc", "gamma"], ascending=[False, True]).iloc[0]["gamma"]
    table["chosen"] = table["gamma"] == best
    return table, float(best)


def train_arms(study: RegStudy, gammas: Mapping[str, float], root: Path, data_root: str | Path = "data",
               arms: Sequence[str] | None = None, progress: bool = False) -> pd.DataFrame:
    """Every arm × seed at the chosen γ: one :func:`run_summary` row each (NaNs and status 'diverged' if it diverged)."""
    rows = []
    for arm, cfg in study.arms(gammas).items():
        if arms is not None and arm not in arms:
            continue
        for seed in study.seeds:
            run = _train_or_diverge(cfg.replace(seed=seed), root, data_root, progress)
            summary = run_summary(run) if run is not None else {}
            rows.append({"arm": arm, "label": ARM_LABELS.get(arm, arm), "seed": seed, "gamma": cfg.htr_gamma,
                         "weight_decay": cfg.weight_decay, "htr_params": cfg.htr_params,
                         "status": "done" if run is not None else "diverged", **summary})
    return pd.DataFrame(rows)


def arm_table(results: pd.DataFrame, columns: Sequence[str] = ("test_acc", "val_acc", "trace", "lambda_max"),
              ) -> pd.DataFrame:
    """Per arm: 'mean ± std' over seeds of ``columns`` (sample std), and the number of finished seeds."""
    out = []
    for arm, g in results.groupby("arm", sort=False):
        row = {"arm": ARM_LABELS.get(arm, arm), "γ": g["gamma"].iloc[0], "L2": g["weight_decay"].iloc[0],
               "seeds": int((g["status"] == "done").sum())}
        for c in columns:
            v = g[c].dropna().to_numpy(dtype=float)
            row[c] = f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1 else (f"{v[0]:.4f}" if len(v) else "–")
        out.append(row)
    return pd.DataFrame(out).set_index("arm")


def compare_arms(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], column: str = "test_acc",
                 level: float = 0.95) -> pd.DataFrame:
    """For each (arm, reference): mean difference of ``column``, Welch interval and p, bootstrap interval.

    Also the paired t interval of the per-seed differences (``paired_lo``/``paired_hi``): arms with the
    same seed share initialisation and batch order, so this one is tighter; the verdict rules use Welch.
    """
    rows = []
    for arm, ref in pairs:
        a_s = results[results["arm"] == arm].set_index("seed")[column].astype(float)
        b_s = results[results["arm"] == ref].set_index("seed")[column].astype(float)
        w = welch_difference(a_s.to_numpy(), b_s.to_numpy(), level)
        lo, hi = bootstrap_difference(a_s.to_numpy(), b_s.to_numpy(), level)
        both = pd.concat([a_s, b_s], axis=1).dropna()  # same seed = same initialisation and batch order
        paired = (stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).confidence_interval(level)
                  if len(both) > 1 else SimpleNamespace(low=math.nan, high=math.nan))
        rows.append({"comparison": f"{ARM_LABELS.get(arm, arm)} − {ARM_LABELS.get(ref, ref)}", "arm": arm,
                     "reference": ref, "quantity": column, "diff": w["diff"], "welch_lo": w["lo"],
                     "welch_hi": w["hi"], "welch_p": w["p"], "boot_lo": lo, "boot_hi": hi,
                     "paired_lo": float(paired.low), "paired_hi": float(paired.high),
                     "n": f"{w['n_a']} vs {w['n_b']}"})
    return pd.DataFrame(rows)


# ============================================================================ C7: cost of a penalty step


def penalty_step_costs(config: TrainConfig, rules: Sequence[str] = ("all", "middle", "middle_authors"),
                       rounds: int = 10, data_root: str | Path = "data", gamma: float = 1e-5) -> pd.DataFrame:
    """Seconds per training step: plain, and with the trace penalty over each rule's parameters.

    The steps run in turn (plain, rule 1, rule 2, ..., the order rotated every round) for
    ``rounds`` rounds, in one process on the same batches of ``config``'s training set (batch size, probes as in ``config``), after one
    untimed warm-up round; medians and quartiles are reported, with the ratio to the plain step.
    """
    trainer = Trainer(config, data_root=str(data_root))
    model, opt = trainer.model, trainer.optimizer
    named = dict(model.named_parameters())
    params = {"plain": None} | {rule: [named[n] for n in penalty_parameter_names(model, rule)] for rule in rules}
    batches = itertools.cycle(make_loader(trainer.data.train, config.batch_size, shuffle=True, seed=0, drop_last=True))
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {k: [] for k in params}
    kinds = list(params)
    model.train()
    for r in range(rounds + 1):
        x, y = next(batches)
        for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:  # rotate: no kind always runs first
            t0 = time.perf_counter()
            sgd_step(model, opt, trainer.loss_fn, x, y, params[kind], gamma, config.htr_probes, gen)
            if r > 0:
                times[kind].append(time.perf_counter() - t0)
    plain = float(np.median(times["plain"]))
    return pd.DataFrame([{"step": k, "penalised tensors": len(params[k] or []),
                          "penalised parameters": sum(p.numel() for p in params[k] or []),
                          "median_s": float(np.median(v)), "q25_s": float(np.quantile(v, 0.25)),
                          "q75_s": float(np.quantile(v, 0.75)), "x_plain": float(np.median(v)) / plain}
                         for k, v in times.items()])


# ============================================================================ verdict rules


def sweep_verdict(rho_acc: Mapping[str, float], rho_gap: Mapping[str, float]) -> Verdict:
    """C6, trace vs generalisation, from Spearman ρ with 95 % bootstrap intervals.

    Reproduced if ρ(trace, test acc.) < 0 and ρ(trace, acc. gap) > 0 with both intervals excluding
    0; not reproduced if both point estimates have the wrong sign (≥ 0 and ≤ 0 respectively);
    inconclusive otherwise.
    """
    if rho_acc["hi"] < 0 and rho_gap["lo"] > 0:
        return Verdict.REPRODUCED
    if rho_acc["rho"] >= 0 and rho_gap["rho"] <= 0:
        return Verdict.NOT_REPRODUCED
    return Verdict.INCONCLUSIVE


def improvement_verdict(comparisons: pd.DataFrame) -> Verdict:
    """C6, HTR improves test accuracy: every (arm − reference) difference's 95 % Welch interval above 0.

    Reproduced if every comparison's interval lies above 0; not reproduced if every mean
    difference is ≤ 0; inconclusive otherwise (positive but within noise, or mixed).
    """
    if (comparisons["welch_lo"] > 0).all():
        return Verdict.REPRODUCED
    if (comparisons["diff"] <= 0).all():
        return Verdict.NOT_REPRODUCED
    return Verdict.INCONCLUSIVE


def middle_accuracy_verdict(comparisons: pd.DataFrame, margin: float) -> Verdict:
    """C7 accuracy: middle − full HTR, non-inferiority with ``margin`` (accuracy, e.g. 0.002 = 0.2 points).

    Reproduced if some middle rule's 95 % Welch interval has its lower end ≥ −margin (comparable or
    better); not reproduced if every rule's interval lies below 0 (significantly worse);
    inconclusive otherwise.
    """
    if (comparisons["welch_lo"] >= -margin).any():
        return Verdict.REPRODUCED
    if (comparisons["welch_hi"] < 0).all():
        return Verdict.NOT_REPRODUCED
    return Verdict.INCONCLUSIVE


def cost_verdict(costs: pd.DataFrame, rules: Sequence[str] = ("middle", "middle_authors"),
                 saving: float = 0.1) -> Verdict:
    """C7 cost: a middle rule's penalty step at least ``saving`` (10 %) cheaper than the full one.

    From :func:`penalty_step_costs` medians: reproduced if some middle rule's median ≤ (1 − saving)
    × the full rule's; not reproduced if every middle rule's median ≥ the full rule's; inconclusive
    otherwise.
    """
    t = costs.set_index("step")["median_s"]
    ratios = [t[r] / t["all"] for r in rules if r in t]
    if any(r <= 1 - saving for r in ratios):
        return Verdict.REPRODUCED
    if all(r >= 1 for r in ratios):
        return Verdict.NOT_REPRODUCED
    return Verdict.INCONCLUSIVE


def c7_verdict(comparisons: pd.DataFrame, costs: pd.DataFrame, rules: Sequence[str], margin: float,
               saving: float = 0.1) -> dict:
    """C7 per middle rule (accuracy and cost of the *same* rule), and overall.

    Each rule: accuracy by :func:`middle_accuracy_verdict` on its own (middle − full) row, cost by
    :func:`cost_verdict` on its own timing; the rule passes C7 if both parts are reproduced, fails
    if either is not reproduced, else inconclusive. Overall: reproduced if some rule passes, not
    reproduced if every rule fails, else inconclusive.
    """
    per_rule = {}
    for rule in rules:
        row = comparisons[comparisons["arm"] == f"htr_{rule}"]
        acc, cost = middle_accuracy_verdict(row, margin), cost_verdict(costs, rules=(rule,), saving=saving)
        per_rule[rule] = {"accuracy": acc, "cost": cost, "C7": combine((acc, cost), "all_of")}
    return {"per_rule": per_rule, "verdict": combine((v["C7"] for v in per_rule.values()), "any_of")}


def describe_studies(studies: Mapping[str, RegStudy]) -> str:
    """One line per regularisation study: model, data, split, schedule, HTR settings, L2 and seeds."""
    return "; ".join(f"{name}: {s.base.model} on {s.base.dataset}, {s.base.train_size or 'all'} training images after "
                     f"a {s.base.val_fraction:.0%} validation split, {s.base.epochs} epochs (LR ×{s.base.lr_gamma} at "
                     f"{', '.join(map(str, s.base.milestones))}), HTR every {s.base.htr_freq} steps after epoch "
                     f"{s.base.htr_start_epoch} with {s.base.htr_probes} probes, L2 {s.l2:g}, seeds {list(s.seeds)}"
                     for name, s in studies.items())


def describe_sweep(base: TrainConfig) -> str:
    """The sweep's common setting: model, data, split, epochs, seed and how the trace is measured."""
    return (f"{base.model} on {base.dataset}, {base.train_size or 'all'} training images "
            f"(validation {base.val_fraction:.0%} held out), {base.epochs} epochs, seed {base.seed}; trace: "
            f"{base.trace_probes} probes on {base.examples_per_class}/class")


def c6a_verdict(table: pd.DataFrame, rho: Mapping[str, Mapping[str, float]], diverged: Mapping[str, str]) -> VerdictResult:
    """C6, first half, by :func:`sweep_verdict` on the sweep's Spearman correlations (``rho`` by column)."""
    verdict = sweep_verdict(rho["test_acc"], rho["acc_gap"])
    f = lambda c: f"ρ = {rho[c]['rho']:.2f} [{rho[c]['lo']:.2f}, {rho[c]['hi']:.2f}]"  # noqa: E731
    measured = (f"{len(table)} LeNet runs (batch, lr, weight decay varied; {len(diverged)} diverged): "
                f"trace vs test acc. {f('test_acc')}; vs train−test acc. {f('acc_gap')}; vs test−train loss "
                f"{f('loss_gap')}; traces {table['trace'].min():.3g}–{table['trace'].max():.3g}, test acc. "
                f"{table['test_acc'].min():.4f}–{table['test_acc'].max():.4f}")
    return VerdictResult(verdict, measured, {"rho": dict(rho), "table": table.to_dict("records"),
                                             "diverged": dict(diverged)})


def c6b_verdict(comparisons: Mapping[str, pd.DataFrame], results: Mapping[str, pd.DataFrame],
                gammas: Mapping[str, float], studies: Mapping[str, RegStudy],
                arms: Sequence[str] = ("sgd", "sgd_l2", "htr", "l2_htr")) -> VerdictResult:
    """C6, second half: :func:`improvement_verdict` on each study's rule rows (``in_rule``), combined over studies."""
    per_study, texts = {}, []
    for name, comp in comparisons.items():
        rule_rows = comp[comp["in_rule"]]
        per_study[name] = improvement_verdict(rule_rows)
        res = results[name]
        acc = {a: res.loc[res["arm"] == a, "test_acc"].dropna() for a in arms}
        tr = comp[(comp["quantity"] == "trace") & (comp["arm"] == "htr")].iloc[0]
        texts.append(f"{name} (γ = {gammas[name]:g}, {len(studies[name].seeds)} seeds): test acc. "
                     + ", ".join(f"{a} {100 * v.mean():.2f} ± {100 * v.std(ddof=1):.2f} %" for a, v in acc.items())
                     + "; " + "; ".join(f"{r['comparison']} = {100 * r['diff']:+.2f} pts [{100 * r['welch_lo']:+.2f}, "
                                        f"{100 * r['welch_hi']:+.2f}]" for _, r in rule_rows.iterrows())
                     + f"; final trace HTR − SGD = {tr['diff']:+.3g} [{tr['welch_lo']:+.3g}, {tr['welch_hi']:+.3g}]"
                     + f" → {per_study[name]}")
    return VerdictResult(combine(per_study.values()), " | ".join(texts),
                         {"per_study": per_study, "gammas": dict(gammas),
                          "comparisons": {n: c.to_dict("records") for n, c in comparisons.items()},
                          "results": {n: r.to_dict("records") for n, r in results.items()}})


def c7_result(comparisons: Mapping[str, pd.DataFrame], results: Mapping[str, pd.DataFrame],
              costs: Mapping[str, pd.DataFrame], gammas: Mapping[str, Mapping[str, float]],
              studies: Mapping[str, RegStudy], margin: float, rounds: int) -> VerdictResult:
    """C7 per study by :func:`c7_verdict` (the same middle rule must pass accuracy and cost), combined over studies."""
    per_study, texts = {}, []
    for name, comp in comparisons.items():
        study = studies[name]
        v = c7_verdict(comp[comp["in_rule"]], costs[name], study.middle_rules, margin)
        per_study[name] = {**v["per_rule"], "C7": v["verdict"]}
        res, c = results[name], costs[name].set_index("step")
        acc = res.groupby("arm", sort=False)["test_acc"].agg(["mean", "std"])
        trace_vs_sgd = comp[(comp["quantity"] == "trace") & (comp["reference"] == "sgd")]
        parts = []
        for rule in study.middle_rules:
            r = comp[comp["in_rule"] & (comp["arm"] == f"htr_{rule}")].iloc[0]
            t = trace_vs_sgd[trace_vs_sgd["arm"] == f"htr_{rule}"].iloc[0]
            pr = v["per_rule"][rule]
            parts.append(f"{rule} (γ = {gammas[name][rule]:g}): middle − full {100 * r['diff']:+.2f} pts "
                         f"[{100 * r['welch_lo']:+.2f}, {100 * r['welch_hi']:+.2f}] → accuracy {pr['accuracy']}; "
                         f"penalty step {c.loc[rule, 'median_s'] / c.loc['all', 'median_s']:.2f}× full → cost "
                         f"{pr['cost']}; trace − SGD {t['diff']:+.3g} [{t['welch_lo']:+.3g}, {t['welch_hi']:+.3g}]")
        texts.append(f"{name}: test acc. " + ", ".join(f"{a} {100 * r['mean']:.2f} ± {100 * r['std']:.2f} %"
                                                       for a, r in acc.iterrows())
                     + f"; full penalty step {c.loc['all', 'median_s']:.3g} s, plain {c.loc['plain', 'median_s']:.3g} s"
                     + f" (median of {rounds}); " + "; ".join(parts))
    return VerdictResult(combine(v["C7"] for v in per_study.values()), " | ".join(texts),
                         {"per_study": per_study, "gammas": {n: dict(g) for n, g in gammas.items()},
                          "costs": {n: c.to_dict("records") for n, c in costs.items()},
                          "comparisons": {n: c.to_dict("records") for n, c in comparisons.items()}})


# ============================================================================ figures


# ============================================================================ pre-training


def train_all(profile: str | None = None, progress: bool = True) -> None:
    """Every run notebooks 06-08 need for ``profile``: the sweep, the γ grids and the arms × seeds."""
    from .outputs import data_root
    P = get_profile(profile)
    root, droot = P.runs_dir(), data_root()
    for label, cfg in P.sweep_runs.items():
        print(f"sweep {label}", flush=True)
        _train_or_diverge(cfg, root, droot, progress)
    for name, study in P.regularisation.items():
        gammas = {}
        for rule in ("all", *study.middle_rules):
            table, gammas[rule] = select_gamma(study, rule, root, droot, progress)
            print(f"{name} rule {rule}: γ = {gammas[rule]:g}\n{table.to_string(index=False)}", flush=True)
        train_arms(study, gammas, root, droot, progress=progress)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="train the runs of notebooks 06-08 ahead of time")
    ap.add_argument("--profile", default=None)
    train_all(ap.parse_args().profile)
