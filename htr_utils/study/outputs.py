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

import pandas as pd

from .claims import CLAIMS
from .files import write_json
from .paths import data_root, figures_dir, from_root, repo_root  # data_root, repo_root: notebooks import them here
from .profiles import profile_name
from .style import set_style


def output_dir(notebook_name: str, profile: str, out: str | Path | None = None, create: bool = True) -> Path:
    """The directory for a notebook's outputs (created unless ``create=False``): ``out`` if given, else
    $HTR_OUT_DIR, else the profile's default (``figures/<profile>/<notebook>`` or, for smoke,
    ``build/smoke/<notebook>``). Relative paths are taken from the repository root."""
    if out is None and os.environ.get("HTR_OUT_DIR"):
        out = os.environ["HTR_OUT_DIR"]
    if out is not None:
        path = from_root(out)
    else:
        path = figures_dir(profile_name(profile)) / Path(notebook_name).stem
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


def setup(notebook_name: str, profile: str | None = None, out: str | Path | None = None,
          style: bool = True) -> tuple[str, Path]:
    """Resolve the profile and the output directory, set the plotting style; returns (profile, out_dir)."""
    profile = profile_name(profile)
    if style:
        set_style()
    return profile, output_dir(notebook_name, profile, out)


def show_claim(claim_id: str) -> Any:
    """The claim's card — statement, what the paper reports, the verdict rule — as Markdown for the notebook."""
    from IPython.display import Markdown  # IPython: present in a notebook's kernel, not needed by the rest
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
    import nbformat  # only for committing notebooks (a Jupyter package the run cache and plots never need)

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
