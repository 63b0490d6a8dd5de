"""Verdicts, REPORT.md, the notebooks' output helpers and the shared plots."""
from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from htr_utils.study import outputs, profiles, report
from htr_utils.study.claims import CLAIMS
from htr_utils.study.verdicts import VerdictResult

matplotlib.use("Agg")


def _verdict(out: Path, verdict: str = "reproduced", claim_id: str = "C1", measured: str = "9 outliers",
             extra: dict | None = None, data: str = "FashionMNIST, LeNet", profile: str | None = None) -> Path:
    return report.write_verdict(out, claim_id, VerdictResult(verdict, measured, extra or {}), data, profile)


# --------------------------------------------------------------------------- verdicts


def test_write_verdict_fields_and_json_safety(tmp_path: Path) -> None:
    path = _verdict(tmp_path / "01_full_spectrum", extra={"top": np.array([3.0, 2.0]), "n": np.int64(4),
                                                          "nan": float("nan"), "ok": np.bool_(True)},
                    profile="cpu")
    assert path == tmp_path / "01_full_spectrum" / "verdict.json"
    rec = json.loads(path.read_text())
    assert rec["notebook"] == "01_full_spectrum" and rec["verdict"] == "reproduced" and rec["profile"] == "cpu"
    for key in ("claim", "paper_reports", "measured", "rule", "rates", "data", "written"):
        assert rec[key]
    assert rec["extra"] == {"top": [3.0, 2.0], "n": 4, "nan": None, "ok": True}


@pytest.mark.parametrize("bad", ["yes", "Reproduced", "", None])
def test_write_verdict_rejects_unknown_verdicts(tmp_path: Path, bad) -> None:
    with pytest.raises(ValueError, match="not a valid Verdict"):
        _verdict(tmp_path / "x", verdict=bad)
    assert not (tmp_path / "x" / "verdict.json").exists()


def test_write_verdict_requires_a_known_claim_and_the_texts(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown claim 'C9'"):
        _verdict(tmp_path / "x", claim_id="C9")
    with pytest.raises(ValueError, match="data must name"):
        _verdict(tmp_path / "x", data="  ")
    with pytest.raises(ValueError, match="non-empty measured"):
        _verdict(tmp_path / "x", measured=" ")
    rec = json.loads(_verdict(tmp_path / "y", claim_id="C4").read_text())
    assert rec["rule"] == CLAIMS["C4"].rule and rec["claim"] == CLAIMS["C4"].summary  # the rule is written once
    assert rec["rates"] == CLAIMS["C4"].rates


def test_profile_defaults_to_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HTR_PROFILE", "smoke")
    assert json.loads(_verdict(tmp_path / "a").read_text())["profile"] == "smoke"


# --------------------------------------------------------------------------- REPORT.md


def test_report_table(tmp_path: Path) -> None:
    _verdict(tmp_path / "01_full_spectrum", profile="cpu")
    _verdict(tmp_path / "04_layer_vs_full", verdict="not reproduced", claim_id="C4",
             measured="minimum at\nthe | last layer", profile="cpu")
    (tmp_path / "00_routines_check").mkdir()  # ran, no verdict
    path = report.write_report(tmp_path, {"00_routines_check": 12.0, "01_full_spectrum": 30.5,
                                          "04_layer_vs_full": 300.0, "05_trace": 1.0},
                               failed={"05_trace": "cell 3: RuntimeError: out of memory"})
    assert path == tmp_path / "REPORT.md"
    text = path.read_text()
    assert "profile `cpu`" in text and "torch" in text and "CPUs" in text
    from htr_utils.study.runs import environment
    env = environment("cpu")  # the facts that change numbers (issue: same verdicts on any machine)
    assert f"{env['cpu_model']}, torch CPU capability {env['cpu_capability']}, {env['threads']} threads" in text
    lines = [line for line in text.splitlines() if line.startswith("| 0")]
    assert [line.split("|")[1].strip() for line in lines] == ["00_routines_check", "01_full_spectrum",
                                                              "04_layer_vs_full", "05_trace"]
    assert all(line.count(" | ") == 8 for line in lines)  # 9 cells, pipes in texts escaped
    assert "no verdict" in lines[0] and "12.0 s" in lines[0]
    cells = [c.strip() for c in lines[1].split(" | ")]
    assert cells[1:] == [f"C1: {CLAIMS['C1'].summary}", CLAIMS["C1"].paper_summary, "9 outliers", "**reproduced**",
                         CLAIMS["C1"].rates, "not measured", "FashionMNIST, LeNet", "30.5 s |"]
    assert "minimum at the \\| last layer" in lines[2]
    assert "**not reproduced**" in lines[2] and "5.0 min" in lines[2]
    assert "**FAILED**: cell 3: RuntimeError: out of memory" in lines[3]


def test_report_has_a_rates_column_between_verdict_and_across_machines_filled_for_every_claim(tmp_path: Path) -> None:
    """Every claim's row shows its calibrated rates (``Claim.rates``) right after the verdict; a verdict written
    before the field existed (no ``rates`` key) still gets its claim's text; a row without a verdict shows —."""
    for i, cid in enumerate(CLAIMS):
        _verdict(tmp_path / f"0{i}_{cid}", claim_id=cid, profile="cpu")
    old = tmp_path / "01_C1" / "verdict.json"
    rec = json.loads(old.read_text())
    del rec["rates"]
    old.write_text(json.dumps(rec))
    (tmp_path / "09_none").mkdir()
    text = report.write_report(tmp_path, {f"0{i}_{cid}": 1.0 for i, cid in enumerate(CLAIMS)} | {"09_none": 1.0}
                               ).read_text()
    (header,) = [line for line in text.splitlines() if line.startswith("| notebook |")]
    head = [c.strip() for c in header.strip("|").split("|")]
    assert head[4:7] == ["verdict", "calibrated rates (false R / false N / power)", "across machines"]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip().strip("|").split(" | ")]
            for line in text.splitlines() if line.startswith("| 0")}
    for i, cid in enumerate(CLAIMS):
        cell = rows[f"0{i}_{cid}"][5]
        assert cell == CLAIMS[cid].rates.replace("|", "\\|") and "false R" in cell and "power" in cell, cid
    assert rows["09_none"][5] == "—"


