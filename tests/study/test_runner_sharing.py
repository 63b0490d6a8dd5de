"""The runner shared by several processes, interrupted, or pointed at an unwritable --out."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htr_utils.study import report, reproduce
from htr_utils.study.report import write_verdict
from htr_utils.study.verdicts import VerdictResult

REPO = Path(__file__).resolve().parents[2]


def _notebooks(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    for name in ("00_a.ipynb", "01_b.ipynb"):
        (d / name).write_text("{}")
    return d


def test_ctrl_c_marks_the_running_notebook_interrupted_not_its_stale_verdict(tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    for name in ("00_a", "01_b"):
        write_verdict(out / name, "C1", VerdictResult("reproduced", "it held", {}), data="none", profile="smoke")
    report.write_report(out, {"00_a": 1.0, "01_b": 2.0}, profile="smoke")

    def run_notebook(nb, nb_out, profile, timeout=None, cwd=None):
        if nb.stem == "01_b":
            (nb_out / report.VERDICT_FILE).unlink()  # as the real one does before executing
            raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "run_notebook", run_notebook)
    code = reproduce.main(["--profile", "smoke", "--out", str(out), "--notebooks", str(_notebooks(tmp_path))])
    assert code == 130 and "01_b ... interrupted after" in capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in (out / "REPORT.md").read_text().splitlines()
            if line.startswith("| 0")}
    assert "**reproduced**" in rows["00_a"]
    assert "**interrupted**" in rows["01_b"] and "reproduced" not in rows["01_b"]
    assert json.loads((out / "timings.json").read_text())["01_b"]["status"] == "interrupted"


def test_an_unwritable_out_fails_at_once_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reproduce, "run_notebook", lambda *a, **k: pytest.fail("ran a notebook"))
    blocked = tmp_path / "a_file"
    blocked.write_text("")
    out = blocked / "out"  # cannot be created under a file
    with pytest.raises(SystemExit) as info:
        reproduce.main(["--profile", "smoke", "--out", str(out), "--notebooks", str(_notebooks(tmp_path))])
    assert info.value.code == 2 and f"--out {out} cannot be written" in capsys.readouterr().err
    if os.geteuid() != 0:  # root writes into read-only folders
        readonly = tmp_path / "ro"
        readonly.mkdir(mode=0o555)
        with pytest.raises(SystemExit):
            reproduce.main(["--profile", "smoke", "--out", str(readonly), "--notebooks", str(tmp_path / "notebooks")])


WRITER = """
import sys
from htr_utils.study.report import write_report
out, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    write_report(out, {f"{tag}_{i:03d}": float(i)}, profile="smoke")
"""


@pytest.mark.slow
def test_two_runners_sharing_one_out_lose_no_row(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), tag, "40"], env=env,
                              stderr=subprocess.PIPE, text=True) for tag in ("x", "y")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    timings = json.loads((tmp_path / "timings.json").read_text())
    assert sorted(timings) == sorted(f"{t}_{i:03d}" for t in "xy" for i in range(40))
    rows = [line for line in (tmp_path / "REPORT.md").read_text().splitlines() if line.startswith(("| x_", "| y_"))]
    assert len(rows) == 80  # the last report was written after every merge
    assert not list(tmp_path.glob(".*.tmp"))
