"""Run the study: execute the notebooks in order with papermill and gather their verdicts.

    python -m htr_utils.study.reproduce --profile {smoke,cpu,paper} [--out DIR] [--only 00 03 ...]
                                  [--timeout S] [--notebooks DIR] [--jobs N]

Each ``notebooks/NN_*.ipynb`` is executed (kernel ``python3``, working directory ``notebooks/``,
parameter ``profile``) into ``DIR/<notebook stem>/<notebook file>``; the kernel sees
``HTR_PROFILE=<profile>`` and ``HTR_OUT_DIR=DIR/<notebook stem>``, where the notebook writes its
figures, tables and ``verdict.json`` (see :func:`htr_utils.study.outputs.output_dir`). ``DIR`` defaults
to ``figures/<profile>/`` (smoke: ``build/smoke/``) under the repository root. At the end
``DIR/REPORT.md`` gathers the verdicts and wall times; the exit status is 1 when a notebook
failed (its partially executed copy is kept, and its path and the failing cell's error printed).
Ctrl-C marks the running notebook "interrupted" in the report (exit status 130); an ``--out``
that cannot be written is refused before any notebook runs.

Console: one line per notebook, its name when it starts and its verdict and wall time when it ends
(``01_full_spectrum ... not reproduced in 14 min 05.2 s``); with ``--jobs N`` N notebooks run at once, each in its
own process (a kernel's environment is per process), and the same line is printed whole as each ends. Kernels get
CurveZMQ keys where the kernel supports them, so ipykernel does not warn "running over TCP without encryption" for each
notebook; anything else a kernel writes to its stderr (a crash, a C library's error) still shows.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from .paths import figures_dir, repo_root
from .profiles import PROFILE_ENV, PROFILES
from .report import VERDICT_FILE, write_report

NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_.+\.ipynb$")
KERNEL = "python3"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def discover(notebooks_dir: Path) -> list[Path]:
    """The ``NN_*.ipynb`` files of ``notebooks_dir`` in order."""
    return sorted(p for p in Path(notebooks_dir).iterdir() if p.is_file() and NOTEBOOK_PATTERN.match(p.name))


def select(notebooks: list[Path], only: Sequence[str] | None) -> list[Path]:
    """Notebooks whose number (``03`` or ``3``) or stem is in ``only``; ValueError names unknown ones."""
    if not only:
        return notebooks
    chosen, unknown = [], []
    for key in only:
        key = key.strip()
        hits = [nb for nb in notebooks if nb.stem == key or nb.name == key
                or (key.isdigit() and int(key) == int(nb.name[:2]))]
        if not hits:
            unknown.append(key)
        chosen += [nb for nb in hits if nb not in chosen]
    if unknown:
        available = ", ".join(nb.name[:2] for nb in notebooks) or "none"
        raise ValueError(f"--only: no notebook numbered {', '.join(unknown)} (available: {available})")
    return [nb for nb in notebooks if nb in chosen]


def default_out(profile: str) -> Path:
    """``figures/<profile>`` under the repository root (smoke: ``build/smoke``)."""
    return figures_dir(profile)


def _error_summary(err: BaseException) -> tuple[str, str]:
    """(one-line summary, longer traceback text) of a notebook failure."""
    try:  # papermill, zmq, jupyter_client: the Jupyter stack, imported only where a notebook is run
        from papermill.exceptions import PapermillExecutionError
    except ImportError:  # pragma: no cover
        PapermillExecutionError = ()  # type: ignore[assignment]
    if isinstance(err, PapermillExecutionError):
        evalue = " ".join(str(err.evalue).split())
        summary = f"cell {err.exec_count if err.exec_count is not None else err.cell_index}: {err.ename}: {evalue}"
        detail = _ANSI.sub("", "\n".join(err.traceback or []))
    else:
        summary = f"{type(err).__name__}: {' '.join(str(err).split())}"
        detail = summary
    return (summary if len(summary) <= 300 else summary[:297] + "..."), detail


def kernel_config():
    """Traitlets config for the kernel manager: CurveZMQ transport encryption where it is available.

    ipykernel >= 7 warns "Kernel is running over TCP without encryption ..." on its stderr (our
    terminal) unless the manager provisions Curve keys, which jupyter_client >= 8.10 does with
    ``transport_encryption="auto"`` for kernels that declare support; older versions have neither
    the warning nor the option.
    """
    import zmq  # the Jupyter stack: imported where a kernel is started (see _error_summary)
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    config = Config()
    if "transport_encryption" in KernelManager.class_trait_names() and zmq.has("curve"):
        config.KernelManager.transport_encryption = "auto"
    return config


def run_notebook(notebook: Path, out_dir: Path, profile: str, timeout: float | None = None,
                 cwd: Path | None = None) -> Path:
    """Execute ``notebook`` into ``out_dir/<file>`` with HTR_PROFILE / HTR_OUT_DIR set for its kernel.

    Raises papermill's execution error when a cell fails (the partial copy is written first).
    """
    import papermill as pm  # the Jupyter stack: imported where a notebook is run (see _error_summary)

    out_dir.mkdir(parents=True, exist_ok=True)
    stale = out_dir / VERDICT_FILE
    if stale.exists():
        stale.unlink()  # a verdict must come from this run
    target = out_dir / notebook.name
    saved = {k: os.environ.get(k) for k in (PROFILE_ENV, "HTR_OUT_DIR")}
    os.environ[PROFILE_ENV], os.environ["HTR_OUT_DIR"] = profile, str(out_dir)
    try:
        pm.execute_notebook(str(notebook), str(target), parameters={"profile": profile}, kernel_name=KERNEL,
                            cwd=str(cwd or notebook.parent), progress_bar=False, log_output=False,
                            execution_timeout=timeout, config=kernel_config())
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m htr_utils.study.reproduce",
                                description="Execute the study's notebooks with papermill and write REPORT.md.")
    p.add_argument("--profile", required=True, choices=PROFILES,
                   help="sizes: smoke (digits, CI), cpu (FashionMNIST, ~1 h on 2 cores), paper (GPU)")
    p.add_argument("--out", type=Path, default=None,
                   help="output directory (default: figures/<profile>/, smoke: build/smoke/)")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (numbers, e.g. 00 03)")
    p.add_argument("--timeout", type=float, default=None, metavar="S",
                   help="per-cell execution timeout in seconds (default: none)")
    p.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                   help="directory of NN_*.ipynb notebooks (default: notebooks/ of the repository)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="notebooks run at once, each in its own process (default 1: one after another)")
    return p


def _run_one(nb: Path, nb_out: Path, profile: str, timeout: float | None, cwd: Path, threads: int) -> dict:
    """One notebook in a worker process of ``--jobs``: its status, wall time and, if it failed, why (as text: a
    papermill error need not pickle). Its kernel gets ``threads`` OpenMP threads, so that the notebooks running at
    once do not oversubscribe the cores (torch's OpenMP slows down badly when they are)."""
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    try:
        run_notebook(nb, nb_out, profile, timeout=timeout, cwd=cwd)
        return {"status": _verdict(nb_out), "wall": time.perf_counter() - t0}
    except Exception as err:  # a failing cell, a dead kernel, a timeout: reported by the parent
        summary, detail = _error_summary(err)
        return {"status": "FAILED", "wall": time.perf_counter() - t0, "summary": summary, "detail": detail}


def _run_parallel(notebooks: list[Path], out: Path, args: argparse.Namespace, nb_dir: Path,
                  timings: dict, failed: dict, details: dict) -> bool:
    """Run ``notebooks`` ``args.jobs`` at a time; fills ``timings`` / ``failed`` / ``details`` as in the serial
    loop. False when interrupted (the notebooks not finished are marked "interrupted")."""
    width = max(len(nb.stem) for nb in notebooks)
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker: no state shared with the parent
    with concurrent.futures.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        started = time.perf_counter()
        threads = max(1, (os.cpu_count() or 1) // args.jobs)
        futures = {pool.submit(_run_one, nb, out / nb.stem, args.profile, args.timeout, nb_dir, threads): nb
                   for nb in notebooks}
        try:
            for fut in concurrent.futures.as_completed(futures):
                nb, r = futures[fut], fut.result()
                timings[nb.stem] = r["wall"]
                why = ""
                if r["status"] == "FAILED":
                    failed[nb.stem] = r["summary"]
                    details[nb.stem] = (out / nb.stem / nb.name, r["detail"])
                    why = f": {r['summary']}"
                print(f"{nb.stem:<{width}} ... {_ending(r['status'], r['wall'], why)}", flush=True)
        except KeyboardInterrupt:
            pool.shutdown(wait=False, cancel_futures=True)
            for nb in notebooks:
                if nb.stem not in timings:
                    timings[nb.stem] = {"wall_s": time.perf_counter() - started, "status": "interrupted"}
            return False
    return True


def _ending(status: str, wall: float, why: str) -> str:
    """The end of a notebook's console line, after ``name ... `` (serial and parallel runs alike)."""
    return f"{status} in {_duration(wall)}{why}"


def _duration(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{int(seconds // 60)} min {seconds % 60:04.1f} s"


def _verdict(nb_out: Path) -> str:
    """The ``verdict`` of ``nb_out/verdict.json``, or why there is none."""
    try:
        return str(json.loads((nb_out / VERDICT_FILE).read_text(encoding="utf-8"))["verdict"])
    except FileNotFoundError:
        return "ok, no verdict"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"unreadable verdict ({type(err).__name__})"


def _run_serial(notebooks: list[Path], out: Path, args: argparse.Namespace, nb_dir: Path,
                timings: dict, failed: dict, details: dict) -> bool:
    """Run ``notebooks`` one after another (the default); False when interrupted (the running one marked)."""
    width = max(len(nb.stem) for nb in notebooks)
    for nb in notebooks:
        print(f"{nb.stem:<{width}} ... ", end="", flush=True)  # the line is finished when the notebook is
        nb_out = out / nb.stem
        t0 = time.perf_counter()
        try:
            run_notebook(nb, nb_out, args.profile, timeout=args.timeout, cwd=nb_dir)
            status, why = _verdict(nb_out), ""
        except KeyboardInterrupt:  # its verdict is gone: the report must not keep the old one
            print(f"interrupted after {_duration(time.perf_counter() - t0)}", flush=True)
            timings[nb.stem] = {"wall_s": time.perf_counter() - t0, "status": "interrupted"}
            return False
        except Exception as err:  # a failing cell, a dead kernel, a timeout: report, keep going
            summary, detail = _error_summary(err)
            failed[nb.stem] = summary
            details[nb.stem] = (nb_out / nb.name, detail)
            status, why = "FAILED", f": {summary}"
        wall = timings[nb.stem] = time.perf_counter() - t0
        print(_ending(status, wall, why), flush=True)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    nb_dir = (args.notebooks or repo_root() / "notebooks").resolve()
    if not nb_dir.is_dir():
        parser.error(f"--notebooks: {nb_dir} is not a directory")
    try:
        notebooks = select(discover(nb_dir), args.only)
    except ValueError as err:
        parser.error(str(err))
    if not notebooks:
        parser.error(f"no NN_*.ipynb notebooks in {nb_dir}")
    out = (args.out.resolve() if args.out is not None else default_out(args.profile))
    try:
        out.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out).close()
    except OSError as err:
        parser.error(f"--out {out} cannot be written ({err.strerror or err}); choose a writable directory")

    timings: dict[str, float | dict] = {}
    failed: dict[str, str] = {}
    details: dict[str, tuple[Path, str]] = {}
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: need at least 1")
    jobs = min(args.jobs, len(notebooks))
    print(f"profile {args.profile}: {len(notebooks)} notebook(s) from {nb_dir} into {out}"
          + (f", {jobs} at a time" if jobs > 1 else ""), flush=True)
    started = time.perf_counter()
    run = _run_parallel if jobs > 1 else _run_serial
    if not run(notebooks, out, args, nb_dir, timings, failed, details):
        report = write_report(out, timings, failed=failed, profile=args.profile)
        print(f"interrupted; report: {report} (unfinished notebooks marked interrupted)", flush=True)
        return 130
    # the notebooks' elapsed time (not the sum of their walls when they ran at once), for every notebook only
    elapsed = time.perf_counter() - started if not args.only else None

    report = write_report(out, timings, failed=failed, profile=args.profile, elapsed=elapsed)
    print()
    print(report.read_text(encoding="utf-8"))
    print(f"report: {report}")
    if failed:
        for name, (path, detail) in details.items():
            print(f"\nFAILED {name}: {failed[name]}", file=sys.stderr)
            print(f"  partial executed notebook: {path}", file=sys.stderr)
            tail = "\n".join(detail.strip().splitlines()[-15:])
            print("  " + tail.replace("\n", "\n  "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