def test_report_shows_each_verdicts_stability_across_machines(tmp_path: Path) -> None:
    _verdict(tmp_path / "01_full_spectrum", profile="cpu")
    _verdict(tmp_path / "07_trace_regularisation", verdict="not reproduced", claim_id="C6b", profile="cpu")
    (tmp_path / report.STABILITY_FILE).write_text(json.dumps(
        {"07_trace_regularisation": {"stable": "yes", "why": "upper bound + spread 0.05 < margin 0.1 pts"}}))
    text = report.write_report(tmp_path, {"01_full_spectrum": 1.0, "07_trace_regularisation": 2.0}).read_text()
    assert "| across machines |" in text
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split(" | ")] for line in text.splitlines()
            if line.startswith("| 0")}
    assert rows["07_trace_regularisation"][6] == "yes: upper bound + spread 0.05 < margin 0.1 pts"
    assert rows["01_full_spectrum"][6] == "not measured"
    (tmp_path / report.STABILITY_FILE).write_text("{not json")
    text = report.write_report(tmp_path).read_text()
    assert "unreadable" in text  # a damaged file is shown, not fatal


def test_a_pending_notebook_shows_why_and_no_stale_verdict(tmp_path: Path) -> None:
    _verdict(tmp_path / "04_layer_vs_full", verdict="not reproduced", claim_id="C4", measured="old rule", profile="cpu")
    text = report.write_report(tmp_path, {"04_layer_vs_full": {"wall_s": None, "status": "pending",
                                                               "error": "its readings need a GPU"}}).read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("| 04")]
    assert "**not run yet**: its readings need a GPU" in line and "old rule" not in line and "not reproduced" not in line
    # once notebook 04 runs (issue 30: its verdict from the new readings) its row is reported like any other
    _verdict(tmp_path / "04_layer_vs_full", verdict="inconclusive", claim_id="C4", measured="depth regression",
             profile="cpu")
    text = report.write_report(tmp_path, {"04_layer_vs_full": 700.0}).read_text()
    (line,) = [line for line in text.splitlines() if line.startswith("| 04")]
    assert "**inconclusive**" in line and "depth regression" in line and "not run yet" not in line
    assert json.loads((tmp_path / report.TIMINGS_FILE).read_text())["04_layer_vs_full"] == {"wall_s": 700.0,
                                                                                           "status": "ok"}


