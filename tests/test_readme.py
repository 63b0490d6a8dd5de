"""README.md and docs/: short enough for a newcomer, no dead relative links, and the verdicts they state
are figures/cpu/REPORT.md's (parsed from both, so a rerun that changes a verdict fails here until the
pages follow)."""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REPORT = ROOT / "figures" / "cpu" / "REPORT.md"
TIMINGS = ROOT / "figures" / "cpu" / "timings.json"
README_LIMIT = 15_000  # characters (DESIGN.md: the README is for a newcomer)

LINK = re.compile(r"\]\(([^)\s]+)\)")                      # [text](target) and ![alt](target)
CODE = re.compile(r"```.*?```", re.S)                       # fenced code: no links, no tables
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)
# reproduce.py's line: "NN_name ... verdict in T" one at a time, "NN_name verdict in T" with --jobs
RUNNER_LINE = re.compile(r"^(\d\d_\w+)\s+(?:\.\.\. )?(.+?) in (\d+ min )?([\d.]+) s$", re.M)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


# ------------------------------------------------------------------------------------------- links

def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped (not '-' or '_'), spaces to '-'."""
    text = heading.strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {slug(h) for h in HEADING.findall(CODE.sub("", path.read_text(encoding="utf-8")))}


def broken_links(path: Path) -> list[str]:
    """Relative links of ``path`` whose file (or, for a Markdown target, heading anchor) does not exist."""
    bad = []
    for target in LINK.findall(CODE.sub("", path.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            bad.append(f"{target} (no file {dest})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no heading #{anchor} in {dest.name})")
    return bad


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8"))
    assert n <= README_LIMIT, f"README.md has {n} characters, over {README_LIMIT}: move detail to a page under docs/"


def test_readme_links_the_docs_pages():
    assert DOCS.is_dir() and list(DOCS.glob("*.md")), "docs/ holds no pages"
    text = README.read_text(encoding="utf-8")
    unlinked = [p.name for p in DOCS.glob("*.md") if f"docs/{p.name}" not in text]
    assert not unlinked, f"pages under docs/ the README does not link: {unlinked}"


@pytest.mark.parametrize("page", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(page):
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links {broken_links(page)}"


def test_link_check_finds_a_dead_link(tmp_path):
    (tmp_path / "there.md").write_text("# A heading\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[ok](there.md) [ok](there.md#a-heading) [web](https://example.org) "
                    "[gone](missing.md) [no anchor](there.md#nowhere)\n```\n[in code](ignored.md)\n```\n",
                    encoding="utf-8")
    assert [b.split(" ")[0] for b in broken_links(page)] == ["missing.md", "there.md#nowhere"]


def test_slug_follows_github():
    assert slug("The run grid: local against Dask (issue 15): `python -m benchmarks.grid_executors`") == \
        "the-run-grid-local-against-dask-issue-15-python--m-benchmarksgrid_executors"
    assert slug("Local or Dask on this 2-core CPU") == "local-or-dask-on-this-2-core-cpu"


# ----------------------------------------------------------------------------------------- verdicts

def cells(line: str) -> list[str]:
    """The cells of one Markdown table row; ``\\|`` inside a cell is text, not a separator."""
    parts = re.split(r"(?<!\\)\|", line.strip().strip("|")) if line.strip().endswith("|") else []
    return [p.strip() for p in parts]


def tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table outside code blocks, as rows keyed by the lower-cased header."""
    out, lines = [], CODE.sub("", text).splitlines()
    i = 0
    while i + 1 < len(lines):
        head, rule = cells(lines[i]), cells(lines[i + 1])
        if head and rule and len(rule) == len(head) and all(re.fullmatch(r":?-{3,}:?", c) for c in rule):
            rows, i = [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                row = cells(lines[i])
                assert len(row) == len(head), f"table row with {len(row)} cells under {len(head)} headers: {lines[i]}"
                rows.append(dict(zip((h.lower() for h in head), row)))
                i += 1
            out.append(rows)
        else:
            i += 1
    return out


def verdict_tables(text: str) -> list[list[dict[str, str]]]:
    return [t for t in tables(text) if t and {"notebook", "verdict"} <= set(t[0])]


def report_rows() -> dict[str, dict[str, str]]:
    """REPORT.md's table: notebook -> verdict (its bold words), claim id, across machines (yes / no / —)."""
    found = verdict_tables(REPORT.read_text(encoding="utf-8"))
    assert len(found) == 1, f"expected one verdict table in {REPORT}, found {len(found)}"
    rows = {}
    for r in found[0]:
        bold = re.match(r"\*\*(.+?)\*\*", r["verdict"])
        assert bold, f"REPORT.md: {r['notebook']}'s verdict cell has no bold verdict: {r['verdict'][:80]}"
        claim = re.match(r"(C\d+[a-z]?)\b", r["claim"])
        rows[r["notebook"]] = {"verdict": bold.group(1), "claim": claim.group(1) if claim else None,
                               "across machines": r["across machines"].split(":")[0].strip()}
    return rows


def page_rows(path: Path) -> list[list[dict[str, str]]]:
    return verdict_tables(path.read_text(encoding="utf-8"))


def test_report_table_parses():
    rows = report_rows()
    assert len(rows) >= 9 and all(r["verdict"] for r in rows.values())


def test_readme_verdicts_are_the_reports():
    report = report_rows()
    found = page_rows(README)
    assert len(found) == 1, f"the README should hold one results table (notebook | claim | verdict ...), found {len(found)}"
    readme = {r["notebook"]: r for r in found[0]}
    assert list(readme) == list(report), f"README's notebooks {list(readme)} are not REPORT.md's {list(report)}"
    for nb, r in readme.items():
        assert r["verdict"].strip("*") == report[nb]["verdict"], \
            f"{nb}: README says {r['verdict']!r}, REPORT.md says {report[nb]['verdict']!r}"
        assert r.get("across machines", "").strip("*") == report[nb]["across machines"], \
            f"{nb}: README's 'across machines' {r.get('across machines')!r}, REPORT.md's {report[nb]['across machines']!r}"
        if report[nb]["claim"]:
            assert r["claim"].split()[0] == report[nb]["claim"], f"{nb}: README names claim {r['claim'].split()[0]}"


@pytest.mark.parametrize("page", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_docs_verdicts_are_the_reports(page):
    """Any table of a docs page with a notebook column and a verdict or 'across machines' column."""
    report = report_rows()
    for table in tables(page.read_text(encoding="utf-8")):
        for r in (t for t in table if "notebook" in t):
            nb = r["notebook"]
            assert nb in report or "verdict" not in r and "across machines" not in r, f"{page.name}: {nb} not in REPORT.md"
            for column in ("verdict", "across machines"):
                if column in r:
                    said = r[column].split()[0].strip("*") if column != "verdict" else r[column].strip("*")
                    assert said == report[nb][column], f"{page.name}, {nb}: {column} {said!r}, REPORT.md's {report[nb][column]!r}"


def test_readme_runner_lines_are_the_committed_run():
    """The example of what `make reproduce` prints: each line's verdict is REPORT.md's and its time is
    timings.json's, and every notebook that ran there has its line."""
    report, timings = report_rows(), json.loads(TIMINGS.read_text(encoding="utf-8"))
    lines = RUNNER_LINE.findall(README.read_text(encoding="utf-8"))
    assert lines, "README shows no line of the runner's output"
    ran = [nb for nb, t in timings.items() if isinstance(t, (int, float)) or t.get("status") == "ok"]
    assert [nb for nb, *_ in lines] == ran, f"README's runner lines {[nb for nb, *_ in lines]}, timings.json's {ran}"
    for nb, verdict, minutes, seconds in lines:
        assert verdict == report[nb]["verdict"], f"{nb}: README prints {verdict!r}, REPORT.md says {report[nb]['verdict']!r}"
        wall = timings[nb] if isinstance(timings[nb], (int, float)) else timings[nb]["wall_s"]
        shown = (int(minutes.split()[0]) * 60 if minutes else 0) + float(seconds)
        assert abs(shown - wall) <= 0.05 + 1e-9, f"{nb}: README prints {shown} s, timings.json has {wall:.2f} s"
