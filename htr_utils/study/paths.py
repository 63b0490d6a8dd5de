"""Where the study reads and writes, all from the repository root: data sets, the run cache, figures.

The bottom of the study package: it imports no other study module, so every module may import it at
module level. Paths are resolved from this package's location, not the working directory, since
notebooks run from ``notebooks/``.
"""
from __future__ import annotations

import os
from pathlib import Path

RUNS_DIR_ENV = "HTR_RUNS_DIR"  # a run cache elsewhere (shared storage; a rerun that must not reuse the cache)
UNCOMMITTED_PROFILES: tuple[str, ...] = ("smoke",)  # profiles whose outputs are written outside the committed tree


def repo_root() -> Path:
    """The repository root: the parent of the package directory when it holds pyproject.toml, else
    the first ancestor of the working directory that does (for a non-editable install)."""
    here = Path(__file__).resolve().parents[2]
    if (here / "pyproject.toml").is_file():
        return here
    for d in [Path.cwd().resolve(), *Path.cwd().resolve().parents]:
        if (d / "pyproject.toml").is_file() and (d / "htr_utils").is_dir():
            return d
    return here


def from_root(path: str | Path) -> Path:
    """``path`` itself when absolute, else taken from the repository root."""
    path = Path(path)
    return path if path.is_absolute() else repo_root() / path


def data_root() -> Path:
    """Absolute path of the repository's ``data/`` directory (data sets and cached runs)."""
    return repo_root() / "data"


def runs_dir(runs_root: str | Path) -> Path:
    """Absolute folder of a run cache: $HTR_RUNS_DIR when set, else ``runs_root`` (a relative path is taken
    from the repository root)."""
    return from_root(os.environ.get(RUNS_DIR_ENV) or runs_root)


GRID_TIMING_FILE = "grid_timing.json"  # figures/<profile>/: the whole grid's wall time (grid.py writes, report.py reads)


def figures_dir(profile: str) -> Path:
    """Where a profile's notebook outputs go by default: ``figures/<profile>`` (committed), or
    ``build/<profile>`` for the profiles in :data:`UNCOMMITTED_PROFILES`."""
    base = "build" if profile in UNCOMMITTED_PROFILES else "figures"
    return repo_root() / base / profile