def test_report_keeps_earlier_timings_and_collects(tmp_path: Path) -> None:
    _verdict(tmp_path / "01_a")
    _verdict(tmp_path / "02_b")
    report.write_report(tmp_path, {"01_a": 5.0, "02_b": 7.0}, profile="smoke")
    text = report.write_report(tmp_path, {"02_b": 9.0}, profile="smoke").read_text()  # a rerun of 02 only
    assert "5.0 s" in text and "9.0 s" in text and "7.0 s" not in text
    assert set(report.collect_verdicts(tmp_path)) == {"01_a", "02_b"}



def test_a_rewrite_that_runs_no_notebook_keeps_the_machine_lines(tmp_path: Path) -> None:
    """``benchmarks.stability assess`` rewrites the report on another machine: the header must still name the
    machine that ran the notebooks; a new run stamps the current one."""
    _verdict(tmp_path / "01_a")
    report.write_report(tmp_path, {"01_a": 5.0}, profile="smoke")
    path = tmp_path / report.REPORT_FILE
    header = ["- Date: 2020-01-01T00:00:00", "- Machine: the committed run's host, 2 threads", "- Software: old"]
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        for h in header:
            if line.startswith(h[:h.index(":") + 2]):
                lines[i] = h
    path.write_text("\n".join(lines) + "\n")
    kept = report.write_report(tmp_path).read_text()
    assert all(h in kept.splitlines() for h in header)
    fresh = report.write_report(tmp_path, {"01_a": 6.0}, profile="smoke").read_text()
    assert not any(h in fresh.splitlines() for h in header)
    assert f"{os.cpu_count()} CPUs" in fresh

# --------------------------------------------------------------------------- notebook helpers


def test_profile_name(monkeypatch) -> None:
    monkeypatch.delenv("HTR_PROFILE", raising=False)
    assert profiles.profile_name() == "cpu"
    monkeypatch.setenv("HTR_PROFILE", "smoke")
    assert profiles.profile_name() == "smoke"
    assert profiles.profile_name("paper") == "paper"  # the papermill parameter wins
    with pytest.raises(ValueError, match="unknown profile"):
        profiles.profile_name("huge")


def test_output_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("HTR_OUT_DIR", raising=False)
    root = outputs.repo_root()
    assert (root / "pyproject.toml").is_file() and outputs.data_root() == root / "data"
    monkeypatch.chdir(tmp_path)  # resolution does not depend on the working directory
    assert outputs.output_dir("01_x", "cpu", create=False) == root / "figures" / "cpu" / "01_x"
    assert outputs.output_dir("01_x", "paper", create=False) == root / "figures" / "paper" / "01_x"
    assert outputs.output_dir("01_x", "smoke", create=False) == root / "build" / "smoke" / "01_x"
    monkeypatch.setenv("HTR_OUT_DIR", str(tmp_path / "runner" / "01_x"))
    assert outputs.output_dir("01_x", "cpu", create=False) == tmp_path / "runner" / "01_x"
    assert outputs.output_dir("01_x", "cpu", out=tmp_path / "mine", create=False) == tmp_path / "mine"


def test_save_helpers(tmp_path: Path) -> None:
    import matplotlib.pyplot as plt
    import pandas as pd
    import torch

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    png, pdf = outputs.save_figure(fig, tmp_path / "o", "fig")
    plt.close(fig)
    assert png.read_bytes()[:4] == b"\x89PNG" and pdf.read_bytes()[:4] == b"%PDF"
    csv = outputs.save_table(pd.DataFrame({"a": [1, 2], "b": [0.5, 0.25]}), tmp_path / "o", "t")
    assert csv.read_text().splitlines() == ["a,b", "1,0.5", "2,0.25"]
    named = pd.DataFrame({"v": [1.0]}, index=pd.Index(["fc1"], name="layer"))
    assert outputs.save_table(named, tmp_path / "o", "n").read_text().splitlines()[0] == "layer,v"
    js = outputs.save_json({"t": torch.tensor([1.0, 2.0]), "x": np.float32(0.5), "p": tmp_path,
                             "inf": np.inf}, tmp_path / "o", "j")
    assert json.loads(js.read_text()) == {"t": [1.0, 2.0], "x": 0.5, "p": str(tmp_path), "inf": None}


# --------------------------------------------------------------------------- plots


