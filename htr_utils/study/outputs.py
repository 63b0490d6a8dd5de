"""Small helpers the notebooks call: where outputs go, the claim card, saving figures / tables / JSON.

Outputs of notebook ``NN_name`` under profile ``p`` go to

* ``$HTR_OUT_DIR`` exactly, when the environment sets it (the runner
  :mod:`htr_utils.study.reproduce` sets it to ``<DIR>/<notebook stem>`` for each notebook);
* else ``<repo>/figures/<p>/<notebook>/`` for the cpu and paper profiles (committed);
* else ``<repo>/build/smoke/<notebook>/`` for the smoke profile (outside the committed tree).

Paths are resolved from the repository root (found from this package's location), not from
the working directory, since notebooks run from ``notebooks/``.

Typical first cells of a notebook::

    # parameters (cell tagged "parameters")
    profile = None
    # setup
    from htr_utils.study.outputs import setup, show_claim, save_figure, save_table, save_json
    profile, out_dir = setup("03_layer_spectra", profile)
    show_claim("C3")
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .claims import CLAIMS
from .files import write_json
from .profiles import UNCOMMITTED_PROFILES, profile_name

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


def data_root() -> Path:
    """Absolute path of the repository's ``data/`` directory (data sets and cached runs)."""
    return repo_root() / "data"


def output_dir(notebook_name: str, profile: str, out: str | Path | None = None, create: bool = True) -> Path:
    """The directory for a notebook's outputs (created unless ``create=False``): ``out`` if given, else
    $HTR_OUT_DIR, else the profile's default (``figures/<profile>/<notebook>`` or, for smoke,
    ``build/smoke/<notebook>``). Relative paths are taken from the repository root."""
    if out is None and os.environ.get("HTR_OUT_DIR"):
        out = os.environ["HTR_OUT_DIR"]
    if out is not None:
        path = Path(out)
        path = path if path.is_absolute() else repo_root() / path
    else:
        base = "build" if profile_name(profile) in UNCOMMITTED_PROFILES else "figures"
        path = repo_root() / base / profile_name(profile) / Path(notebook_name).stem
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def setup(notebook_name: str, profile: str | None = None, out: str | Path | None = None,
          style: bool = True) -> tuple[str, Path]:
    """Resolve the profile and the output directory, set the plotting style; returns (profile, out_dir)."""
    profile = profile_name(profile)
    if style:
        from .plotting import set_style
        set_style()
    return profile, output_dir(notebook_name, profile, out)


def show_claim(claim_id: str) -> Any:
    """The claim's card — statement, what the paper reports, the verdict rule — as Markdown for the notebook."""
    from IPython.display import Markdown
    return Markdown(CLAIMS[claim_id].card())


def save_figure(fig: Any, out_dir: str | Path, name: str, dpi: int = 150) -> tuple[Path, Path]:
    """Save ``fig`` as ``out_dir/name.png`` (``dpi``) and ``out_dir/name.pdf``; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, pdf = out_dir / f"{name}.png", out_dir / f"{name}.pdf"
    fig.savefig(png, dpi=dpi, bbox_inches="tight")
    fig.savefig(pdf, bbox_inches="tight")
    return png, pdf


def save_table(df: Any, out_dir: str | Path, name: str, index: bool | None = None) -> Path:
    """Save a pandas DataFrame as ``out_dir/name.csv``. The index is written when it is named or
    not a plain 0..n-1 range (unless ``index`` says otherwise)."""
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if index is None:
        index = any(n is not None for n in df.index.names) or not isinstance(df.index, pd.RangeIndex)
    path = out_dir / f"{name}.csv"
    df.to_csv(path, index=index)
    return path


def save_json(obj: Any, out_dir: str | Path, name: str) -> Path:
    """Save ``obj`` as ``out_dir/name.json`` (numpy / torch values converted; nan/inf become null)."""
    return write_json(obj, Path(out_dir) / f"{name}.json")


# --------------------------------------------------------------------------- committing notebooks

def clean_notebook(path: str | Path) -> Path:
    """Strip every output, execution count and papermill record from notebook ``path`` (for committing).

    Executed copies live under figures/; the checks nbval runs in CI are assertions in the
    cells, which fail the run by raising, so no expected output needs to be stored.
    """
    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        for key in ("execution", "papermill"):
            cell.metadata.pop(key, None)
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, path)
    return path
