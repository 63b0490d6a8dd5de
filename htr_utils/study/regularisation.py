"""Notebooks 06-08 (C6, C7): trace vs generalisation, Hessian trace regularisation, middle-layer HTR.

* :func:`run_summary` turns a finished run into one row: final accuracies and losses, the
  Hessian trace (Hutchinson, with standard error) and λ_max after the last epoch, and its costs.
* C6a: :func:`train_accuracy` (the final model on its own training set), :func:`sweep_table`
  (settings × seeds) and :func:`sweep_correlations` (partial Spearman ρ given training loss).
* C6b and C7: :func:`select_gamma` (full HTR's γ on the validation split at the selection seed),
  :func:`select_middle_gamma` (a middle arm's γ matched on trace reduction), :func:`train_arms`
  (every arm × evaluation seed), :func:`arm_table`, :func:`compare_arms` (paired differences by
  seed, with Welch and bootstrap beside), :func:`penalty_step_costs`.
* Verdicts: ``c6a_verdict``, ``c6b_verdict``, ``c7_result`` apply the rules of PROTOCOL.md as
  amended by issue 31 (:mod:`htr_utils.study.regularisation_rules`: the loss-threshold C6a design with
  its budget rule, C6b's "paper's +0.1 point" with "any gain" apart and the dose beside every HTR
  verdict, C7's amended gate, equivalence and cost line) and report the earlier rules beside them.
  The new arms (acting dose, authors' schedule) are read (and trained where the run grid has not) by
  :mod:`htr_utils.study.regularisation_arms`.

Training goes through :func:`htr_utils.study.runs.train_run`, so every run is cached and resumable;
:func:`study_runs` lists a study's runs that wait on no choice of γ; :mod:`htr_utils.study.grid`
trains all of them ahead of the notebooks, here or on a Dask cluster.
"""
from __future__ import annotations

import itertools
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .statistics import (bootstrap_difference, min_detectable_effect, paired_difference, partial_spearman_bootstrap,
                         spearman_bootstrap, welch_difference)
from .data import make_loader
from .hashing import config_hash
from .profiles import RegStudy
from .runs import Run, train_run
from ..layers import layer_groups
from .calibration_regularisation import c6a_design_table, c6b_amended_rates, c6b_min_detectable, fit_sweep_model
from .regularisation_rules import (PAPER_GAIN, c6a_amended, c6a_design_check, c6a_rule, c6b_amended, c6b_rule, c7_acts,
                                   dose_arm_power_text,
                                   c7_amended, c7_cost_line, double_backward_path, dose_text, established_gain,
                                   relative_trace_reduction)
from .verdicts import Verdict, VerdictResult, combine
from .training import (_progress_disabled, Trainer, TrainConfig, TrainingDiverged, evaluate, penalty_parameter_names, prepare_data,
                       sgd_step)

ARM_LABELS = {"sgd": "SGD", "sgd_l2": "SGD + L2", "htr": "SGD + HTR", "l2_htr": "SGD + L2 + HTR",
              "htr_middle": "SGD + middle HTR (layer rule)",
              "htr_middle_authors": "SGD + middle HTR (authors' index rule)", "htr_dose": "SGD + HTR (acting dose)"}


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
    row["steps"] = int(m["steps"].sum())
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


def sweep_table(runs: Mapping[tuple[str, int], Run], base: TrainConfig, data_root: str | Path = "data") -> pd.DataFrame:
    """One row per sweep run (setting label, seed): its change from ``base``, final trace ± stderr, accuracies, gaps.

    ``train_loss`` / ``train_acc`` are the final model's on its own training set (eval mode,
    :func:`train_accuracy`); ``acc_gap`` = train accuracy − test accuracy, ``loss_gap`` = test
    loss − train loss.
    """
    rows = []
    for (label, seed), run in runs.items():
        s = run_summary(run)
        train_loss, train_acc = train_accuracy(run, data_root)
        rows.append({"run": label, "seed": seed, "change": describe_change(run.config, base),
                     "batch_size": run.config.batch_size, "lr": run.config.lr,
                     "weight_decay": run.config.weight_decay, "trace": s["trace"], "trace_stderr": s["trace_stderr"],
                     "lambda_max": s["lambda_max"], "train_acc": train_acc, "test_acc": s["test_acc"],
                     "acc_gap": train_acc - s["test_acc"], "train_loss": train_loss, "test_loss": s["test_loss"],
                     "loss_gap": s["test_loss"] - train_loss, "wall_seconds": s["wall_seconds"]})
    return pd.DataFrame(rows)


def threshold_sweep_configs(profile: Any) -> dict[str, TrainConfig] | None:
    """C6a's loss-threshold design (PROTOCOL.md, amendment 3) in ``profile``: label -> config (each at its own
    seed, stopping at the training-loss threshold), from the profile's ``threshold_sweep_runs`` field; None
    while no profile has that field or it is empty (the design is then not in the profile)."""
    cfgs = getattr(profile, "threshold_sweep_runs", None)
    return dict(cfgs) if cfgs else None


