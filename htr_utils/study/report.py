"""Verdicts and the study's report.

Every claim notebook ends with :func:`write_verdict`, which writes ``verdict.json`` into the
notebook's output directory: the claim, what the paper reports, what was measured, the
verdict (``reproduced`` / ``not reproduced`` / ``inconclusive`` / ``not tested``: the rule could not be
applied as designed, known before the result), the rule that decided it
(stated in the notebook before the result) and the data set. The runner
(:mod:`htr_utils.study.reproduce`) then gathers them with :func:`write_report` into
``<DIR>/REPORT.md``: one row per notebook, with each notebook's wall time.

A notebook's verdict is judged against the spread of numbers across machines (issue 17) in
``<DIR>/stability.json`` ({notebook: {"stable": "yes" / "no" / "not measured", "why": text}}, written
by ``python -m benchmarks.stability assess <DIR>``); REPORT.md shows it in its "across machines" column.

Wall times are kept in ``<DIR>/timings.json`` ({notebook: {"wall_s", "status", "error"}}; status
``ok`` / ``failed`` / ``interrupted`` / ``pending``: not run yet, earlier outputs withdrawn, ``error`` says
why), merged run after run, so a partial rerun (``--only 03``)
keeps the other notebooks' rows. Several runners may share one ``<DIR>``: the merge and the report
are written under ``<DIR>/.report.lock`` (an OS lock), each file atomically.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from pathlib import Path
from typing import Any, Mapping

from .claims import CLAIMS
from .files import FileLock, atomic_write, write_json
from .paths import GRID_TIMING_FILE
from .profiles import PROFILE_ENV
from .runs import environment
from .verdicts import VerdictResult

VERDICT_FILE = "verdict.json"
TIMINGS_FILE = "timings.json"
NOTEBOOKS_TIMING_FILE = "notebooks_timing.json"  # elapsed wall time of the last run of every notebook
STABILITY_FILE = "stability.json"
REPORT_FILE = "REPORT.md"
RATES_COLUMN = "calibrated rates (false R / false N / power)"
LOCK_FILE = ".report.lock"


# --------------------------------------------------------------------------- verdicts


def write_verdict(out_dir: str | Path, claim_id: str, result: VerdictResult, data: str,
                  profile: str | None = None) -> Path:
    """Write ``out_dir/verdict.json`` and return its path.

    The claim's statement, what the paper reports and the rule come from :data:`CLAIMS`
    (written before the result); ``result`` is what the rule returned; ``data`` names the
    data set(s) and models; ``profile`` defaults to the environment's profile variable.
    """
    if claim_id not in CLAIMS:
        raise ValueError(f"unknown claim {claim_id!r}; known: {', '.join(CLAIMS)}")
    if not isinstance(data, str) or not data.strip():
        raise ValueError(f"data must name the data set(s) and models, got {data!r}")
    claim = CLAIMS[claim_id]
    out_dir = Path(out_dir)
    record = {
        "notebook": out_dir.name,
        "claim_id": claim_id,
        "claim": claim.summary,
        "paper_reports": claim.paper_summary,
        "measured": result.measured,
        "verdict": result.verdict,
        "rule": claim.rule,
        "rates": claim.rates,
        "data": data,
        "profile": profile if profile is not None else os.environ.get(PROFILE_ENV),
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
        "extra": result.details,
    }
    return write_json(record, out_dir / VERDICT_FILE)


def collect_verdicts(directory: str | Path) -> dict[str, dict]:
    """{notebook directory name: verdict record} for every ``directory/*/verdict.json``, sorted by name."""
    directory = Path(directory)
    out: dict[str, dict] = {}
    for path in sorted(directory.glob(f"*/{VERDICT_FILE}")):
        try:
            out[path.parent.name] = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            out[path.parent.name] = {"verdict": "unreadable", "measured": f"{path}: {err}"}
    return out


# --------------------------------------------------------------------------- report


def machine_description() -> dict[str, str]:
    """Platform, Python, CPU count and the facts that change numbers (:func:`runs.environment`): CPU model,
    torch's CPU capability, threads, torch version, GPU (if any)."""
    info = {"platform": platform.platform(), "python": platform.python_version(),
            "cpus": str(os.cpu_count())}
    env = environment()
    info.update(torch=env["torch"], gpu=env["gpu"] or "none", cpu_model=env["cpu_model"],
                cpu_capability=str(env["cpu_capability"]), threads=str(env["threads"]))
    return info


