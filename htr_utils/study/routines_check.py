"""Notebook 00's verdict: every routine agrees with dense linear algebra (rule: claims.py, C0)."""
from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from .verdicts import Verdict, VerdictResult


def c0_verdict(errors: pd.DataFrame, traces: Mapping[str, Mapping[str, float]]) -> VerdictResult:
    """Reproduced if every check passes. ``errors``: one row per check (group, check, measured, tolerance, passed)."""
    passed = bool(errors["passed"].all())
    worst = errors.groupby("group")["measured"].max()
    measured = (f"{int(errors['passed'].sum())}/{len(errors)} checks pass: products rel. error ≤ {worst['products']:.1e}; "
                f"Lanczos eigenvalues within {worst['lanczos']:.1e}·‖Hess‖; top-10 within {worst['top']:.1e}·‖A‖; "
                f"Hutchinson |z| ≤ {worst['hutchinson_z']:.2f}; SLQ W1 ≤ {worst['slq_w1']:.2%} of the range")
    return VerdictResult(Verdict.REPRODUCED if passed else Verdict.NOT_REPRODUCED, measured,
                         {"checks": errors.to_dict("records"), "traces": dict(traces)})
