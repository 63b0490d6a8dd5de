"""Each claim is written once, in claims.py, and each notebook shows and judges its own claim."""
import json
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
