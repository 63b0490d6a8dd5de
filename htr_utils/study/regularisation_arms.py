"""Issue 31's new C6b arms (PROTOCOL.md, amendments 1-2): the acting-dose HTR arm and the authors' schedule.

* :func:`acting_dose_arm`: at the selection seed, the candidates of amendment 1 in their fixed order
  (cheapest dose first) until one lowers the final trace by ≥ 20 % against SGD
  (:func:`~htr_utils.study.regularisation_rules.select_acting_dose`); then that dose at every
  evaluation seed, paired with the study's SGD arm. A study opts in with a ``dose_arm`` field set
  True (a :class:`~htr_utils.study.profiles.RegStudy` field the next session adds); without it the
  arm is not in the profile and nothing is trained.
* :func:`authors_schedule_table`: a side study with 40-epoch SGD and SGD + HTR arms
  (:func:`is_authors_schedule`) gives SGD 30 / HTR 30 as the same runs' epoch-30 test accuracies,
  and :func:`~htr_utils.study.regularisation_rules.authors_schedule` splits the authors' comparison.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from .profiles import RegStudy
from .regularisation import ARM_LABELS, arm_dose, compare_arms, per_seed, run_summary
from .regularisation_rules import authors_schedule, select_acting_dose
from .runs import Run, finished, load_run, train_run
from .training import TrainConfig, TrainingDiverged

# Amendment 1's candidates, in the fixed order: (label, γ, htr_freq; None = the study's schedule).
ACTING_DOSE_CANDIDATES: tuple[tuple[str, float, int | None], ...] = (
    ("γ 1e-3", 1e-3, None), ("γ 3e-3", 3e-3, None), ("γ 1e-2", 1e-2, None),
    ("γ 1e-3 every 10 steps", 1e-3, 10), ("γ 1e-2 every 10 steps", 1e-2, 10))
AUTHORS_EPOCHS = (30, 40)  # the authors' LeNet + FashionMNIST script: SGD 30 epochs, SGD + HTR 40
DOSE_ARM = "htr_dose"  # its label is in ARM_LABELS


def has_dose_arm(study: RegStudy) -> bool:
    """Whether the profile asks for the acting-dose arm (a ``dose_arm`` field set True on the study)."""
    return bool(getattr(study, "dose_arm", False)) and study.decides


def is_authors_schedule(study: RegStudy) -> bool:
    """A side study (not deciding) with SGD and SGD + HTR arms trained for the authors' 40 epochs."""
    return (not study.decides and study.base.epochs == AUTHORS_EPOCHS[1]
            and {"sgd", "htr"} <= set(study.arms()))


def _run(cfg: TrainConfig, root: Path, data_root: str | Path, progress: bool) -> Run | None:
    try:
        return train_run(cfg, root=root, data_root=data_root, progress=progress)
    except TrainingDiverged:
        return None


def dose_candidate_configs(study: RegStudy) -> list[tuple[str, TrainConfig]]:
    """(label, config at the selection seed) of each candidate, in the fixed order; the study's schedule ones equal
    the γ grid's runs where γ is on the grid (same config, shared cache)."""
    base = study.grid_configs("all")[0.0]
    return [(label, base.replace(htr_gamma=gamma, htr_params="all", htr_freq=freq or base.htr_freq))
            for label, gamma, freq in ACTING_DOSE_CANDIDATES]


def dose_next(study: RegStudy, root: Path) -> list[TrainConfig]:
    """The acting-dose arm's next runs, read from the cache without training (the run grid trains them):
    the next candidate at the selection seed while none acts, then the chosen dose at every evaluation
    seed not yet finished; [] when the arm is complete, when no candidate acts, when the profile does not ask
    for the arm, or while the SGD run at the selection seed is unfinished (:func:`acting_dose_arm` reads the same
    runs in the same order, so the notebook then finds them all)."""
    sgd0 = load_run(study.grid_configs("all")[0.0], root) if has_dose_arm(study) else None
    if sgd0 is None:
        return []
    trace0, trained = run_summary(sgd0)["trace"], []
    for label, cfg in dose_candidate_configs(study):
        if not finished(cfg, root):
            return [cfg]
        run = load_run(cfg, root)
        trained.append((label, run_summary(run)["trace"] if run is not None else math.nan))
        if select_acting_dose(trace0, trained)["chosen"] is not None:
            return [c for c in (cfg.replace(seed=s) for s in study.seeds) if not finished(c, root)]
    return []


