"""Plots shared by the notebooks: spectral densities, top eigenvalues, layer grids, heatmaps, trends.

Every function draws on a given matplotlib Axes (or returns a new figure for grids/heatmaps)
and leaves saving to :func:`htr_utils.study.outputs.save_figure`. Call :func:`set_style` once.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import transforms

#: densities are drawn on a log axis down to this value (SLQ densities are ~0 between atoms)
DENSITY_FLOOR = 1e-6
PALETTE = "colorblind"


def set_style(context: str = "notebook", font_scale: float = 1.0) -> None:
    """Seaborn whitegrid style with the colour-blind palette and figure defaults for PNG/PDF export."""
    import seaborn as sns

    sns.set_theme(context=context, style="whitegrid", palette=PALETTE, font_scale=font_scale)
    plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                         "axes.titlesize": "medium", "legend.fontsize": "small", "pdf.fonttype": 42})


def _floored(density: np.ndarray, floor: float) -> np.ndarray:
    return np.maximum(np.asarray(density, dtype=float), floor)


def plot_density(ax: plt.Axes, dens: Any, label: str | None = None, log: bool = True,
                 floor: float = DENSITY_FLOOR, **kw) -> plt.Axes:
    """Draw a SpectralDensity φ(λ) on ``ax``: log-scale y (floored at ``floor``) unless ``log=False``."""
    y = _floored(dens.density, floor) if log else np.asarray(dens.density)
    ax.plot(dens.grid, y, label=label, **kw)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor)
    ax.set_xlabel("eigenvalue λ")
    ax.set_ylabel("density φ(λ)")
    return ax


def _rug(ax: plt.Axes, values: np.ndarray, height: float = 0.04, **kw) -> None:
    """Ticks at ``values`` along the bottom of ``ax`` (x in data units, y in axes units)."""
    trans = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    values = np.asarray(values, dtype=float)
    ax.vlines(values, 0, height, transform=trans, **kw)


def plot_spectrum_with_exact(ax: plt.Axes, dens: Any, exact_eigenvalues: Sequence[float], log: bool = True,
                             floor: float = DENSITY_FLOOR, label: str = "SLQ estimate") -> plt.Axes:
    """SLQ density beside the exact spectrum: the exact eigenvalues smoothed on the same grid with the
    same Gaussian width (solid), the estimate (dashed), and each exact eigenvalue as a tick at the bottom."""
    from ..spectra import exact_spectrum_density

    ev = np.sort(np.asarray(exact_eigenvalues, dtype=float))
    exact = exact_spectrum_density(ev, grid=dens.grid, sigma=dens.sigma)
    plot_density(ax, exact, label=f"exact ({len(ev)} eigenvalues, same smoothing)", log=log, floor=floor,
                 color="C0", lw=2.2, alpha=0.8)
    plot_density(ax, dens, label=label, log=log, floor=floor, color="C3", lw=1.3, ls="--")
    _rug(ax, ev, color="0.25", lw=0.6, alpha=0.6, label="exact eigenvalues")
    if log:  # headroom above the peak for the legend
        top = max(float(np.max(exact.density)), float(np.max(dens.density)), floor)
        ax.set_ylim(floor, top * (top / floor) ** 0.35)
    ax.legend(loc="upper right")
    return ax


def plot_top_eigenvalues(ax: plt.Axes, values: Sequence[float], C: int | None = None, label: str | None = None,
                         log: bool = False) -> plt.Axes:
    """Stem plot of the top eigenvalues (descending) against their rank; the first ``C`` highlighted and
    the gap after the C-th marked with a dashed line and the ratio λ_C / λ_{C+1}."""
    v = np.sort(np.asarray(values, dtype=float))[::-1]
    rank = np.arange(1, len(v) + 1)
    C = 0 if C is None else int(C)
    name = label or "top eigenvalues"
    bottom = v.min() / 2 if log else 0.0
    for sel, colour, lab in ((rank <= C, "C3", f"{name}, first {C}"), (rank > C, "C0", name if C == 0 else None)):
        if sel.any():
            ax.vlines(rank[sel], bottom, v[sel], color=colour, lw=1.5)
            ax.plot(rank[sel], v[sel], "o", color=colour, ms=5, label=lab)
    if 0 < C < len(v):
        ax.axvline(C + 0.5, color="0.3", ls="--", lw=1)
        if v[C] > 0:
            trans = transforms.blended_transform_factory(ax.transData, ax.transAxes)
            ax.text(C + 0.7, 0.6, f"C = {C}\nλ$_{{{C}}}$/λ$_{{{C + 1}}}$ = {v[C - 1] / v[C]:.2f}",
                    transform=trans, va="center", fontsize="small",
                    bbox={"facecolor": "white", "edgecolor": "0.7", "alpha": 0.9})
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("rank k")
    ax.set_ylabel("eigenvalue λ$_k$")
    ax.legend(loc="upper right")
    return ax


def plot_layer_grid(densities: Mapping[str, Any], ncols: int = 3, log: bool = True, floor: float = DENSITY_FLOOR,
                    panel_size: tuple[float, float] = (3.6, 2.6), suptitle: str | None = None,
                    sharex: bool = False) -> tuple[plt.Figure, np.ndarray]:
    """One panel per layer. Each value is a SpectralDensity, or a {label: SpectralDensity} mapping to
    overlay several kinds (e.g. {"Hess_l": ..., "G_l": ...}). Returns (figure, axes array)."""
    names = list(densities)
    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows),
                             squeeze=False, sharex=sharex)
    styles = ["-", "--", ":", "-."]
    for ax, name in zip(axes.flat, names):
        entry = densities[name]
        kinds = entry if isinstance(entry, Mapping) else {None: entry}
        for i, (kind, dens) in enumerate(kinds.items()):
            plot_density(ax, dens, label=kind, log=log, floor=floor, color=f"C{i}", ls=styles[i % len(styles)],
                         lw=1.6 if i == 0 else 1.2)
        ax.set_title(name)
        if any(k is not None for k in kinds):
            ax.legend(loc="upper right")
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax in axes.flat:
        if not ax.get_subplotspec().is_last_row():
            ax.set_xlabel("")
        if not ax.get_subplotspec().is_first_col():
            ax.set_ylabel("")
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig, axes


def plot_heatmap(matrix: Any, row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                 ax: plt.Axes | None = None, title: str | None = None, annot: bool = True, fmt: str = ".2g",
                 cmap: str = "viridis", cbar_label: str | None = None, **kw) -> tuple[plt.Figure, plt.Axes]:
    """Annotated heatmap of a 2-D array (or DataFrame) with row/column labels; returns (figure, axes)."""
    import seaborn as sns

    m = np.asarray(matrix, dtype=float)
    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * m.shape[1] + 2.5), max(3.0, 0.5 * m.shape[0] + 1.5)))
    else:
        fig = ax.figure
    sns.heatmap(m, ax=ax, annot=annot, fmt=fmt, cmap=cmap,
                xticklabels=list(col_labels) if col_labels is not None else "auto",
                yticklabels=list(row_labels) if row_labels is not None else "auto",
                cbar_kws={"label": cbar_label} if cbar_label else None, **kw)
    ax.tick_params(axis="y", rotation=0)
    if title:
        ax.set_title(title)
    return fig, ax


def plot_trend(ax: plt.Axes, epochs: Sequence[float], mean: Sequence[float], stderr: Sequence[float] | None = None,
               label: str | None = None, log: bool = False, **kw) -> plt.Axes:
    """A quantity against epochs with a ±stderr band (e.g. a Hutchinson trace or the top eigenvalue)."""
    x, y = np.asarray(epochs, dtype=float), np.asarray(mean, dtype=float)
    (line,) = ax.plot(x, y, marker="o", ms=3.5, label=label, **kw)
    if stderr is not None:
        s = np.asarray(stderr, dtype=float)
        ax.fill_between(x, y - s, y + s, color=line.get_color(), alpha=0.2, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    if label:
        ax.legend()
    return ax


def plot_bars(ax: plt.Axes, labels: Sequence[str], means: Sequence[float], stds: Sequence[float] | None = None,
              ylabel: str | None = None, fmt: str = "{:.2f}") -> plt.Axes:
    """Bars with ±std error bars and their values written on top (e.g. test accuracy per method)."""
    x = np.arange(len(labels))
    m = np.asarray(means, dtype=float)
    s = np.zeros_like(m) if stds is None else np.asarray(stds, dtype=float)
    ax.bar(x, m, yerr=None if stds is None else s, capsize=4, color=[f"C{i % 10}" for i in range(len(labels))])
    for xi, mi, si in zip(x, m, s):  # value above the error bar
        ax.annotate(fmt.format(mi), (xi, mi + si), xytext=(0, 3), textcoords="offset points", ha="center",
                    va="bottom", fontsize="small")
    ax.set_xticks(x, labels)
    if ylabel:
        ax.set_ylabel(ylabel)
    return ax
