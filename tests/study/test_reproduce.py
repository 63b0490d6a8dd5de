"""The papermill runner: order, outputs, environment, failures, REPORT.md, CLI errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from htr_utils.study import reproduce

pytestmark = pytest.mark.slow  # runs notebooks through papermill

GOOD = """
import os
from pathlib import Path
THREADS = os.environ.get("OMP_NUM_THREADS")
from htr_utils.study.outputs import output_dir
from htr_utils.study.profiles import profile_name
from htr_utils.study.report import write_verdict
from htr_utils.study.verdicts import VerdictResult
profile = profile_name(profile)
out_dir = output_dir("00_good", profile)
write_verdict(out_dir, "C0", VerdictResult("reproduced", "it held", {"cwd": str(Path.cwd()),
              "env_out": os.environ.get("HTR_OUT_DIR"), "profile": profile, "threads": THREADS}), data="none")
"""
BAD = 'x = 1\nraise RuntimeError("boom from the bad notebook")'


def _notebook(path: Path, *sources: str) -> None:
    params = new_code_cell("profile = None")
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params] + [new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture
def notebooks(tmp_path: Path) -> Path:
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(d / "00_good.ipynb", GOOD)
    _notebook(d / "01_bad.ipynb", BAD)
    (d / "helper.ipynb").write_text("not a numbered notebook, ignored")
    return d


def test_discover_and_select(notebooks: Path) -> None:
    found = reproduce.discover(notebooks)
    assert [p.name for p in found] == ["00_good.ipynb", "01_bad.ipynb"]
    assert [p.name for p in reproduce.select(found, ["1"])] == ["01_bad.ipynb"]
    assert [p.name for p in reproduce.select(found, ["01", "00"])] == ["00_good.ipynb", "01_bad.ipynb"]
    assert reproduce.select(found, None) == found
    with pytest.raises(ValueError, match="99"):
        reproduce.select(found, ["99"])


def test_only_unknown_number_is_a_clear_error(notebooks: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--profile", "smoke", "--notebooks", str(notebooks), "--only", "99"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "99" in err and "available: 00, 01" in err


def test_unknown_profile_is_rejected(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["--profile", "huge"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_run_writes_outputs_report_and_fails_on_error(notebooks: Path, tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    monkeypatch.delenv("HTR_OUT_DIR", raising=False)
    monkeypatch.setenv("HTR_PROFILE", "paper")  # the runner's --profile must win, and be restored after
    out = tmp_path / "out"
    stale = out / "01_bad" / "verdict.json"     # a verdict left by an earlier, successful run
    stale.parent.mkdir(parents=True)
    stale.write_text(json.dumps({"verdict": "reproduced", "claim": "stale"}))

    code = reproduce.main(["--profile", "smoke", "--notebooks", str(notebooks), "--out", str(out)])
    assert code == 1
    assert os.environ.get("HTR_OUT_DIR") is None and os.environ["HTR_PROFILE"] == "paper"

    # the good notebook: executed copy, verdict written where the runner said, run from notebooks/
    good = out / "00_good"
    assert (good / "00_good.ipynb").is_file()
    verdict = json.loads((good / "verdict.json").read_text())
    assert verdict["verdict"] == "reproduced" and verdict["profile"] == "smoke"
    assert {k: verdict["extra"][k] for k in ("cwd", "env_out", "profile")} == \
        {"cwd": str(notebooks.resolve()), "env_out": str(good.resolve()), "profile": "smoke"}
    executed = nbformat.read(good / "00_good.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)

    # the bad notebook: partial executed copy kept, stale verdict removed
    partial = out / "01_bad" / "01_bad.ipynb"
    assert partial.is_file()
    assert not stale.exists()
    executed = nbformat.read(partial, as_version=4)
    assert any(o.get("ename") == "RuntimeError" for c in executed.cells if c.cell_type == "code"
               for o in c.get("outputs", []))

    report = (out / "REPORT.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in report.splitlines() if line.startswith("| 0")}
    assert set(rows) == {"00_good", "01_bad"}
    assert "**reproduced**" in rows["00_good"] and "C0: the routines agree" in rows["00_good"]
    assert "FAILED" in rows["01_bad"] and "boom from the bad notebook" in rows["01_bad"]
    assert "stale" not in rows["01_bad"]
    assert "profile `smoke`" in report
    timings = json.loads((out / "timings.json").read_text())
    assert timings["00_good"]["status"] == "ok" and timings["01_bad"]["status"] == "failed"
    assert timings["00_good"]["wall_s"] > 0

    captured = capsys.readouterr()
    lines = captured.out.splitlines()  # one line per notebook: name, verdict, wall time
    assert any(line.startswith("00_good ... reproduced in ") for line in lines)
    assert any(line.startswith("01_bad  ... FAILED in ") and line.endswith("boom from the bad notebook")
               for line in lines)
    assert str(partial) in captured.err and "boom from the bad notebook" in captured.err


def test_console_shows_one_line_per_notebook_and_no_kernel_transport_warning(tmp_path: Path) -> None:
    """The runner as a person runs it: its console has the notebook's line and no third-party warnings,
    while whatever a kernel writes to its own stderr (here a stand-in for a real error) still shows."""
    d = tmp_path / "notebooks"
    d.mkdir()
    _notebook(d / "00_good.ipynb", GOOD, 'os.write(2, b"a real error on the kernel\'s stderr\\n")')
    root = Path(reproduce.__file__).resolve().parents[2]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    env.pop("HTR_PROFILE", None)
    done = subprocess.run([sys.executable, "-m", "htr_utils.study.reproduce", "--profile", "smoke",
                           "--notebooks", str(d), "--out", str(tmp_path / "out"), "--only", "00"],
                          capture_output=True, text=True, env=env, timeout=120)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console
    assert re.search(r"^00_good \.\.\. reproduced in \d+\.\d s$", done.stdout, re.MULTILINE), console
    assert "without encryption" not in console and "WARNING" not in console, console
    assert "a real error on the kernel's stderr" in done.stderr


def test_jobs_run_notebooks_at_once_each_with_its_own_environment(notebooks: Path, tmp_path: Path, capsys) -> None:
    """--jobs 2: each notebook's kernel sees its own HTR_OUT_DIR (environments are per process), failures are
    reported as in the serial run, and the report's notebooks' time is the elapsed time of the run."""
    _notebook(notebooks / "02_good.ipynb", GOOD.replace('"00_good"', '"02_good"'))
    out = tmp_path / "out"
    code = reproduce.main(["--profile", "smoke", "--notebooks", str(notebooks), "--out", str(out), "--jobs", "2"])
    assert code == 1
    for name in ("00_good", "02_good"):
        verdict = json.loads((out / name / "verdict.json").read_text())
        assert verdict["extra"]["env_out"] == str((out / name).resolve()) and verdict["profile"] == "smoke"
        assert verdict["extra"]["threads"] == str(max(1, (os.cpu_count() or 1) // 2))  # cores shared out
    report = (out / "REPORT.md").read_text()
    assert "boom from the bad notebook" in report and "(elapsed; the notebooks' own times add up to" in report
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("00_good ... reproduced in ") for line in lines)  # the serial run's format
    assert any(line.startswith("01_bad  ... FAILED in ") and line.endswith("boom from the bad notebook") for line in lines)
    with pytest.raises(SystemExit):
        reproduce.main(["--profile", "smoke", "--notebooks", str(notebooks), "--out", str(out), "--jobs", "0"])
