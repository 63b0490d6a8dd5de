"""Verdicts: an enum, one way to combine several, and the result a claim's rule returns."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Verdict(str, Enum):
    REPRODUCED = "reproduced"
    NOT_REPRODUCED = "not reproduced"
    INCONCLUSIVE = "inconclusive"
    # the rule could not be applied as designed: the treatment does not act, or the design does not fit the
    # budget; known before the result, so it is not the rule's "inconclusive" (PROTOCOL, amendment 5)
    NOT_TESTED = "not tested"

    def __str__(self) -> str:
        return self.value

    @classmethod
    def from_counts(cls, passed: int, total: int) -> "Verdict":
        """Reproduced if all of ``total`` parts pass, not reproduced if none does, else (or with none) inconclusive."""
        if total and passed == total:
            return cls.REPRODUCED
        if total and passed == 0:
            return cls.NOT_REPRODUCED
        return cls.INCONCLUSIVE


COMBINATIONS = ("every", "all_of", "any_of")


def combine(parts: Iterable[Verdict | str], how: str = "every") -> Verdict:
    """Combine several verdicts into one.

    - ``"every"`` (unanimity): reproduced if every part is, not reproduced if every part is, else
      inconclusive — e.g. the same claim judged on several studies;
    - ``"all_of"`` (conjunction): reproduced if every part is, not reproduced if any part is, else
      inconclusive — e.g. a claim with an accuracy half and a cost half;
    - ``"any_of"`` (disjunction): reproduced if any part is, not reproduced if every part is, else
      inconclusive — e.g. several operationalisations of which one suffices.

    "Not tested" parts: every part not tested gives not tested; under ``"all_of"`` a not-tested part makes
    the whole not tested unless another part is not reproduced; otherwise a not-tested part counts as
    inconclusive. No parts gives inconclusive.
    """
    if how not in COMBINATIONS:
        raise ValueError(f"unknown combination {how!r}; choose one of {COMBINATIONS}")
    parts = [Verdict(p) for p in parts]
    if not parts:
        return Verdict.INCONCLUSIVE
    if all(p is Verdict.NOT_TESTED for p in parts):
        return Verdict.NOT_TESTED
    yes = [p is Verdict.REPRODUCED for p in parts]
    no = [p is Verdict.NOT_REPRODUCED for p in parts]
    if all(yes) or (how == "any_of" and any(yes)):
        return Verdict.REPRODUCED
    if all(no) or (how == "all_of" and any(no)):
        return Verdict.NOT_REPRODUCED
    if how == "all_of" and any(p is Verdict.NOT_TESTED for p in parts):
        return Verdict.NOT_TESTED
    return Verdict.INCONCLUSIVE


@dataclass(frozen=True)
class VerdictResult:
    """What a claim's rule returns: the verdict, the measured text that goes beside it, and the numbers behind it."""
    verdict: Verdict
    measured: str
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        if not self.measured.strip():
            raise ValueError("a verdict needs a non-empty measured text")

    def __str__(self) -> str:
        return f"{self.verdict}: {self.measured}"
