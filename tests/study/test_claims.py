"""Each claim is written once, in claims.py, and each notebook shows and judges its own claim."""
import json
import re
from pathlib import Path

from htr_utils.study.claims import CLAIMS

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def test_every_claim_has_its_texts_and_notebook():
    assert list(CLAIMS) == ["C0", "C1", "C2", "C3", "C4", "C5", "C6a", "C6b", "C7"]
    for claim in CLAIMS.values():
        for text in (claim.summary, claim.statement, claim.paper_reports, claim.paper_summary, claim.rule, claim.rates):
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


def test_spectra_claims_state_the_current_amendment_first_and_superseded_rules_together():
    """C1-C5: the latest amendment (S1-S4, C4 amendment 6) decides and comes first with its calibrated rates; the
    superseded issue-30 rule and the earlier rules follow together under one heading, the rule change said."""
    for cid in ("C1", "C2", "C3", "C4", "C5"):
        rule = CLAIMS[cid].rule
        assert rule.startswith("**Current rule: PROTOCOL.md"), cid
        assert rule.count("**Superseded rules**") == 1, cid
        current, superseded = rule.split("**Superseded rules**")
        assert re.search(r"false\s+reproduced", current) and re.search(r"false\s+not\s+reproduced", current), cid
        assert "power" in current and "Earlier rule" not in current and "*Superseded rule* (replaced by" in superseded
        assert "*Earlier rule* (PROTOCOL.md before issue 30; the rule changed after issue 30's referee read" in superseded
    c1, c2, c4, c5 = (CLAIMS[c].rule.split("**Superseded rules**")[0] for c in ("C1", "C2", "C4", "C5"))
    assert "λ_C+1(G_within)" in c1 and "k_cls > 2C" not in c1.replace('"k_cls > 2C" branch is dropped', "")
    assert "LeNet-GELU is an extension" in c2 and "uncontrolled" in c2 and "control that could pass" not in c2
    assert "2 ln 3" in c4 and "2 ln 6" not in c4 and "underpowered" in c4 and "residual sd" in c4
    assert "2 ln 6" in CLAIMS["C4"].rule  # amendment 5 stays, superseded
    assert "0.25 ≤ d_i ≤ 0.75" in c4 and "60 %" in c1 and "AR(1)" in c5 and "0.05 / 4" in c5


def test_regularisation_claims_state_the_current_amendments_first():
    for cid, amendment in (("C6a", "amendment 3"), ("C6b", "amendments 1–2"), ("C7", "amendment 4")):
        rule = CLAIMS[cid].rule
        assert rule.startswith("**Current rule: PROTOCOL.md regularisation " + amendment), cid
        current, superseded = rule.split("**Superseded rules**")
        assert "amendment 5" in current and "*Earlier rule*" in superseded and "Earlier rule" not in current, cid


def test_every_claim_states_its_calibrated_rates_in_one_line():
    for claim in CLAIMS.values():
        rates = claim.rates
        assert rates.strip() and "\n" not in rates, claim.id
        assert all(word in rates for word in ("false R", "false N", "power")), claim.id
        assert rates in claim.card()
    assert "not calibrated" in CLAIMS["C0"].rates and "post hoc" in CLAIMS["C3"].rates
    assert "never calibrated" in CLAIMS["C3"].rates and "never run" in CLAIMS["C6a"].rates