def train_sweep(configs: Mapping[str, TrainConfig], seeds: Sequence[int] | None, root: Path,
                data_root: str | Path = "data", progress: bool = False) -> tuple[dict[tuple[str, int], Run], dict[str, str]]:
    """Every sweep setting at each of ``seeds`` (None: each config's own seed), trained or read from the run cache:
    (label, seed) -> run, and label + seed -> the reason of each diverged run (left out)."""
    runs, diverged = {}, {}
    for label, cfg in configs.items():
        for seed in (seeds if seeds is not None else (cfg.seed,)):
            try:
                runs[(label, seed)] = train_run(cfg.replace(seed=seed), root=root, data_root=data_root, progress=progress)
            except TrainingDiverged as err:
                diverged[f"{label} seed {seed}"] = str(err)
    return runs, diverged


def sweep_correlations(table: pd.DataFrame, num: int = 2000) -> dict[str, dict]:
    """C6a's numbers: partial Spearman ρ of the trace given the training loss (runs as points, settings
    resampled as clusters), and, as before the protocol, plain Spearman ρ across the settings' seed means.

    Keys ``partial_<col>`` and ``plain_<col>`` for col in test_acc, acc_gap, loss_gap.
    """
    out = {}
    for col in ("test_acc", "acc_gap", "loss_gap"):
        out[f"partial_{col}"] = partial_spearman_bootstrap(table["trace"], table[col], table["train_loss"],
                                                           table["run"], num=num)
        means = table.groupby("run", sort=False)[["trace", col]].mean()
        out[f"plain_{col}"] = spearman_bootstrap(means["trace"], means[col], num=num)
    return out


# ============================================================================ γ on validation


def _train_or_diverge(cfg: TrainConfig, root: Path, data_root: str | Path, progress: bool) -> Run | None:
    """The run of ``cfg``, or None if it diverged (its folder keeps diverged.json and the last good checkpoint)."""
    try:
        return train_run(cfg, root=root, data_root=data_root, progress=progress)
    except TrainingDiverged:
        return None