def _cell(text: Any) -> str:
    """A markdown table cell: one line, pipes escaped."""
    s = "—" if text is None or text == "" else str(text)
    return " ".join(s.split()).replace("|", "\\|")


def _rates(verdict: Mapping[str, Any]) -> str | None:
    """The claim's calibrated rates (:attr:`Claim.rates`): the verdict's own copy, else (a verdict written before
    the field existed) the claim's current text; None for a row without a claim."""
    if verdict.get("rates"):
        return verdict["rates"]
    claim = CLAIMS.get(verdict.get("claim_id", ""))
    return claim.rates if claim else None


def _stability(directory: Path) -> dict[str, dict]:
    path = directory / STABILITY_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        return {"*": {"stable": "unreadable", "why": f"{path}: {err}"}}


def _stability_cell(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "not measured"
    return f"{entry.get('stable', '?')}: {entry.get('why', '')}".rstrip(": ")


def _format_seconds(s: float | None) -> str:
    if s is None:
        return "—"
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def _merge_timings(directory: Path, timings: Mapping[str, Any] | None,
                   failed: Mapping[str, str] | None) -> dict[str, dict]:
    path = directory / TIMINGS_FILE
    merged: dict[str, dict] = {}
    if path.is_file():
        try:
            merged = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            merged = {}
    for name, value in (timings or {}).items():
        entry = dict(value) if isinstance(value, Mapping) else {"wall_s": value}
        entry.setdefault("status", "failed" if failed and name in failed else "ok")
        if failed and name in failed:
            entry["error"] = failed[name]
        merged[name] = entry
    for name, error in (failed or {}).items():
        merged.setdefault(name, {"wall_s": None})
        merged[name].update(status="failed", error=error)
    if timings or failed:
        write_json(merged, path)
    return merged


_HEADER_KEYS = ("- Date: ", "- Machine: ", "- Software: ")


def _header(directory: Path, ran_now: bool) -> list[str]:
    """Date, machine and software lines. They describe the run that produced the notebooks' outputs, so a
    rewrite that runs no notebook (e.g. ``benchmarks.stability assess``) keeps those of the existing report."""
    path = directory / REPORT_FILE
    if not ran_now and path.is_file():
        kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith(_HEADER_KEYS)]
        if len(kept) == len(_HEADER_KEYS):
            return kept
    machine = machine_description()
    return [
        f"- Date: {_dt.datetime.now().isoformat(timespec='seconds')}",
        f"- Machine: {machine['platform']}, {machine['cpus']} CPUs ({machine.get('cpu_model', 'unknown')}, "
        f"torch CPU capability {machine.get('cpu_capability', 'unknown')}, {machine.get('threads', '?')} threads), "
        f"GPU: {machine.get('gpu', 'none')}",
        f"- Software: Python {machine['python']}, torch {machine.get('torch')}",
    ]


def _total_lines(directory: Path, notebooks: float) -> list[str]:
    """The notebooks' total (their elapsed time where the last full run recorded it, ``notebooks_timing.json``:
    with ``--jobs`` it is less than the sum of their walls); with the grid's timing beside it (``grid_timing.json``,
    written by ``grid train`` over the whole grid), the whole study's, said to be from an empty cache only when no
    run was cached."""
    summed = notebooks
    elapsed_path = directory / NOTEBOOKS_TIMING_FILE
    if elapsed_path.is_file():
        notebooks = float(json.loads(elapsed_path.read_text(encoding="utf-8"))["elapsed_s"])
    lines = [f"Notebooks' wall time: {_format_seconds(notebooks)}"
             + (f" (elapsed; the notebooks' own times add up to {_format_seconds(summed)})"
                if abs(notebooks - summed) > 1 else "")]
    path = directory / GRID_TIMING_FILE
    if path.is_file():
        g = json.loads(path.read_text(encoding="utf-8"))
        grid, runs, cached = float(g["wall_s"]), int(g["runs"]), int(g["cached_at_start"])
        start = "from an empty cache" if cached == 0 else f"with {cached} of {runs} runs cached at the start"
        lines += [f"Training grid ({runs} runs with their readings, {g.get('workers', 1)} worker(s), {g.get('date', '')}): "
                  f"{_format_seconds(grid)}",
                  f"Total wall time {start}: {(grid + notebooks) / 60:.1f} min"]
    else:
        lines += [f"Total wall time: {_format_seconds(notebooks)} (notebooks only: no grid timing in {directory.name})"]
    return lines


