"""The primary verdict rules of C6a, C6b and C7 (PROTOCOL.md), on numbers only, vectorised.

Each rule has one implementation, ``*_codes``, that works on arrays of intervals and returns
verdict codes (``R`` reproduced, ``N`` not reproduced, ``I`` inconclusive). The notebooks apply it
to the measured intervals through the scalar wrappers, and :mod:`htr_utils.study.calibration`
applies the very same function to simulated intervals to get the rule's error rates.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .verdicts import Verdict

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
    from .verdicts import combine
    return {"acts": "yes" if acted else "no", "accuracy": acc, "accuracy_note": why, "cost": cost,
            "C7": combine((acc, cost), "all_of")}


def c6a_rule(acc: Mapping[str, float], gap: Mapping[str, float]) -> Verdict:
    """:func:`c6a_codes` on the measured partial-ρ intervals (dicts with ``lo``/``hi``)."""
    bounds = [acc["lo"], acc["hi"], gap["lo"], gap["hi"]]
    if not np.isfinite(bounds).all():
        return Verdict.INCONCLUSIVE
    return verdict_of(c6a_codes(*bounds))