def acting_dose_arm(study: RegStudy, results: pd.DataFrame, root: Path, data_root: str | Path = "data",
                    progress: bool = False) -> dict[str, Any] | None:
    """Amendment 1's acting-dose arm of ``study`` (None when the profile does not ask for it).

    Trains SGD and the candidates at the selection seed, in order, stopping at the first whose final trace
    is ≥ 20 % below SGD's; then the chosen dose at every evaluation seed. Returns ``selection`` (a table:
    every candidate's trace and reduction, "not needed" after the chosen one), ``chosen``, ``results``
    (the arm's runs), ``comparison`` (the paired test-accuracy row HTR(dose) − SGD against ``results``'s
    SGD arm; None when no candidate acts), ``dose`` (:func:`arm_dose`) and ``text``.
    """
    if not has_dose_arm(study):
        return None
    sgd0 = _run(study.grid_configs("all")[0.0], root, data_root, progress)
    if sgd0 is None:
        raise RuntimeError("acting_dose_arm: the SGD run at the selection seed diverged; no trace to compare with")
    trace0 = run_summary(sgd0)["trace"]
    trained, configs = [], dict(dose_candidate_configs(study))
    for label, cfg in configs.items():
        run = _run(cfg, root, data_root, progress)
        trained.append((label, run_summary(run)["trace"] if run is not None else math.nan))
        if select_acting_dose(trace0, trained)["chosen"] is not None:
            break
    sel = select_acting_dose(trace0, trained)
    table = pd.DataFrame(sel["candidates"] + [{"dose": label, "trace": math.nan, "reduction": math.nan,
                                               "acts": False, "status": "not needed"}
                                              for label in list(configs)[len(trained):]])
    table["chosen"] = table["dose"] == sel["chosen"]
    out: dict[str, Any] = {"selection": table, "chosen": sel["chosen"], "sgd_trace_seed0": trace0,
                           "results": None, "comparison": None, "dose": None}
    if sel["chosen"] is None:
        out["text"] = ("no candidate lowered the seed-0 trace by 20 % (reductions "
                       + ", ".join(f"{r['dose']} {100 * r['reduction']:.0f} %" for r in sel["candidates"])
                       + "): no dose arm")
        return out
    cfg = configs[sel["chosen"]]
    rows = []
    for seed in study.seeds:
        run = _run(cfg.replace(seed=seed), root, data_root, progress)
        rows.append({"arm": DOSE_ARM, "label": ARM_LABELS[DOSE_ARM], "seed": seed, "gamma": cfg.htr_gamma,
                     "weight_decay": cfg.weight_decay, "htr_params": cfg.htr_params, "htr_freq": cfg.htr_freq,
                     "status": "done" if run is not None else "diverged", **(run_summary(run) if run else {})})
    arm = pd.DataFrame(rows)
    both = pd.concat([results[results["arm"] == "sgd"], arm], ignore_index=True)
    comp = compare_arms(both, [(DOSE_ARM, "sgd")])
    dose = arm_dose(both, DOSE_ARM)
    out.update(results=arm, comparison=comp.iloc[0].to_dict() if len(comp) else None, dose=dose,
               text=f"{sel['chosen']} (chosen at seed 0: trace −{100 * table.loc[table['chosen'], 'reduction'].iloc[0]:.0f} %), "
                    f"{dose['text']}")
    return out


def epoch_accuracy(study: RegStudy, arm: str, gamma: float, epoch: int, root: Path,
                   data_root: str | Path = "data") -> dict[int, float]:
    """Seed -> test accuracy of ``arm`` (at γ ``gamma`` for HTR arms) after ``epoch``, from each evaluation seed's
    finished run (cached; a diverged run is left out)."""
    cfg = study.arms({"all": gamma})[arm]
    out = {}
    for seed in study.seeds:
        run = _run(cfg.replace(seed=seed), root, data_root, False)
        if run is None:
            continue
        m = run.metrics.set_index("epoch")
        if epoch not in m.index:
            raise ValueError(f"epoch_accuracy: the {arm} run at seed {seed} has no epoch {epoch} "
                             f"(epochs {list(m.index)}); train it for at least {epoch} epochs")
        out[seed] = float(m.loc[epoch, "test_acc"])
    return out


def authors_schedule_table(study: RegStudy, gamma: float, root: Path, data_root: str | Path = "data"
                           ) -> dict[str, Any]:
    """The authors' schedule of a side study (:func:`is_authors_schedule`): SGD 40 / HTR 40 at the last epoch,
    SGD 30 / HTR 30 at epoch 30 of the same runs, split by :func:`authors_schedule`; ``table``: the comparisons,
    ``text``: one line with the share of the +0.1-point gain the 10 extra epochs explain."""
    short, long = AUTHORS_EPOCHS
    acc = {f"{a}{e}": epoch_accuracy(study, a, gamma, e, root, data_root) for a in ("sgd", "htr") for e in (short, long)}
    res = authors_schedule(acc)
    table = pd.DataFrame([{"comparison": k, **{c: v[c] for c in ("diff", "sd", "lo", "hi", "n")}}
                          for k, v in res["comparisons"].items()])
    comps = "; ".join(f"{k} = {100 * v['diff']:+.2f} [{100 * v['lo']:+.2f}, {100 * v['hi']:+.2f}] pts"
                      for k, v in res["comparisons"].items())
    s, r = res["share_of_published"], res["share_of_as_run"]
    as_run = (f"{r['ratio']:.0f} % [{r['lo']:.0f}, {r['hi']:.0f}]" if r["bounded"]
              else f"{r['ratio']:.0f} %, interval unbounded (the authors' comparison's interval contains 0)")
    text = (f"{comps}; the 10 extra epochs explain {s['diff']:.0f} % [{s['lo']:.0f}, {s['hi']:.0f}] of a +0.1-point "
            f"gain, {as_run} of the gain as run (shown, never deciding)")
    return {**res, "table": table, "text": text}


def summarise_new_arms(studies: Mapping[str, RegStudy]) -> str:
    """One sentence per study on which of issue 31's new arms the profile holds."""
    parts = []
    for name, s in studies.items():
        if s.decides:
            parts.append(f"{name}: acting-dose arm " + ("in the profile" if has_dose_arm(s) else "not in the profile yet"))
        else:
            parts.append(f"{name}: " + ("the authors' schedule (40 epochs)" if is_authors_schedule(s)
                                        else f"{s.base.epochs}-epoch side row, the authors' schedule (SGD 30 vs "
                                             "SGD + HTR 40) not in the profile yet"))
    return "; ".join(parts)