def test_plots_draw() -> None:
    import matplotlib.pyplot as plt

    from htr_utils import exact_spectrum_density
    from htr_utils.study import plotting

    plotting.set_style()
    ev = np.concatenate([np.linspace(-0.1, 0.1, 50), [2.0, 3.0]])
    dens = exact_spectrum_density(ev)
    fig, axes = plt.subplots(1, 3)
    plotting.plot_density(axes[0], dens, "full")
    assert axes[0].get_yscale() == "log"
    plotting.plot_spectrum_with_exact(axes[1], dens, ev)
    plotting.plot_top_eigenvalues(axes[2], ev[::-1][:6], C=2)
    assert any("C = 2" in t.get_text() for t in axes[2].texts)
    plt.close(fig)
    fig, grid = plotting.plot_layer_grid({"conv1": dens, "fc1": {"Hess_l": dens, "G_l": dens},
                                          "fc2": dens, "fc3": dens}, ncols=3)
    assert grid.shape == (2, 3) and not grid[1, 2].get_visible()
    plt.close(fig)
    fig, ax = plotting.plot_heatmap(np.eye(2), ["a", "b"], ["x", "y"], title="t")
    plt.close(fig)
    fig, ax = plt.subplots()
    ax.plot([1, 10, 100], [0.5, 5, 50])
    plotting.log_axis(ax, "x")
    plotting.log_axis(ax, "y")
    assert ax.get_xscale() == ax.get_yscale() == "log"
    assert ax.yaxis.get_major_formatter()(2.0, 0) == "2"  # plain labels, not 2×10⁰
    plt.close(fig)


def test_clean_notebook_strips_every_output(tmp_path: Path) -> None:
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

    a = new_code_cell("x = 1\nprint(x)", execution_count=3)
    a.outputs = [new_output("stream", name="stdout", text="1\n")]
    a.metadata["papermill"] = {"duration": 0.1}
    b = new_code_cell('assert verdict == "reproduced"', execution_count=4)
    b.outputs = [new_output("execute_result", data={"text/plain": "True"}, execution_count=4)]
    path = tmp_path / "00_t.ipynb"
    nb = new_notebook(cells=[new_markdown_cell("# t"), a, b])
    nb.metadata["papermill"] = {"parameters": {}}
    nbformat.write(nb, path)
    outputs.clean_notebook(path)
    nb = nbformat.read(path, as_version=4)
    assert [c.get("outputs", []) for c in nb.cells[1:]] == [[], []]
    assert [c.execution_count for c in nb.cells[1:]] == [None, None]
    assert "papermill" not in nb.metadata and "papermill" not in nb.cells[1].metadata
    assert nb.cells[2].source == 'assert verdict == "reproduced"'


def test_total_wall_time_adds_the_grid_and_says_whether_the_cache_was_empty(tmp_path: Path, monkeypatch) -> None:
    from htr_utils.study import grid
    monkeypatch.setattr(grid, "figures_dir", lambda profile: tmp_path)
    P = profiles.get_profile("smoke")
    outcomes = [{"status": "trained"}] * 3 + [{"status": "skipped"}]
    grid.write_grid_timing(P, outcomes, 600.0, 2)
    text = report.write_report(tmp_path, {"01_x": 60.0}, profile="smoke").read_text()
    assert "Total wall time from an empty cache: 11.0 min" in text and "2 worker(s)" in text
    grid.write_grid_timing(P, outcomes[:2] + [{"status": "cached"}], 30.0, 1)
    text = report.write_report(tmp_path, {"01_x": 60.0}, profile="smoke").read_text()
    assert "with 1 of 3 runs cached at the start" in text and "from an empty cache" not in text
    (tmp_path / "grid_timing.json").unlink()
    assert "notebooks only" in report.write_report(tmp_path, {"01_x": 60.0}, profile="smoke").read_text()


def test_notebooks_elapsed_time_replaces_the_sum_until_some_notebooks_run_again(tmp_path: Path) -> None:
    text = report.write_report(tmp_path, {"01_x": 300.0, "02_y": 300.0}, profile="smoke", elapsed=360.0).read_text()
    assert "Notebooks' wall time: 6.0 min (elapsed; the notebooks' own times add up to 10.0 min)" in text
    assert "6.0 min" in report.write_report(tmp_path, profile="smoke").read_text()  # a rewrite keeps it
    text = report.write_report(tmp_path, {"01_x": 200.0}, profile="smoke").read_text()
    assert "Notebooks' wall time: 8.3 min\n" in text and "(elapsed;" not in text
