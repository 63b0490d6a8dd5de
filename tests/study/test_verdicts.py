"""The Verdict enum and the three ways of combining verdicts, branch by branch."""
import pytest

from htr_utils.study.verdicts import Verdict, VerdictResult, combine

R, N, I = Verdict.REPRODUCED, Verdict.NOT_REPRODUCED, Verdict.INCONCLUSIVE


@pytest.mark.parametrize("parts, every, all_of, any_of", [
    ([R, R], R, R, R),
    ([N, N], N, N, N),
    ([R, N], I, N, R),
    ([R, I], I, I, R),
    ([N, I], I, N, I),
    ([I, I], I, I, I),
    ([], I, I, I),
])
def test_combine(parts, every, all_of, any_of):
    assert (combine(parts), combine(parts, "all_of"), combine(parts, "any_of")) == (every, all_of, any_of)


def test_verdicts_are_strings_and_strict():
    assert combine(["reproduced", "reproduced"]) is R and f"{N}" == "not reproduced" and N == "not reproduced"
    assert Verdict.from_counts(3, 3) is R and Verdict.from_counts(0, 3) is N and Verdict.from_counts(1, 3) is I
    assert Verdict.from_counts(0, 0) is I
    with pytest.raises(ValueError):
        combine(["yes"])
    with pytest.raises(ValueError, match="unknown combination"):
        combine([R], "majority")
    assert str(VerdictResult("inconclusive", "2/4 runs")) == "inconclusive: 2/4 runs"