def write_report(directory: str | Path, timings: Mapping[str, Any] | None = None,
                 failed: Mapping[str, str] | None = None, profile: str | None = None,
                 elapsed: float | None = None) -> Path:
    """Write ``directory/REPORT.md`` from the verdicts found under it and return its path.

    ``timings``: {notebook: wall seconds, or {"wall_s", "status"}} of this run (merged into ``timings.json``);
    ``failed``: {notebook: error message} of the notebooks that failed in this run.
    ``profile`` defaults to the verdicts' profile, else the directory's name. ``elapsed``: the wall time of a run
    of every notebook (kept in ``notebooks_timing.json``; a run of some notebooks passes None and drops it).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with FileLock(directory / LOCK_FILE, what=f"the report in {directory}"):  # one merge at a time
        for tmp in [*directory.glob(f".{TIMINGS_FILE}.*.tmp"), *directory.glob(f".{REPORT_FILE}.*.tmp")]:
            tmp.unlink(missing_ok=True)  # left by a killed runner
        if elapsed is not None:
            write_json({"elapsed_s": elapsed}, directory / NOTEBOOKS_TIMING_FILE)
        elif timings or failed:  # some notebooks ran again: the full run's elapsed time no longer holds
            (directory / NOTEBOOKS_TIMING_FILE).unlink(missing_ok=True)
        return _write_report(directory, timings, failed, profile)


def _write_report(directory: Path, timings: Mapping[str, Any] | None, failed: Mapping[str, str] | None,
                  profile: str | None) -> Path:
    verdicts = collect_verdicts(directory)
    runs = _merge_timings(directory, timings, failed)
    stability = _stability(directory)
    if profile is None:
        profiles = {v.get("profile") for v in verdicts.values() if v.get("profile")}
        profile = profiles.pop() if len(profiles) == 1 else directory.name
    lines = [
        f"# Reproduction report — profile `{profile}`",
        "",
        *_header(directory, ran_now=bool(timings or failed)),
        "",
        "Each verdict follows a rule stated in its notebook before the result "
        "(see `rule` in the notebook's `verdict.json`). \"Across machines\": whether the verdict survives the "
        "spread of numbers measured across thread counts, instruction sets and devices "
        "(`python -m benchmarks.stability`). Calibrated rates: the current rule's false reproduced, false not "
        "reproduced and power at its stated effect, simulated before the run (PROTOCOL.md) unless the cell says "
        "post hoc or not calibrated.",
        "",
        f"| notebook | claim | paper reports | measured | verdict | {RATES_COLUMN} | across machines | data | wall time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for name in sorted(set(verdicts) | set(runs)):
        v, r = verdicts.get(name, {}), runs.get(name, {})
        wall = r.get("wall_s")
        total += float(wall or 0.0)
        if r.get("status") == "failed":
            verdict = "**FAILED**: " + (r.get("error") or "see the executed notebook")
            v = {}  # a stale verdict must not be shown for a notebook that failed
        elif r.get("status") == "interrupted":
            verdict = "**interrupted** (rerun it)"
            v = {}  # nor for one stopped before its verdict
        elif r.get("status") == "pending":
            verdict = "**not run yet**: " + (r.get("error") or "")
            v = {}  # nor for one whose earlier outputs were withdrawn
        else:
            verdict = f"**{v['verdict']}**" if v.get("verdict") else "no verdict"
        claim = v.get("claim")
        if claim and v.get("claim_id"):
            claim = f"{v['claim_id']}: {claim}"
        lines.append("| " + " | ".join(_cell(c) for c in (
            name, claim, v.get("paper_reports"), v.get("measured"), verdict, _rates(v),
            _stability_cell(stability.get(name) or stability.get("*")) if v else "—", v.get("data"),
            _format_seconds(wall))) + " |")
    lines += ["", *_total_lines(directory, total), ""]
    path = directory / REPORT_FILE
    atomic_write(path, "\n".join(lines).encode("utf-8"))
    return path
