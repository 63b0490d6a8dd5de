"""The primary verdict rules of C6a, C6b and C7 (PROTOCOL.md), on numbers only, vectorised.

Each rule has one implementation, ``*_codes``, that works on arrays of intervals and returns
verdict codes (``R`` reproduced, ``N`` not reproduced, ``I`` inconclusive; "not tested", a gate known
before the result, is decided outside the codes: :func:`c6a_amended`, :func:`c7_amended`). The notebooks apply it
to the measured intervals through the scalar wrappers, and :mod:`htr_utils.study.calibration` /
:mod:`htr_utils.study.calibration_regularisation` apply the very same function to simulated
intervals to get the rule's error rates.

The rules of issue 31's amendments (PROTOCOL.md, "Amendments of issue 31") sit beside the earlier
ones, which keep their names (``c6b_codes``, ``c6b_rule``, ``c7_rule``, ``c6a_codes``, ``c6a_rule``)
and are shown as the earlier rules.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.stats import t as t_dist

from .statistics import paired_difference
from .verdicts import Verdict, combine

R, N, I = 1, -1, 0  # verdict codes
CODE_TO_VERDICT = {R: Verdict.REPRODUCED, N: Verdict.NOT_REPRODUCED, I: Verdict.INCONCLUSIVE}

EQUIVALENCE_MARGIN = 0.001  # +0.1 accuracy points: the paper's LeNet + MNIST gain of HTR (98.75 → 98.847 %)
COST_SAVING = 0.1           # a middle penalty step at least 10 % cheaper than the full one
PRE_REGISTERED_PAIRED_SD = 0.0009  # 0.09 points: sd of paired HTR − SGD test accuracy, earlier 3-seed cpu run


def c6b_codes(lo: np.ndarray, hi: np.ndarray, margin: float = EQUIVALENCE_MARGIN) -> np.ndarray:
    """C6b on paired 95 % intervals [lo, hi] of (HTR − SGD, L2 + HTR − L2); last axis = the comparisons.

    R if every lower bound > 0; N if every upper bound < ``margin`` (equivalence: any gain is
    smaller than the paper's); I otherwise.
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.where((lo > 0).all(-1), R, np.where((hi < margin).all(-1), N, I))


def c7_accuracy_codes(lo: np.ndarray, hi: np.ndarray, margin: float) -> np.ndarray:
    """C7 accuracy on the paired interval of (middle HTR − full HTR): R if lo > −margin, N if hi < −margin, else I."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.where(lo > -margin, R, np.where(hi < -margin, N, I))


def c6a_codes(acc_lo: np.ndarray, acc_hi: np.ndarray, gap_lo: np.ndarray, gap_hi: np.ndarray) -> np.ndarray:
    """C6a on 95 % intervals of partial Spearman ρ given training loss, of trace vs test accuracy and vs the gap.

    R if ρ_acc's interval lies below 0 and ρ_gap's above 0; N if either lies on the wrong side
    (ρ_acc's above 0 or ρ_gap's below 0: evidence that flatter goes with worse generalisation);
    I otherwise.
    """
    acc_lo, acc_hi, gap_lo, gap_hi = (np.asarray(v, dtype=float) for v in (acc_lo, acc_hi, gap_lo, gap_hi))
    return np.where((acc_hi < 0) & (gap_lo > 0), R, np.where((acc_lo > 0) | (gap_hi < 0), N, I))


def verdict_of(code: int | np.integer) -> Verdict:
    return CODE_TO_VERDICT[int(code)]


# ------------------------------------------------------------------------------- scalar wrappers


def c6b_rule(intervals: Sequence[Mapping[str, float]], margin: float = EQUIVALENCE_MARGIN) -> Verdict:
    """:func:`c6b_codes` on the measured paired intervals (dicts with ``lo``/``hi``; a NaN bound decides nothing)."""
    lo = [i["lo"] for i in intervals]
    hi = [i["hi"] for i in intervals]
    if not intervals or not np.isfinite(lo + hi).all():
        return Verdict.INCONCLUSIVE
    return verdict_of(c6b_codes(lo, hi, margin))


def established_gain(htr_vs_sgd: Mapping[str, float]) -> float | None:
    """The HTR gain C6b established (mean paired HTR − SGD when its interval lies above 0), else None."""
    return htr_vs_sgd["diff"] if np.isfinite(htr_vs_sgd["lo"]) and htr_vs_sgd["lo"] > 0 else None


def c7_rule(acts: Mapping[str, float], accuracy: Mapping[str, float], cost_ratio: float,
            gain: float | None) -> dict[str, Verdict | str]:
    """C7 for one middle rule: the arm must act, then accuracy against full HTR and cost; both must pass.

    ``acts``: paired interval of (middle − SGD) on the final trace; the arm acts if its upper
    bound < 0. ``accuracy``: paired interval of (middle − full HTR) test accuracy, judged with
    margin gain / 2 (:func:`c7_accuracy_codes`); with no established gain (``gain`` None) or an
    arm that does not act, the accuracy half cannot be judged (inconclusive). Cost: median
    penalty step middle / full ≤ 1 − COST_SAVING reproduced, ≥ 1 not reproduced, else inconclusive.
    """
    acted = bool(np.isfinite(acts["hi"]) and acts["hi"] < 0)
    if gain is None:
        acc, why = Verdict.INCONCLUSIVE, "no HTR gain established in C6b: accuracy half cannot be judged"
    elif not acted:
        acc, why = Verdict.INCONCLUSIVE, "the middle arm did not lower the trace: accuracy half cannot be judged"
    elif not np.isfinite([accuracy["lo"], accuracy["hi"]]).all():
        acc, why = Verdict.INCONCLUSIVE, "no interval"
    else:
        acc, why = verdict_of(c7_accuracy_codes(accuracy["lo"], accuracy["hi"], gain / 2)), f"margin {gain / 2:.4g}"
    cost = (Verdict.REPRODUCED if cost_ratio <= 1 - COST_SAVING else
            Verdict.NOT_REPRODUCED if cost_ratio >= 1 else Verdict.INCONCLUSIVE)
    return {"acts": "yes" if acted else "no", "accuracy": acc, "accuracy_note": why, "cost": cost,
            "C7": combine((acc, cost), "all_of")}


def c6a_rule(acc: Mapping[str, float], gap: Mapping[str, float]) -> Verdict:
    """:func:`c6a_codes` on the measured partial-ρ intervals (dicts with ``lo``/``hi``)."""
    bounds = [acc["lo"], acc["hi"], gap["lo"], gap["hi"]]
    if not np.isfinite(bounds).all():
        return Verdict.INCONCLUSIVE
    return verdict_of(c6a_codes(*bounds))


# ================================================================ issue 31, amendment 1: C6b with its dose
# Measured in the committed cpu run (figures/cpu/07_trace_regularisation, 10 paired seeds):
MEASURED_PAIRED_SD = (0.000273, 0.000313)  # sd of paired SGD + HTR − SGD and SGD + L2 + HTR − SGD + L2 test accuracy
MEASURED_PAIRED_CORR = 0.25                # correlation of the two differences at one seed
ACCURACY_RESOLUTION = 1e-4                 # one test image of 10 000: every paired difference is a multiple of it
PAPER_GAIN = EQUIVALENCE_MARGIN            # +0.1 points, the paper's LeNet + MNIST gain
GAIN_THRESHOLD = PAPER_GAIN / 2            # "the paper's gain": every interval above half of it
ACTING_DOSE = 0.20                         # a dose acts if it lowers the final trace at seed 0 by ≥ 20 %


def paper_gain_codes(lo: np.ndarray, hi: np.ndarray, threshold: float = GAIN_THRESHOLD) -> np.ndarray:
    """C6b (amended), the paper's +0.1 point, on paired 95 % intervals [lo, hi]; last axis = the comparisons.

    R if every lower bound > ``threshold`` (+0.05 points: gains below half the paper's are excluded);
    N if every upper bound < ``threshold`` (any gain is under half the paper's); I otherwise. The
    two regions cannot overlap (lo ≤ hi), unlike the earlier rule's (lo > 0 / hi < +0.1 pt).
    """
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.where((lo > threshold).all(-1), R, np.where((hi < threshold).all(-1), N, I))


def any_gain_codes(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The separate "any gain" statement: R (a gain) if every lower bound > 0, N (a loss) if every upper bound < 0, else I."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.where((lo > 0).all(-1), R, np.where((hi < 0).all(-1), N, I))


def _bounds(intervals: Sequence[Mapping[str, float]]) -> tuple[list[float], list[float]] | None:
    lo, hi = [i["lo"] for i in intervals], [i["hi"] for i in intervals]
    return (lo, hi) if intervals and np.isfinite(lo + hi).all() else None


def _pts(x: float) -> str:
    return f"{100 * x:+.2f}"


def c6b_statements(intervals: Sequence[Mapping[str, float]], threshold: float = GAIN_THRESHOLD) -> dict[str, Any]:
    """Both statements of amended C6b on one arm's paired test-accuracy intervals (dicts with ``lo``/``hi``).

    ``paper_gain``: :func:`paper_gain_codes` (the verdict); ``any_gain``: :func:`any_gain_codes`
    ("a gain" / "a loss" / "neither"); ``text``: the two as separate sentences, with the largest
    upper bound (the largest gain the data leave possible). NaN bounds decide nothing.
    """
    b = _bounds(intervals)
    if b is None:
        return {"paper_gain": Verdict.INCONCLUSIVE, "any_gain": "no interval", "text": "no paired interval"}
    lo, hi = b
    paper = verdict_of(paper_gain_codes(lo, hi, threshold))
    any_code = int(any_gain_codes(lo, hi))
    top = max(hi)
    any_text = {R: f"any gain: shown (every paired lower bound above 0; lowest {_pts(min(lo))} pts)",
                N: f"any gain: none, HTR lowers accuracy (every upper bound below 0; highest {_pts(top)} pts)",
                I: f"any gain: not shown (gains up to {_pts(top)} pts and no gain are both possible)"}[any_code]
    paper_text = {Verdict.REPRODUCED: f"the paper's +0.1 point: reproduced (every interval above {_pts(threshold)} pts, "
                                      "half the paper's gain)",
                  Verdict.NOT_REPRODUCED: f"the paper's +0.1 point: not reproduced (every interval below "
                                          f"{_pts(threshold)} pts: any gain is under half the paper's)",
                  Verdict.INCONCLUSIVE: f"the paper's +0.1 point: inconclusive (an interval contains {_pts(threshold)} pts)"}
    return {"paper_gain": paper, "any_gain": {R: "a gain", N: "a loss", I: "neither"}[any_code],
            "text": f"{any_text}; {paper_text[paper]}"}


def relative_trace_reduction(sgd_trace: Mapping[int, float], arm_trace: Mapping[int, float],
                             level: float = 0.95) -> dict[str, float]:
    """The dose in trace: per seed r_s = (trace_SGD,s − trace_arm,s) / trace_SGD,s, mean and paired t interval, in %.

    Only seeds finite in both arms count; with fewer than two the interval is NaN.
    """
    seeds = sorted(s for s in set(sgd_trace) & set(arm_trace)
                   if np.isfinite(sgd_trace[s]) and np.isfinite(arm_trace[s]) and sgd_trace[s] > 0)
    r = np.array([(sgd_trace[s] - arm_trace[s]) / sgd_trace[s] for s in seeds], dtype=float)
    out = {"mean_pct": float(100 * r.mean()) if len(r) else float("nan"), "lo_pct": float("nan"),
           "hi_pct": float("nan"), "n": len(r)}
    if len(r) > 1:
        half = t_dist.ppf(0.5 + level / 2, len(r) - 1) * r.std(ddof=1) / np.sqrt(len(r))
        out.update(lo_pct=float(100 * (r.mean() - half)), hi_pct=float(100 * (r.mean() + half)))
    return out


def dose_text(reduction: Mapping[str, float], penalty_steps: float, total_steps: float) -> str:
    """The dose beside an HTR verdict: the final-trace reduction in % with its interval, penalty steps per run."""
    share = 100 * penalty_steps / total_steps if total_steps else float("nan")
    return (f"dose: final trace {reduction['mean_pct']:.1f} % [{reduction['lo_pct']:.1f}, {reduction['hi_pct']:.1f}] "
            f"below SGD's, penalty on {penalty_steps:.0f} of {total_steps:.0f} steps per run ({share:.1f} %)")


DOSE_ARM_POWER = 0.8  # the power at the paper's +0.1 pt below which the acting-dose arm is labelled underpowered


def dose_arm_power_text(power: float, mde_pts: float, power_needed: float = DOSE_ARM_POWER) -> str:
    """The acting-dose arm's power line (amendment 5): its calibrated P(reproduced) at the paper's +0.1 pt and its
    minimum detectable effect (pts) at its own paired sd; "underpowered for +0.1 pt" first when power < 80 %."""
    line = f"power {100 * power:.0f} % at +0.1 pt, minimum detectable effect {mde_pts:.3f} pts"
    return ("underpowered for +0.1 pt: " + line) if not power >= power_needed else line


def select_acting_dose(sgd_trace0: float, candidates: Sequence[tuple[str, float]],
                       threshold: float = ACTING_DOSE) -> dict[str, Any]:
    """The dose arm of amended C6b, chosen at the selection seed before any evaluation seed runs.

    ``candidates``: (label, final trace at seed 0; NaN if the run diverged) in the order fixed in
    PROTOCOL.md (cheapest dose first). The chosen dose is the first whose reduction
    (trace_SGD − trace) / trace_SGD ≥ ``threshold``; None when no candidate acts (then the
    verdict says no dose in the grid lowered the trace by 20 %).
    """
    if not np.isfinite(sgd_trace0) or sgd_trace0 <= 0:
        raise ValueError(f"select_acting_dose: the SGD trace at seed 0 must be positive and finite, got {sgd_trace0}; "
                         "train the SGD run of the selection seed first")
    rows = [{"dose": label, "trace": float(tr), "reduction": float((sgd_trace0 - tr) / sgd_trace0),
             "acts": bool(np.isfinite(tr) and (sgd_trace0 - tr) / sgd_trace0 >= threshold)} for label, tr in candidates]
    chosen = next((r["dose"] for r in rows if r["acts"]), None)
    return {"chosen": chosen, "candidates": rows}


def c6b_amended(chosen: Sequence[Mapping[str, float]],
                dose: Sequence[Mapping[str, float]] | None = None) -> dict[str, Any]:
    """Amended C6b: the verdict is the paper's-gain statement at the validation-chosen γ (``chosen``: its paired
    intervals, SGD + HTR − SGD and SGD + L2 + HTR − SGD + L2); the acting-dose arm (``dose``: its intervals, or
    None when not trained / no dose acted) is judged by the same rule and shown beside; the earlier rule too."""
    out = {"C6b": c6b_statements(chosen)["paper_gain"], "chosen": c6b_statements(chosen),
           "dose": c6b_statements(dose) if dose else None, "earlier rule": c6b_rule(chosen)}
    return out


# ================================================================ issue 31, amendment 2: the authors' schedule
def fieller_ratio(num: Mapping[int, float], den: Mapping[int, float], level: float = 0.95) -> dict[str, float]:
    """Ratio θ = mean(num) / mean(den) of paired per-seed values with its Fieller interval.

    The interval is every θ at which the paired t test of num_s − θ·den_s does not reject mean 0:
    (n̄ − θ d̄)² ≤ q (s_nn − 2θ s_nd + θ² s_dd), q = t²_{n−1} / n. It is the bounded interval between
    the two roots when d̄² > q s_dd (the denominator's own interval excludes 0), else unbounded
    (``lo`` −inf, ``hi`` inf, ``bounded`` False).
    """
    seeds = sorted(s for s in set(num) & set(den) if np.isfinite(num[s]) and np.isfinite(den[s]))
    a, b = np.array([den[s] for s in seeds], float), np.array([num[s] for s in seeds], float)
    n = len(seeds)
    ratio = float(b.mean() / a.mean()) if n and a.mean() != 0 else float("nan")
    if n < 2:
        return {"ratio": ratio, "lo": float("nan"), "hi": float("nan"), "bounded": False, "n": n}
    q = t_dist.ppf(0.5 + level / 2, n - 1) ** 2 / n
    cov = np.cov(np.stack([b, a]), ddof=1)
    qa, qb, qc = a.mean() ** 2 - q * cov[1, 1], -2 * (a.mean() * b.mean() - q * cov[0, 1]), b.mean() ** 2 - q * cov[0, 0]
    disc = qb ** 2 - 4 * qa * qc
    if qa <= 0 or disc < 0:
        return {"ratio": ratio, "lo": -np.inf, "hi": np.inf, "bounded": False, "n": n}
    r1, r2 = sorted(((-qb - np.sqrt(disc)) / (2 * qa), (-qb + np.sqrt(disc)) / (2 * qa)))
    return {"ratio": ratio, "lo": float(r1), "hi": float(r2), "bounded": True, "n": n}


def authors_schedule(acc: Mapping[str, Mapping[int, float]], published_gain: float = PAPER_GAIN,
                     level: float = 0.95) -> dict[str, Any]:
    """The authors' LeNet + FashionMNIST schedule (SGD 30 epochs against SGD + HTR 40), shown, never deciding.

    ``acc``: "sgd30", "sgd40", "htr40" (and optionally "htr30") -> {seed: test accuracy}. Per seed,
    the authors' comparison A = HTR40 − SGD30 splits exactly into B = SGD40 − SGD30 (the 10 extra
    epochs) and C = HTR40 − SGD40 (HTR at equal epochs). Returned: paired t intervals of A, B, C
    (and HTR30 − SGD30); ``share_of_published``: B / ``published_gain`` in % with the interval
    [B_lo, B_hi] / published_gain (the published gain is a constant, so this is exact under the
    paired t model); ``share_of_as_run``: B̄ / Ā in % with its Fieller interval (:func:`fieller_ratio`),
    unbounded when A's own interval contains 0.
    """
    missing = {"sgd30", "sgd40", "htr40"} - set(acc)
    if missing:
        raise ValueError(f"authors_schedule: no accuracies for {sorted(missing)}; train SGD 40 and SGD + HTR 40 "
                         "(SGD 30 is SGD 40's epoch 30) at the same seeds")
    comps = {"HTR 40 − SGD 30 (the authors' comparison)": paired_difference(acc["htr40"], acc["sgd30"], level),
             "SGD 40 − SGD 30 (10 extra epochs)": paired_difference(acc["sgd40"], acc["sgd30"], level),
             "HTR 40 − SGD 40 (HTR at equal epochs)": paired_difference(acc["htr40"], acc["sgd40"], level)}
    if "htr30" in acc:
        comps["HTR 30 − SGD 30 (HTR at equal epochs, 30)"] = paired_difference(acc["htr30"], acc["sgd30"], level)
    extra = comps["SGD 40 − SGD 30 (10 extra epochs)"]
    a = {s: acc["htr40"][s] - acc["sgd30"][s] for s in extra["seeds"] if s in acc["htr40"]}
    b = {s: acc["sgd40"][s] - acc["sgd30"][s] for s in a}
    share = {k: 100 * extra[k] / published_gain for k in ("diff", "lo", "hi")}
    as_run = {k: (100 * v if k in ("ratio", "lo", "hi") else v) for k, v in fieller_ratio(b, a, level).items()}
    return {"comparisons": comps, "share_of_published": share, "share_of_as_run": as_run}


# ================================================================ issue 31, amendment 3: C6a, a design that can see the claim
C6A_MIN_POWER = 0.5       # calibrated P(reproduced | partial ρ = −0.5) a design must reach to decide
C6A_BUDGET_MINUTES = 20.0  # training minutes C6a may take on the cpu profile (issue 33's 90-minute study)
C6A_LOSS_THRESHOLD = 0.56  # every one of the 21 committed sweep runs reached it within 15 epochs (highest: 0.558)


def c6a_design_check(power: float, runs: int, minutes_per_run: float, budget_minutes: float = C6A_BUDGET_MINUTES,
                     min_power: float = C6A_MIN_POWER) -> dict[str, Any]:
    """Whether a C6a design can decide here: calibrated power at ρ = −0.5 ≥ ``min_power`` and estimated
    training time runs × minutes_per_run ≤ ``budget_minutes``; the text gives the numbers either way."""
    minutes = runs * minutes_per_run
    testable = bool(power >= min_power and minutes <= budget_minutes)
    why = (f"power {100 * power:.0f} % at ρ = −0.5 (needs ≥ {100 * min_power:.0f} %), {runs} runs × "
           f"{minutes_per_run:.1f} min = {minutes:.0f} min of training (budget {budget_minutes:.0f} min)")
    return {"testable": testable, "minutes": minutes, "text": ("testable: " if testable else "not testable at this budget: ") + why}


def c6a_amended(acc: Mapping[str, float], gap: Mapping[str, float], design: Mapping[str, Any]) -> dict[str, Any]:
    """Amended C6a: the partial-ρ rule (:func:`c6a_rule`) decides only on a design that passed
    :func:`c6a_design_check`; otherwise the verdict is "not tested" at this budget (amendment 5: the budget
    was set knowing the runs' speed, so this is not the rule's inconclusive), and the rule's reading is
    shown beside (never deciding)."""
    reading = c6a_rule(acc, gap)
    verdict = reading if design["testable"] else Verdict.NOT_TESTED
    return {"C6a": verdict, "reading": reading, "design": design["text"],
            "outcome": str(verdict) if design["testable"] else "not tested at this budget"}


# ================================================================ issue 31, amendment 4: C7 that acts, equivalence, cost
C7_ACTS_SHARE = 0.5             # the middle arm's trace reduction must be at least half the full arm's ...
C7_ACTS_MIN_PCT = 5.0           # ... and at least 5 %
C7_EQUIVALENCE_MARGIN = 0.001   # secondary: middle − full HTR within ±0.1 pt


def c7_acts(middle: Mapping[str, float], full: Mapping[str, float], middle_vs_sgd: Mapping[str, float]) -> dict[str, Any]:
    """Amended C7 gate: the middle arm acts if its paired trace interval (middle − SGD) lies below 0 **and** its mean
    relative reduction (:func:`relative_trace_reduction`, %) is ≥ 5 % **and** ≥ half the full arm's."""
    m, f = middle["mean_pct"], full["mean_pct"]
    checks = {"below SGD": bool(np.isfinite(middle_vs_sgd["hi"]) and middle_vs_sgd["hi"] < 0),
              f"≥ {C7_ACTS_MIN_PCT:g} %": bool(np.isfinite(m) and m >= C7_ACTS_MIN_PCT),
              "≥ half the full arm's": bool(np.isfinite(m) and np.isfinite(f) and m >= C7_ACTS_SHARE * f)}
    failed = [k for k, ok in checks.items() if not ok]
    text = (f"middle arm lowers the final trace by {m:.1f} % (full arm {f:.1f} %): "
            + ("acts" if not failed else "does not act (fails: " + ", ".join(failed) + ")"))
    return {"acts": not failed, "checks": checks, "text": text}


def c7_equivalence_codes(lo: np.ndarray, hi: np.ndarray, margin: float = C7_EQUIVALENCE_MARGIN) -> np.ndarray:
    """Secondary C7 statement on the paired 95 % interval of (middle − full HTR) test accuracy: R (equivalent) if the
    interval lies inside (−margin, +margin), N (not equivalent) if it lies wholly outside, I otherwise."""
    lo, hi = np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
    return np.where((lo > -margin) & (hi < margin), R, np.where((lo > margin) | (hi < -margin), N, I))


def double_backward_path(layers: Sequence[str], penalised: Sequence[str]) -> dict[str, list[str]]:
    """Which layers the penalty's per-probe double backward passes through and which it skips.

    ``layers``: the weight layers in forward order (e.g. conv1, conv2, fc1, fc2, fc3); ``penalised``:
    the layers with a penalised tensor. The gradient of the penalised tensors, and its product with
    a probe, needs backpropagation from the loss down to the lowest penalised layer only; the layers
    below it are skipped (the final backward of γ·penalty reaches them once, as a plain backward).
    """
    unknown = sorted(set(penalised) - set(layers))
    if unknown or not penalised:
        raise ValueError(f"double_backward_path: penalised layers {unknown or 'none'} are not among {list(layers)}; "
                         "name penalised layers by their weight layer")
    lowest = min(layers.index(p) for p in penalised)
    return {"through": list(layers[lowest:]), "skipped": list(layers[:lowest])}


def c7_cost_line(layers: Sequence[str], penalised: Sequence[str], cost_ratio: float, param_share: float,
                 compute_share: float) -> str:
    """The cost line beside C7: the step ratio, the parameter and compute shares, and where the saving comes from."""
    path = double_backward_path(layers, penalised)
    skipped = ", ".join(path["skipped"]) or "no layer"
    return (f"penalty step middle / full {cost_ratio:.2f}; the middle set holds {100 * param_share:.0f} % of the "
            f"parameters but {100 * compute_share:.0f} % of the penalty's compute: its per-probe double backward runs "
            f"through {', '.join(path['through'])} and skips {skipped}, so the saving comes from not "
            "differentiating twice through those layers, not from penalising fewer parameters")


def c7_amended(acts: Mapping[str, Any], accuracy: Mapping[str, float], cost_ratio: float, gain: float | None,
               earlier_acts: Mapping[str, float]) -> dict[str, Any]:
    """Amended C7 for one middle rule: :func:`c7_rule` with the amended gate ``acts`` (:func:`c7_acts`) in place of
    "the trace interval lies below 0"; the secondary equivalence statement (:func:`c7_equivalence_codes`, never
    deciding) and the earlier rule's result (``earlier_acts``: the paired trace interval it gated on) beside."""
    stand_in = {"lo": -1.0, "hi": -1.0} if acts["acts"] else {"lo": np.nan, "hi": np.nan}
    out = dict(c7_rule(stand_in, accuracy, cost_ratio, gain))
    out["acts"] = "yes" if acts["acts"] else "no"
    out["acts_note"] = acts["text"]
    if not acts["acts"]:
        dose_fails = [k for k, ok in acts["checks"].items() if not ok and k != "below SGD"]
        if dose_fails:  # amendment 5: a dose that does not act is not tested, whatever C6b found
            out["accuracy"] = Verdict.NOT_TESTED
            out["accuracy_note"] = "not tested (dose): the middle arm does not act (amended gate: " + ", ".join(dose_fails) + ")"
        else:  # a large enough reduction whose interval reaches 0: the data, not the dose, leave it open
            out["accuracy"] = Verdict.INCONCLUSIVE
            out["accuracy_note"] = ("inconclusive: the middle arm's reduction is large enough but its trace interval "
                                    "reaches 0 (amended gate): cannot tell whether it acts")
        out["C7"] = combine((out["accuracy"], out["cost"]), "all_of")
    bounds = [accuracy["lo"], accuracy["hi"]]
    out["equivalence"] = ({R: "equivalent within ±0.1 pt", N: "not equivalent (outside ±0.1 pt)",
                           I: "undetermined"}[int(c7_equivalence_codes(*bounds))] if np.isfinite(bounds).all()
                          else "no interval")
    out["earlier rule"] = c7_rule(earlier_acts, accuracy, cost_ratio, gain)["C7"]
    return out
