"""Each claim is written once, in claims.py, and each notebook shows and judges its own claim."""
import json
import re
from pathlib import Path

from htr_utils.study.claims import CLAIMS

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_every_claim_has_its_texts_and_notebook():
    assert list(CLAIMS) == ["C0", "C1", "C2", "C3", "C4", "C5", "C6a", "C6b", "C7"]
    for claim in CLAIMS.values():
        for text in (claim.summary, claim.statement, claim.paper_reports, claim.paper_summary, claim.rule):
            assert text.strip() and "DESIGN.md" not in text
        assert (NOTEBOOKS / f"{claim.notebook}.ipynb").is_file()
        assert "Verdict rule" in claim.card() and claim.rule in claim.card()


def test_notebooks_show_and_judge_their_own_claim_and_state_no_rule_of_their_own():
    for claim in CLAIMS.values():
        cells = json.loads((NOTEBOOKS / f"{claim.notebook}.ipynb").read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        markdown = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
        assert f'show_claim("{claim.id}")' in code and f'write_verdict(out_dir, "{claim.id}", result' in code
        assert "RULE =" not in code and "Verdict rule" not in markdown


def test_spectra_claims_state_the_issue_30_rules_with_the_earlier_rule_beside():
    """C1-C5: the amended rule decides; the earlier rule stays, labelled, saying the rule changed after the read."""
    for cid in ("C1", "C2", "C3", "C4", "C5"):
        rule = CLAIMS[cid].rule
        assert rule.startswith("**Amended after issue 30's referee read**"), cid
        assert "*Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read" in rule
        amended = rule[:rule.index("*Earlier rule*")]   # the amended rule comes first, with its calibrated rates
        assert re.search(r"false\s+reproduced", amended) and re.search(r"false\s+not\s+reproduced", amended), cid
    assert "LeNet-GELU is an extension" in CLAIMS["C2"].rule and "2 ln 6" in CLAIMS["C4"].rule
    assert "0.25 ≤ d_i ≤ 0.75" in CLAIMS["C4"].rule and "60 %" in CLAIMS["C1"].rule and "AR(1)" in CLAIMS["C5"].rule