def select_gamma(study: RegStudy, rule: str, root: Path, data_root: str | Path = "data",
                 progress: bool = False) -> tuple[pd.DataFrame, float]:
    """Train the γ grid of ``rule`` ("all" or a middle rule) at the selection seed; pick γ by validation accuracy.

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


def select_middle_gamma(study: RegStudy, rule: str, full_gamma: float, root: Path, data_root: str | Path = "data",
                        progress: bool = False) -> tuple[pd.DataFrame, float]:
    """γ of middle rule ``rule`` whose trace reduction at the selection seed matches full HTR's (PROTOCOL.md).

    reduction(γ) = final trace of SGD − final trace of the middle arm at γ, target = the same for
    full HTR at ``full_gamma``, all at the selection seed. Chosen: among grid γ that lowered the
    trace, the one whose reduction is closest to the target (ties: the smaller γ); if full HTR did
    not lower the trace, the γ with the largest reduction; if none lowered it, the largest γ that
    did not diverge (C7's gate then reports that the arm does not act). Without a grid: the
    published γ.
    """
    if not study.grid(rule):
        published = study.published_gamma(rule)
        return pd.DataFrame([{"gamma": published, "trace": math.nan, "reduction": math.nan, "target": math.nan,
                              "val_acc": math.nan, "status": "published", "chosen": True}]), published
    sgd = _train_or_diverge(study.grid_configs(rule)[0.0], root, data_root, progress)
    full_cfg = study.grid_configs("all").get(full_gamma) or study.grid_configs("all")[0.0].replace(htr_gamma=full_gamma)
    full = _train_or_diverge(full_cfg, root, data_root, progress)
    if sgd is None or full is None:
        raise RuntimeError("the SGD or full-HTR run at the selection seed diverged; no trace reduction to match")
    trace_sgd = run_summary(sgd)["trace"]
    target = trace_sgd - run_summary(full)["trace"]
    rows = []
    for gamma, cfg in study.grid_configs(rule).items():
        if gamma == 0:
            continue
        run = _train_or_diverge(cfg, root, data_root, progress)
        summary = run_summary(run) if run is not None else {}
        rows.append({"gamma": gamma, "trace": summary.get("trace", math.nan),
                     "reduction": trace_sgd - summary.get("trace", math.nan), "target": target,
                     "val_acc": summary.get("val_acc", math.nan), "status": "trained" if run else "diverged"})
    table = pd.DataFrame(rows)
    ok = table[table["status"] == "trained"]
    if ok.empty:
        raise RuntimeError(f"every γ in {study.grid(rule)} diverged for rule {rule!r}; lower the grid in the profile")
    acting = ok[ok["reduction"] > 0]
    if target > 0 and not acting.empty:
        best = acting.assign(miss=(acting["reduction"] - target).abs()).sort_values(["miss", "gamma"]).iloc[0]["gamma"]
    elif not acting.empty:
        best = acting.sort_values(["reduction", "gamma"], ascending=[False, True]).iloc[0]["gamma"]
    else:
        best = ok["gamma"].max()
    table["chosen"] = table["gamma"] == best
    return table, float(best)


def train_arms(study: RegStudy, gammas: Mapping[str, float], root: Path, data_root: str | Path = "data",
               arms: Sequence[str] | None = None, progress: bool = False) -> pd.DataFrame:
    """Every arm × seed at the chosen γ: one :func:`run_summary` row each (NaNs and status 'diverged' if it diverged).

    ``progress``: one bar over the runs (no epoch bars: a notebook cell that trains dozens of runs would send its
    kernel more bar updates than the output channel holds, and nbval then loses the cell's end)."""
    rows = []
    jobs = [(arm, cfg.replace(seed=seed)) for arm, cfg in study.arms(gammas).items()
            if arms is None or arm in arms for seed in study.seeds]
    for arm, cfg in tqdm(jobs, desc="arm runs", unit="run", disable=_progress_disabled(progress)):
        run = _train_or_diverge(cfg, root, data_root, False)
        summary = run_summary(run) if run is not None else {}
        rows.append({"arm": arm, "label": ARM_LABELS.get(arm, arm), "seed": cfg.seed, "gamma": cfg.htr_gamma,
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


def per_seed(results: pd.DataFrame, arm: str, column: str) -> dict[int, float]:
    """Seed -> ``column`` of ``arm`` (finished runs; NaN where missing)."""
    g = results[results["arm"] == arm]
    return {int(k): float(v) for k, v in zip(g["seed"], g[column].astype(float))}


def compare_arms(results: pd.DataFrame, pairs: Sequence[tuple[str, str]], column: str = "test_acc",
                 level: float = 0.95) -> pd.DataFrame:
    """For each (arm, reference): the paired difference of ``column`` by seed, and (secondary) Welch and bootstrap.

    Arms with the same seed share initialisation and batch order, so the primary rules use the
    paired t interval (``diff``, ``sd``, ``lo``, ``hi``, ``n``; :func:`paired_difference`) and report
    the design's minimum detectable effect ``mde`` at that spread (:func:`min_detectable_effect`).
    The Welch interval and p (``welch_*``) and the bootstrap interval (``boot_*``) ignore the pairing.
    """
    rows = []
    present = set(results["arm"])
    for arm, ref in pairs:
        if arm not in present or ref not in present:  # e.g. a side study that trains SGD and HTR only
            continue
        a_s, b_s = per_seed(results, arm, column), per_seed(results, ref, column)
        pair = paired_difference(a_s, b_s, level)
        w = welch_difference(list(a_s.values()), list(b_s.values()), level)
        lo, hi = bootstrap_difference(list(a_s.values()), list(b_s.values()), level)
        rows.append({"comparison": f"{ARM_LABELS.get(arm, arm)} − {ARM_LABELS.get(ref, ref)}", "arm": arm,
                     "reference": ref, "quantity": column, "diff": pair["diff"], "sd": pair["sd"],
                     "lo": pair["lo"], "hi": pair["hi"], "p": pair["p"], "n": pair["n"],
                     "mde": min_detectable_effect(pair["sd"], pair["n"], level),
                     "welch_diff": w["diff"], "welch_lo": w["lo"], "welch_hi": w["hi"], "welch_p": w["p"],
                     "boot_lo": lo, "boot_hi": hi})
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
    full = float(np.median(times["all"])) if "all" in times else math.nan
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    layers = list(layer_groups(model))
    pen = {k: penalised_layers(model, k) if k != "plain" else [] for k in params}
    return pd.DataFrame([{"step": k, "penalised tensors": len(params[k] or []),
                          "layers": ", ".join(layers), "penalised layers": ", ".join(pen[k]),
                          "double backward skips": (", ".join(double_backward_path(layers, pen[k])["skipped"]) or "none")
                                                   if pen[k] else "–",
                          "penalised parameters": sum(p.numel() for p in params[k] or []),
                          "share of parameters": sum(p.numel() for p in params[k] or []) / total,
                          "median_s": float(np.median(v)), "q25_s": float(np.quantile(v, 0.25)),
                          "q75_s": float(np.quantile(v, 0.75)), "x_plain": float(np.median(v)) / plain,
                          # the penalty's own cost (step − plain step) as a share of the full penalty's
                          "share of penalty compute": (float(np.median(v)) - plain) / (full - plain)}
                         for k, v in times.items()])


def penalised_layers(model: torch.nn.Module, rule: str) -> list[str]:
    """The Conv/Linear layers (names of :func:`htr_utils.layers.layer_groups`, forward order) holding a tensor that
    penalty ``rule`` penalises: a parameter ``conv2.bias`` counts for layer ``conv2``."""
    layers = list(layer_groups(model))
    owners = {name.rsplit(".", 1)[0] for name in penalty_parameter_names(model, rule)}
    unknown = sorted(owners - set(layers))
    if unknown:
        raise ValueError(f"penalised_layers: rule {rule!r} penalises tensors of {unknown}, which are not Conv/Linear "
                         f"layers ({layers}); the cost line can name Conv/Linear layers only")
    return [layer for layer in layers if layer in owners]


# ============================================================================ earlier rules (shown, not deciding)
# The rules before PROTOCOL.md, kept so the notebooks can show both verdicts (a rule changed
# after results were seen must show the earlier one). They ignore the pairing by seed.


def sweep_verdict(rho_acc: Mapping[str, float], rho_gap: Mapping[str, float]) -> Verdict:
    """Earlier C6a rule: Spearman ρ across settings, reproduced if ρ_acc < 0 and ρ_gap > 0 with both
    bootstrap intervals excluding 0; not reproduced if both point estimates have the wrong sign."""
    if rho_acc["hi"] < 0 and rho_gap["lo"] > 0:
        return Verdict.REPRODUCED
    if rho_acc["rho"] >= 0 and rho_gap["rho"] <= 0:
        return Verdict.NOT_REPRODUCED
    return Verdict.INCONCLUSIVE


def improvement_verdict(comparisons: pd.DataFrame) -> Verdict:
    """Earlier C6b rule: reproduced if every Welch interval lies above 0, not reproduced if every mean difference ≤ 0."""
    if (comparisons["welch_lo"] > 0).all():
        return Verdict.REPRODUCED
    if (comparisons["welch_diff"] <= 0).all():
        return Verdict.NOT_REPRODUCED
    return Verdict.INCONCLUSIVE


def earlier_c7_verdict(comparisons: pd.DataFrame, costs: pd.DataFrame, rules: Sequence[str],
                       margin: float = 0.003) -> Verdict:
    """Earlier C7 rule: per rule, accuracy (Welch lower end ≥ −0.3 points; not reproduced if the interval
    lies below 0) and cost (median step ≤ 0.9 × full) both reproduced; some rule suffices."""
    t = costs.set_index("step")["median_s"]
    per_rule = []
    for rule in rules:
        row = comparisons[comparisons["arm"] == f"htr_{rule}"].iloc[0]
        acc = (Verdict.REPRODUCED if row["welch_lo"] >= -margin else
               Verdict.NOT_REPRODUCED if row["welch_hi"] < 0 else Verdict.INCONCLUSIVE)
        ratio = t[rule] / t["all"]
        cost = (Verdict.REPRODUCED if ratio <= 0.9 else Verdict.NOT_REPRODUCED if ratio >= 1 else Verdict.INCONCLUSIVE)
        per_rule.append(combine((acc, cost), "all_of"))
    return combine(per_rule, "any_of")


# ============================================================================ verdicts (PROTOCOL.md)


def describe_studies(studies: Mapping[str, RegStudy]) -> str:
    """One line per regularisation study: model, data, split, schedule, HTR settings, L2 and seeds."""
    return "; ".join(f"{name}{'' if s.decides else ' (shown, not deciding)'}: {s.base.model} on {s.base.dataset}, "
                     f"{s.base.train_size or 'all'} training images after a {s.base.val_fraction:.0%} validation "
                     f"split, {s.base.epochs} epochs (LR ×{s.base.lr_gamma} at "
                     f"{', '.join(map(str, s.base.milestones))}), HTR every {s.base.htr_freq} steps after epoch "
                     f"{s.base.htr_start_epoch} with {s.base.htr_probes} probes, L2 {s.l2:g}, evaluation seeds "
                     f"{list(s.seeds)}, γ chosen at seed {s.selection_seed}"
                     for name, s in studies.items())


def describe_sweep(base: TrainConfig, seeds: Sequence[int]) -> str:
    """The sweep's common setting: model, data, split, epochs, seeds and how the trace is measured."""
    return (f"{base.model} on {base.dataset}, {base.train_size or 'all'} training images "
            f"(validation {base.val_fraction:.0%} held out), {base.epochs} epochs, seeds {list(seeds)}; trace: "
            f"{base.trace_probes} probes on {base.examples_per_class}/class")


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def _interval(row: Mapping[str, Any], scale: float = 100, fmt: str = "+.2f") -> str:
    return f"{scale * row['diff']:{fmt}} [{scale * row['lo']:{fmt}}, {scale * row['hi']:{fmt}}]"


CHANGED = "the rule changed after issue 31's referee read; both shown"
C6A_DESIGN = ("loss threshold", 35, 1)  # amendment 3: 35 settings × 1 seed, each run stopped at training loss L*


def c6a_design(table: pd.DataFrame, reps: int = 600, boot: int = 400) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Amendment 3's calibration and budget rule on this study's fixed-epoch sweep ``table``: the model fitted to it
    (:func:`fit_sweep_model`), each design's rates (:func:`c6a_design_table`) and :func:`c6a_budget`. When no model
    can be fitted (e.g. a non-positive trace estimate), an empty table and a design that cannot decide, saying why."""
    try:
        model = fit_sweep_model(table)
    except ValueError as err:
        return pd.DataFrame(), {"testable": False, "minutes": math.nan, "power": math.nan, "t15_minutes": math.nan,
                                "collinearity": math.nan,
                                "text": f"not testable here: the design's power cannot be calibrated ({err})"}
    designs = c6a_design_table(model, reps=reps, boot=boot)
    return designs, {**c6a_budget(designs, table), "collinearity": model["collinearity"]}


def c6a_budget(design_table: pd.DataFrame, sweep: pd.DataFrame, base_label: str = "base") -> dict[str, Any]:
    """Amendment 3's budget rule (:func:`c6a_design_check`) on this study: the calibrated power at ρ = −0.5 of the
    35 × 1 loss-threshold design (its row of :func:`htr_utils.study.calibration_regularisation.c6a_design_table`)
    and t₁₅ = the median wall time of the sweep's ``base_label`` runs (the study's own full-length SGD runs)."""
    design, settings, seeds = C6A_DESIGN
    row = design_table[(design_table["design"] == design) & (design_table["settings"] == settings)
                       & (design_table["seeds"] == seeds)]
    base = sweep.loc[sweep["run"] == base_label, "wall_seconds"].dropna() if "wall_seconds" in sweep else []
    if row.empty or not len(base):
        raise ValueError(f"c6a_budget: need the design table's row {C6A_DESIGN} and the wall times of the sweep's "
                         f"{base_label!r} runs; build the table with c6a_design_table (its default designs) and the "
                         "sweep with sweep_table")
    power, t15 = float(row["P(R | ρ = −0.5)"].iloc[0]), float(np.median(base)) / 60
    return {**c6a_design_check(power, settings * seeds, t15), "power": power, "t15_minutes": t15}


def c6a_verdict(table: pd.DataFrame, corr: Mapping[str, Mapping[str, float]], diverged: Mapping[str, str],
                design: Mapping[str, Any] | None = None, threshold: Mapping[str, Any] | None = None) -> VerdictResult:
    """C6a by the amended rule (PROTOCOL.md, amendment 3), the earlier rules beside.

    ``table`` / ``corr`` / ``diverged``: the fixed-epoch sweep (:func:`sweep_table`, :func:`sweep_correlations`);
    ``design``: the budget rule's result (:func:`c6a_budget`); ``threshold``: the loss-threshold sweep's
    ``table``, ``corr`` and ``diverged``, or None when it is not in the profile. The verdict is
    :func:`c6a_amended` on the loss-threshold sweep when the design is testable and was run; "not tested at
    this budget" (amendment 5) when the budget rule says so (the fixed-epoch sweep's reading then stands
    beside, never deciding); inconclusive, "not in the profile yet", when testable but not run. Beside: the
    earlier rule (:func:`c6a_rule` on the fixed-epoch sweep) and the earliest (:func:`sweep_verdict`, plain ρ).
    """
    earlier = c6a_rule(corr["partial_test_acc"], corr["partial_acc_gap"])
    earliest = sweep_verdict(corr["plain_test_acc"], corr["plain_acc_gap"])
    f = lambda c, k: f"{c[k]['rho']:.2f} [{c[k]['lo']:.2f}, {c[k]['hi']:.2f}]"  # noqa: E731
    if design is None:
        verdict, amended = Verdict.INCONCLUSIVE, "no budget check (no design table): nothing to judge"
    elif not design["testable"]:
        verdict = c6a_amended(corr["partial_test_acc"], corr["partial_acc_gap"], design)["C6a"]
        amended = f"not tested at this budget — {design['text']}; the 35 loss-threshold runs are not trained"
    elif threshold is None:
        verdict = Verdict.INCONCLUSIVE
        amended = (f"inconclusive — {design['text']}, but the loss-threshold design is not in the profile yet: "
                   "not trained, nothing to judge")
    else:
        t, c = threshold["table"], threshold["corr"]
        verdict = c6a_amended(c["partial_test_acc"], c["partial_acc_gap"], design)["C6a"]
        amended = (f"{design['text']}; loss-threshold sweep, {t['run'].nunique()} settings × {t.groupby('run').size().max()} "
                   f"seed(s) ({len(threshold['diverged'])} left out), training loss reached "
                   f"{t['train_loss'].min():.3f}–{t['train_loss'].max():.3f}: partial ρ(trace, test acc.) = "
                   f"{f(c, 'partial_test_acc')}, ρ(trace, train−test acc.) = {f(c, 'partial_acc_gap')} → {verdict}")
    settings = table.groupby("run", sort=False)
    measured = (f"amended rule (issue 31): {amended} | earlier rule (PROTOCOL.md before issue 31; {CHANGED}): "
                f"fixed-epoch sweep, {settings.ngroups} LeNet settings × {settings.size().min()}–{settings.size().max()} "
                f"seeds ({len(diverged)} diverged runs left out); given training loss (final train loss "
                f"{table['train_loss'].min():.3f}–{table['train_loss'].max():.3f}), partial ρ(trace, test acc.) = "
                f"{f(corr, 'partial_test_acc')}, ρ(trace, train−test acc.) = {f(corr, 'partial_acc_gap')}, ρ(trace, "
                f"test−train loss) = {f(corr, 'partial_loss_gap')} → {earlier}; earliest rule (plain ρ over setting "
                f"means: test acc. {f(corr, 'plain_test_acc')}, gap {f(corr, 'plain_acc_gap')}) → {earliest}")
    return VerdictResult(verdict, measured, {"correlations": {k: dict(v) for k, v in corr.items()},
                                             "design": dict(design or {}), "earlier_rule": earlier,
                                             "earliest_rule": earliest, "table": table.to_dict("records"),
                                             "diverged": dict(diverged),
                                             "threshold": None if threshold is None else
                                             {"correlations": {k: dict(v) for k, v in threshold["corr"].items()},
                                              "table": threshold["table"].to_dict("records")}})


MOVED = "moved to the paper profile (budget)"  # issue 33: rows the cpu profile no longer trains


def c6a_not_in_profile(why: str = MOVED) -> VerdictResult:
    """C6a when the profile trains no sweep (issue 33: the cpu profile's sweep and the 35-setting loss-threshold
    design are in the paper profile): "not tested at this budget" (amendment 5), saying why."""
    return VerdictResult(Verdict.NOT_TESTED,
                         f"amended rule (issue 31, amendment 5): not tested at this budget — the fixed-epoch sweep and "
                         f"the 35 × 1 loss-threshold design are {why}; no run of this profile bears on C6a",
                         {"design": {"testable": False, "text": why}})


def dose_arm_power(comparison: Mapping[str, float], n: int, reps: int = 5000) -> dict[str, Any]:
    """Amendment 5: the acting-dose arm's calibrated power at the paper's +0.1 pt and its minimum detectable effect
    at the arm's own measured paired sd (HTR(dose) − SGD) and ``n`` seeds, with :func:`dose_arm_power_text`."""
    sd = float(comparison["sd"])
    if not (np.isfinite(sd) and sd > 0 and n >= 2):
        return {"power": math.nan, "mde": math.nan, "text": "power not computable (no spread measured)"}
    power = c6b_amended_rates(PAPER_GAIN, (sd,), n, reps=reps)["P(reproduced)"]
    mde = c6b_min_detectable((sd,), n, reps=reps)
    return {"power": power, "mde": mde, "sd": sd, "n": n,
            "text": dose_arm_power_text(power, 100 * mde) + f" (its paired sd {100 * sd:.3f} pts, {n} seeds)"}


def arm_dose(results: pd.DataFrame, arm: str, reference: str = "sgd") -> dict[str, Any]:
    """The dose of ``arm`` against ``reference`` (amendment 1): per-seed relative final-trace reduction
    (:func:`relative_trace_reduction`, %, paired t interval), mean penalty steps and steps per run, and its text."""
    red = relative_trace_reduction(per_seed(results, reference, "trace"), per_seed(results, arm, "trace"))
    g = results[(results["arm"] == arm) & (results["status"] == "done")]
    pen = float(g["penalty_steps"].mean()) if "penalty_steps" in g and len(g) else math.nan
    steps = float(g["steps"].mean()) if "steps" in g and len(g) else math.nan
    return {**red, "penalty_steps": pen, "steps": steps, "text": dose_text(red, pen, steps)}


def c6b_verdict(comparisons: Mapping[str, pd.DataFrame], results: Mapping[str, pd.DataFrame],
                gammas: Mapping[str, float], studies: Mapping[str, RegStudy],
                arms: Sequence[str] = ("sgd", "sgd_l2", "htr", "l2_htr"),
                dose: Mapping[str, Mapping[str, Any] | None] | None = None,
                authors: Mapping[str, Mapping[str, Any]] | None = None) -> VerdictResult:
    """C6b by the amended rule (:func:`c6b_amended`: the paper's +0.1 point at +0.05 pts, "any gain" apart) on
    each deciding study's paired intervals (rows ``in_rule``), combined over studies (every); the dose
    (:func:`arm_dose`) beside every HTR arm.

    ``dose``: study -> the acting-dose arm (:func:`htr_utils.study.regularisation_arms.acting_dose_arm`: its
    ``selection`` and ``comparison``, the paired test-accuracy row of HTR(dose) − SGD, and ``dose``), or None
    when it is not in the profile; judged by the same statements, shown beside. ``authors``: study -> the
    authors'-schedule numbers (:func:`htr_utils.study.regularisation_arms.authors_schedule_table`) for a side
    study that runs it. Beside: the earlier rule (:func:`c6b_rule`) and the earliest (:func:`improvement_verdict`).
    """
    per_study, earlier, earliest, statements, texts = {}, {}, {}, {}, []
    dose, authors = dict(dose or {}), dict(authors or {})
    for name, comp in comparisons.items():
        study, res = studies[name], results[name]
        rule_rows = comp[comp["in_rule"]]
        acc = {a: res.loc[res["arm"] == a, "test_acc"].dropna() for a in arms if a in set(res["arm"])}
        head = (f"{name} (γ = {gammas[name]:g}, {len(study.seeds)} seeds): test acc. "
                + ", ".join(f"{a} {100 * v.mean():.2f} ± {100 * v.std(ddof=1):.2f} %" for a, v in acc.items()))
        pairs = "; ".join(f"{r['comparison']} = {_interval(r)} pts (paired sd {100 * r['sd']:.2f}, detectable "
                          f"{100 * r['mde']:.2f})" for _, r in rule_rows.iterrows())
        doses = "; ".join(f"{ARM_LABELS.get(a, a)} {arm_dose(res, a, ref)['text']}"
                          for a, ref in (("htr", "sgd"), ("l2_htr", "sgd_l2")) if {a, ref} <= set(res["arm"]))
        if not study.decides:
            side = f"shown, not deciding: {head}; {pairs}; {doses}"
            if name in authors:
                side += f"; the authors' schedule: {authors[name]['text']}"
            texts.append(side)
            continue
        result = c6b_amended(rule_rows.to_dict("records"),
                             [dose[name]["comparison"]] if dose.get(name) and dose[name].get("comparison") else None)
        per_study[name], statements[name] = result["C6b"], result
        earlier[name], earliest[name] = result["earlier rule"], improvement_verdict(rule_rows)
        d = dose.get(name)
        if d is None:
            dose_part = ("acting-dose arm: not in this profile (not trained); whether a real trace reduction buys "
                         "accuracy here is not tested")
        elif d.get("comparison") is None:
            dose_part = f"acting-dose arm: {d['text']}"
        else:
            d["power"] = dose_arm_power(d["comparison"], len(study.seeds))
            dose_part = (f"acting-dose arm ({d['text']}): HTR(dose) − SGD = {_interval(d['comparison'])} pts; "
                         f"{result['dose']['text']}; {d['power']['text']} (shown, not deciding)")
        texts.append(f"{head}; {pairs}; {doses}; {result['chosen']['text']} → {per_study[name]} | {dose_part} | "
                     f"earlier rule (PROTOCOL.md before issue 31; {CHANGED}): {earlier[name]}; earliest rule "
                     f"(Welch): {earliest[name]}")
    if not authors:
        texts.append(f"the authors' schedule (SGD 30 epochs against SGD + HTR 40, amendment 2): not in this profile, "
                     f"{MOVED}")
    if all(s.decides or n in authors for n, s in studies.items()):  # no side row but the authors' schedule
        texts.append(f"the paper's own LeNet + FashionMNIST setting (shown, never deciding): not in this profile, {MOVED}")
    return VerdictResult(combine(per_study.values()), " | ".join(texts),
                         {"per_study": per_study, "earlier_rule": earlier, "earliest_rule": earliest,
                          "statements": {n: {"any gain": s["chosen"]["any_gain"], "text": s["chosen"]["text"],
                                             "dose arm": s["dose"]} for n, s in statements.items()},
                          "doses": {n: {a: {k: v for k, v in arm_dose(r, a, ref).items()}
                                        for a, ref in (("htr", "sgd"), ("l2_htr", "sgd_l2")) if {a, ref} <= set(r["arm"])}
                                    for n, r in results.items()},
                          "acting_dose": {n: (None if d is None else {k: v for k, v in d.items() if k != "results"})
                                          for n, d in dose.items()},
                          "authors_schedule": {n: {k: v for k, v in a.items() if k != "table"} for n, a in authors.items()},
                          "gammas": dict(gammas),
                          "comparisons": {n: c.to_dict("records") for n, c in comparisons.items()},
                          "results": {n: r.to_dict("records") for n, r in results.items()}})


def _cost_line(c: pd.DataFrame, rule: str) -> str:
    """:func:`c7_cost_line` from a :func:`penalty_step_costs` table (its ``layers`` / ``penalised layers`` columns)."""
    ratio = c.loc[rule, "median_s"] / c.loc["all", "median_s"]
    if "layers" not in c.columns:  # a table from before the cost line: shares only
        return (f"penalty step {ratio:.2f}× full ({100 * c.loc[rule, 'share of parameters']:.0f} % of parameters, "
                f"{100 * c.loc[rule, 'share of penalty compute']:.0f} % of the penalty's compute)")
    split = lambda v: [x.strip() for x in str(v).split(",") if x.strip()]  # noqa: E731
    return c7_cost_line(split(c.loc[rule, "layers"]), split(c.loc[rule, "penalised layers"]), ratio,
                        float(c.loc[rule, "share of parameters"]), float(c.loc[rule, "share of penalty compute"]))


def c7_result(comparisons: Mapping[str, pd.DataFrame], results: Mapping[str, pd.DataFrame],
              costs: Mapping[str, pd.DataFrame], gammas: Mapping[str, Mapping[str, float]],
              studies: Mapping[str, RegStudy], rounds: int) -> VerdictResult:
    """C7 per deciding study by the amended rule (:func:`c7_amended`: gate :func:`c7_acts` on the per-seed trace
    reductions, accuracy, cost, the ±0.1-pt equivalence beside) for each middle rule, any rule suffices;
    combined over studies (every). The gain that sets the margin is this study's paired HTR − SGD
    (:func:`established_gain`). Beside: the dose of every arm (:func:`arm_dose`), the cost line
    (:func:`c7_cost_line`), the earlier rule (:func:`c7_rule`, gate: trace interval below 0) and the
    earliest (:func:`earlier_c7_verdict`).
    """
    per_study, texts, earlier, earliest = {}, [], {}, {}
    for name, comp in comparisons.items():
        study, res = studies[name], results[name]
        if not study.decides:
            continue
        row = lambda arm, ref, q: comp[(comp["arm"] == arm) & (comp["reference"] == ref)  # noqa: E731
                                       & (comp["quantity"] == q)].iloc[0]
        htr_gain = row("htr", "sgd", "test_acc")
        gain = established_gain(htr_gain)
        c = costs[name].set_index("step")
        full_dose = arm_dose(res, "htr")
        rules, parts = {}, []
        for rule in study.middle_rules:
            arm = f"htr_{rule}"
            trace, acc = row(arm, "sgd", "trace"), row(arm, "htr", "test_acc")
            ratio = c.loc[rule, "median_s"] / c.loc["all", "median_s"]
            mid_dose = arm_dose(res, arm)
            gate = c7_acts(mid_dose, full_dose, trace)
            rules[rule] = r = c7_amended(gate, acc, ratio, gain, trace)
            parts.append(f"{rule} (γ = {gammas[name][rule]:g}; {mid_dose['text']}): trace − SGD "
                         f"{_interval(trace, 1, '+.3g')}; {gate['text']}; middle − full {_interval(acc)} pts → accuracy "
                         f"{r['accuracy']} ({r['accuracy_note']}), {r['equivalence']} (secondary); {_cost_line(c, rule)} "
                         f"→ cost {r['cost']}; → {r['C7']} (earlier rule: {r['earlier rule']})")
        for rule in (r for r in study.cost_rules if r not in study.middle_rules and r in c.index):
            parts.append(f"{rule} (cost only, no arm trained): {_cost_line(c, rule)}")
        per_study[name] = {**rules, "C7": combine((r["C7"] for r in rules.values()), "any_of")}
        earlier[name] = combine((r["earlier rule"] for r in rules.values()), "any_of")
        earliest[name] = earlier_c7_verdict(comp[(comp["reference"] == "htr") & (comp["quantity"] == "test_acc")],
                                            costs[name], study.middle_rules)
        texts.append(f"{name}: HTR − SGD {_interval(htr_gain)} pts ("
                     + (f"gain established, margin {100 * gain / 2:.3f} pts" if gain is not None else "no gain established")
                     + f"); full HTR {full_dose['text']}; full penalty step {c.loc['all', 'median_s']:.3g} s, plain "
                     f"{c.loc['plain', 'median_s']:.3g} s (median of {rounds}); " + "; ".join(parts)
                     + f"; the middle arm at an acting dose (amendment 4, optional) is not in the profile, so a middle arm that "
                     f"does not act leaves C7 not tested (dose) (amendment 5) | earlier rule "
                     f"(PROTOCOL.md before issue 31; {CHANGED}): {earlier[name]}; earliest rule (Welch, 0.3-pt margin): "
                     f"{earliest[name]}")
    return VerdictResult(combine(v["C7"] for v in per_study.values()), " | ".join(texts),
                         {"per_study": per_study, "earlier_rule": earlier, "earliest_rule": earliest,
                          "gammas": {n: dict(g) for n, g in gammas.items()},
                          "costs": {n: c.to_dict("records") for n, c in costs.items()},
                          "comparisons": {n: c.to_dict("records") for n, c in comparisons.items()}})


# ============================================================================ figures


# ============================================================================ pre-training


def choose_gammas(study: RegStudy, root: Path, data_root: str | Path = "data",
                  progress: bool = False) -> tuple[dict[str, pd.DataFrame], dict[str, float]]:
    """Rule -> selection table and rule -> γ: full HTR on validation (:func:`select_gamma`), each middle
    rule by matching full HTR's trace reduction (:func:`select_middle_gamma`)."""
    tables, gammas = {}, {}
    tables["all"], gammas["all"] = select_gamma(study, "all", root, data_root, progress)
    for rule in study.middle_rules:
        if study.arm_names is None or f"htr_{rule}" in study.arm_names:
            tables[rule], gammas[rule] = select_middle_gamma(study, rule, gammas["all"], root, data_root, progress)
    return tables, gammas


def study_runs(study: RegStudy) -> list[TrainConfig]:
    """The runs of ``study`` that do not wait for a choice of γ: its selection grids and plain arms
    (every arm × seed where there is no γ grid, as in a side study)."""
    cfgs = [c for rule in ("all", *study.middle_rules) if study.grid(rule) for c in study.grid_configs(rule).values()]
    cfgs += [c.replace(seed=s) for c in study.arms().values() for s in study.seeds
             if not c.htr_gamma or not study.grid("all")]
    return _unique(cfgs)


def _unique(cfgs: Sequence[TrainConfig]) -> list[TrainConfig]:
    out: dict[str, TrainConfig] = {}
    for c in cfgs:
        out.setdefault(config_hash(c), c)
    return list(out.values())


def describe_config(cfg: TrainConfig) -> str:
    """One line naming a run: model, data, seed, and what sets it apart (batch, lr, wd, γ, penalised set)."""
    extra = f", γ {cfg.htr_gamma:g} on {cfg.htr_params}" if cfg.htr_gamma else ""
    return (f"{cfg.model} {cfg.dataset} seed {cfg.seed}, batch {cfg.batch_size}, lr {cfg.lr:g}, wd {cfg.weight_decay:g}, "
            f"{cfg.epochs} epochs{extra}")
