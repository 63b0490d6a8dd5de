"""Every figure of the study: spectral densities, top eigenvalues, layer grids, heatmaps, trends, arms.

Functions draw on a given matplotlib Axes or return a new figure, and leave saving to
:func:`htr_utils.study.outputs.save_figure`. Call :func:`set_style` once. The numbers they
draw come from the analyses (spectra_analysis, depth_trends, regularisation); no rule is
decided here.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import transforms
from matplotlib.patches import Rectangle

from ..curvature import KINDS
from ..lanczos import SpectralDensity
from ..spectra import exact_spectrum_density
from .depth_trends import FULL, METRICS, epoch_distances, is_middle, summed_distances
from .records import BlockCurvature, CurvatureRecord
from .regularisation import ARM_LABELS
from .spectra_analysis import KIND_LABELS, epochs_with_kinds, outlier_verdict, rule_values, run_classes
from .style import set_style  # importable from here too (notebooks call plotting.set_style)

#: densities are drawn on a log axis down to this value (SLQ densities are ~0 between atoms)
DENSITY_FLOOR = 1e-6
#: log-scale density plots span this many decades below each panel's peak
DECADES = 9.0


def log_axis(ax: plt.Axes, axis: str = "y") -> None:
    """Log scale on ``axis`` ("x" or "y") with ticks at 1, 2, 5 × 10^k labelled as plain numbers.

    The study's one log-axis style: matplotlib's default minor labels crowd a short log axis.
    """
    scale, lim = (ax.set_yscale, ax.get_ylim) if axis == "y" else (ax.set_xscale, ax.get_xlim)
    was_log, limits = (ax.get_yscale() if axis == "y" else ax.get_xscale()) == "log", lim()
    scale("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(mticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_minor_locator(mticker.NullLocator())
    target.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.3g}"))
    if was_log:  # keep limits already chosen on a log axis
        (ax.set_ylim if axis == "y" else ax.set_xlim)(*limits)


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


def density_floor(densities: Sequence[SpectralDensity], decades: float = DECADES) -> float:
    """A log-axis floor ``decades`` below the highest peak of ``densities`` (SLQ densities are ~0 between
    atoms; a fixed absolute floor would hide the outliers of spectra with a large range)."""
    peak = max(float(np.max(d.density)) for d in densities)
    return peak * 10.0 ** (-decades) if peak > 0 else 1e-12


def plot_full_spectrum(ax_density: plt.Axes, ax_top: plt.Axes, entry: BlockCurvature, C: int, title: str,
                       tolerance: int = 2) -> None:
    """C1 panel pair: (left) the density on a log scale with the top-C Ritz values ticked in red;
    (right) the positive top-2C Ritz values (:func:`rule_values`) on a log scale, the gap after the C-th
    dashed and, when it differs, the largest gap found by the rule dotted."""
    dens, top = entry.density, rule_values(entry, C)
    floor = density_floor([dens])
    plot_density(ax_density, dens, floor=floor, color="C0", lw=1.4, label="SLQ density")
    ticks = np.asarray(entry.top, dtype=float)[:C]
    ax_density.vlines(ticks, floor, floor * 10 ** (DECADES / 8), color="C3", lw=1.5,
                      label=f"top {len(ticks)} Ritz values")
    ax_density.set_ylim(floor, float(np.max(dens.density)) * 30)
    ax_density.set_title(title)
    ax_density.legend(loc="upper right")
    pos = top[top > 0]
    plot_top_eigenvalues(ax_top, pos, C=C, log=True, label="Ritz values")
    k = outlier_verdict(top, C, tolerance)["outliers"]
    if k != C and 0 < k < len(pos):
        ax_top.axvline(k + 0.5, color="C2", ls=":", lw=1.5, label=f"largest gap (k = {k})")
        ax_top.legend(loc="upper right")
    ax_top.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
    ax_top.set_title(f"top {len(top)} Ritz values (positive: {len(pos)})")


def plot_kinds(ax: plt.Axes, densities: Mapping[str, SpectralDensity], title: str | None = None) -> plt.Axes:
    """Overlay densities of several kinds ({label: density}) on a log scale with a common floor."""
    floor = density_floor(list(densities.values()))
    styles = ["-", "--", ":", "-."]
    for i, (label, dens) in enumerate(densities.items()):
        plot_density(ax, dens, label=label, floor=floor, color=f"C{i}", ls=styles[i % 4], lw=1.8 - 0.3 * i)
    ax.set_ylim(floor, max(float(np.max(d.density)) for d in densities.values()) * 30)
    if title:
        ax.set_title(title)
    ax.legend(loc="upper right")
    return ax


def plot_gauss_newton_grid(runs: Mapping[str, Any], kinds: Sequence[str] = KINDS,
                           panel_size: tuple[float, float] = (4.2, 3.0)) -> plt.Figure:
    """C2 grid: one row per run, one column per epoch with all three kinds; each panel overlays the
    full-network densities of Hess, G and H."""
    epochs = {label: epochs_with_kinds(run, kinds) for label, run in runs.items()}
    ncols = max(1, max(len(e) for e in epochs.values()))
    fig, axes = plt.subplots(len(runs), ncols, figsize=(panel_size[0] * ncols, panel_size[1] * len(runs)),
                             squeeze=False)
    for r, (label, run) in enumerate(runs.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c >= len(epochs[label]):
                ax.set_visible(False)
                continue
            rec = run.curvature(epochs[label][c])
            plot_kinds(ax, {KIND_LABELS[k]: rec.kinds[k].full.density for k in kinds},
                       title=f"{label}, epoch {epochs[label][c]}")
            if c > 0:
                ax.set_ylabel("")
    fig.tight_layout()
    return fig


def plot_layer_tops(record: CurvatureRecord, C: int, title: str, ncols: int = 5,
                    panel_size: tuple[float, float] = (3.0, 2.6), tolerance: int = 2) -> plt.Figure:
    """C3 grid: per layer, the positive top-2C Ritz values of Hess_l (:func:`rule_values`; log scale) with C
    marked and the rule's outlier count in the title (✓ when |k − C| ≤ ``tolerance``)."""
    layers = record.kinds["hessian"].layers
    ncols = max(1, min(ncols, len(layers)))
    nrows = int(np.ceil(len(layers) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size[0] * ncols, panel_size[1] * nrows), squeeze=False)
    for ax, (layer, entry) in zip(axes.flat, layers.items()):
        top = rule_values(entry, C)
        v = outlier_verdict(top, C, tolerance)
        pos = top[top > 0]
        if len(pos):
            rank = np.arange(1, len(pos) + 1)
            ax.plot(rank, pos, "o-", ms=3.5, lw=1, color="C0")
            ax.plot(rank[:C], pos[:C], "o", ms=4, color="C3")
            log_axis(ax)
        ax.axvline(C + 0.5, color="0.3", ls="--", lw=1)
        if v["outliers"] != C:
            ax.axvline(v["outliers"] + 0.5, color="C2", ls=":", lw=1.5)
        ax.xaxis.set_major_locator(mticker.MaxNLocator(integer=True))
        ax.set_title(f"{layer}: k = {v['outliers']} {'✓' if v['ok'] else '✗'}")
        ax.set_xlabel("rank")
    for ax in axes.flat[len(layers):]:
        ax.set_visible(False)
    axes[0, 0].set_ylabel("eigenvalue of Hess$_l$")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_outlier_counts(ax: plt.Axes, table: pd.DataFrame, C: int, tolerance: int = 2) -> plt.Axes:
    """C3 bars: the rule's outlier count per layer (x: layer, hue: run), with the band C ± ``tolerance``."""
    data = table.assign(name=table["run"] + ": " + table["layer"]).reset_index(drop=True)
    sns.barplot(data=data, x="name", y="outliers", hue="run", ax=ax, dodge=False)
    ax.set_xticks(range(len(data)), data["layer"], rotation=45, ha="right")
    ax.axhspan(C - tolerance, C + tolerance, color="C2", alpha=0.15, lw=0, label=f"C ± {tolerance}")
    ax.axhline(C, color="C2", ls="--", lw=1.2, label=f"C = {C}")
    ax.set_xlabel("layer (forward order; colour: run)")
    ax.set_ylabel("outliers k (largest gap)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return ax


def plot_gauss_newton_trends(table: pd.DataFrame, top_rel: float = 0.10, w1_rel: float = 0.05,
                             res_rel: float = 0.10) -> plt.Figure:
    """C2 over training, one line per run (rows of :func:`gauss_newton_table`): (left) W₁(Hess, G) and,
    dashed, W₁(Hess, H), both / range(Hess); (middle) median relative difference of the top-C eigenvalues
    of G and Hess; (right) max |λ(H)| / λ_max(Hess). The rule's thresholds are grey lines."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.0))
    panels = [("w1_hess_ggn_rel", "W$_1$ / range(Hess)", w1_rel), ("topC_rel_diff_median",
              "median |λ$_k$(G) − λ$_k$(Hess)| / λ$_k$(Hess), k ≤ C", top_rel),
              ("res_radius_rel", "max |λ(H)| / λ$_{max}$(Hess)", res_rel)]
    for i, (label, group) in enumerate(table.groupby("run", sort=False)):
        for ax, (col, ylabel, thr) in zip(axes, panels):
            ax.plot(group["epoch"], group[col], "o-", color=f"C{i}", label=f"{label}" + (": Hess vs G" if
                    col == "w1_hess_ggn_rel" else ""))
            ax.set_ylabel(ylabel)
        axes[0].plot(group["epoch"], group["w1_hess_res_rel"], "s--", color=f"C{i}", alpha=0.6,
                     label=f"{label}: Hess vs H")
    for ax, (_, _, thr) in zip(axes, panels):
        ax.axhline(thr, color="0.4", ls=":", lw=1.5, label=f"threshold {thr:g}")
        ax.set_yscale("log")
        ax.set_xlabel("epoch")
    axes[0].legend(fontsize="x-small")
    axes[1].legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_top_comparison(runs: Mapping[str, Any], epochs: Mapping[str, int], res_rel: float | None = None) -> plt.Figure:
    """C2 at one epoch per run: (left) the top-C eigenvalues of G against those of Hess (log-log, with the
    diagonal); (right) the top-C eigenvalues of H and of G divided by λ_max(Hess), against rank k, with
    ±``res_rel`` (the rule's bound on H) as grey dotted lines when given."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.4))
    lo, hi = np.inf, 0.0
    for i, (label, run) in enumerate(runs.items()):
        C = run_classes(run)
        kinds = run.curvature(epochs[label]).kinds
        th, tg, tr = (np.asarray(kinds[k].full.top, dtype=float)[:C] for k in KINDS)
        n = min(len(th), len(tg))
        keep = (th[:n] > 0) & (tg[:n] > 0)
        ax0.plot(th[:n][keep], tg[:n][keep], "o", color=f"C{i}", label=f"{label} (epoch {epochs[label]})")
        if keep.any():
            lo, hi = min(lo, th[:n][keep].min(), tg[:n][keep].min()), max(hi, th[:n][keep].max(), tg[:n][keep].max())
        ax1.plot(np.arange(1, len(tr) + 1), tr / th[0], "s-", color=f"C{i}", label=f"{label}: H")
        ax1.plot(np.arange(1, len(tg) + 1), tg / th[0], "o:", color=f"C{i}", alpha=0.6, label=f"{label}: G")
    if hi > 0:
        ax0.plot([lo / 1.5, hi * 1.5], [lo / 1.5, hi * 1.5], color="0.4", ls="--", lw=1, label="G = Hess")
    ax0.set(xscale="log", yscale="log", xlabel="λ$_k$(Hess)", ylabel="λ$_k$(G)",
            title="top-C eigenvalues: G against Hess")
    ax0.legend(fontsize="small")
    ax1.axhline(0.0, color="0.6", lw=0.8)
    if res_rel is not None:
        for sign in (1, -1):
            ax1.axhline(sign * res_rel, color="0.4", ls=":", lw=1.5,
                        label=f"±{res_rel:g} (bound on H)" if sign > 0 else None)
    ax1.set(xlabel="rank k", ylabel="λ$_k$ / λ$_{max}$(Hess)", title="top-C eigenvalues of H and G, relative")
    ax1.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig


def plot_outlier_history(history: pd.DataFrame, tolerance: int = 2) -> plt.Figure:
    """C1 during training, one line per run (rows of :func:`full_spectrum_summary` per epoch): (left) the
    rule's outlier count k with the band C ± ``tolerance``; (right) the SLQ mass at |λ| < 1 % of λ_max."""
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 3.8))
    for i, (label, g) in enumerate(history.groupby("run", sort=False)):
        ax0.plot(g["epoch"], g["outliers"], "o-", color=f"C{i}", label=label)
        ax1.plot(g["epoch"], g["bulk_mass_1%"], "o-", color=f"C{i}", label=label)
    C = int(history["C"].iloc[0])
    ax0.axhspan(C - tolerance, C + tolerance, color="C2", alpha=0.15, lw=0, label=f"C ± {tolerance}")
    ax0.axhline(C, color="C2", ls="--", lw=1.2)
    ax0.set(xlabel="epoch", ylabel="outliers k (largest gap)", title="outlier count of the full Hessian")
    ax1.set(xlabel="epoch", ylabel="mass at |λ| < 1 % λ$_{max}$", title="spectral mass near zero (SLQ)")
    ax0.legend(fontsize="small")
    ax1.legend(fontsize="small")
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- notebooks 04-05 (depth_trends)


def plot_depth_profiles(dists: Mapping[str, pd.DataFrame], epochs: Mapping[str, int], min_epoch: int = 1,
                        metrics: Sequence[str] = METRICS, panel_size: tuple[float, float] = (3.3, 2.9)) -> plt.Figure:
    """Distance to the full spectrum (÷ its max over layers, per run and metric) against normalised depth.

    Row (a): at ``epochs[run]``; row (b): summed over the epochs >= ``min_epoch``. One column per
    metric, one line per run; filled markers = layers in the middle half, a star = the closest layer.
    """
    fig, axes = plt.subplots(2, len(metrics), figsize=(panel_size[0] * len(metrics), panel_size[1] * 2),
                             sharex=True, sharey=True, squeeze=False)
    for row, which in enumerate(("epoch", "sum")):
        for col, metric in enumerate(metrics):
            ax = axes[row, col]
            for i, (label, dist) in enumerate(dists.items()):
                table = epoch_distances(dist, epochs[label]) if which == "epoch" else summed_distances(dist, min_epoch)
                _profile(ax, table, metric, f"C{i}", label)
            ax.axhline(1.0, color="0.8", lw=0.8, zorder=0)
            ax.set_title(metric if row == 0 else "")
            ax.set_xlabel("normalised depth" if row == 1 else "")
        axes[row, 0].set_ylabel(("(a) at epoch " + ", ".join(sorted({str(e) for e in epochs.values()}))
                                 if which == "epoch" else f"(b) summed, epochs ≥ {min_epoch}") + "\ndistance / max")
    axes[0, 0].set_ylim(bottom=0)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], ls="", marker="*", ms=13, color="0.6", mec="black", mew=0.8))
    labels.append("closest layer")
    handles.append(plt.Line2D([], [], ls="", marker="o", color="0.3", mfc="0.3"))
    labels.append("middle-half layer (filled)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), bbox_to_anchor=(0.5, -0.01), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def _profile(ax: plt.Axes, table: pd.DataFrame, metric: str, colour: str, label: str) -> None:
    x = table["normalised_depth"].to_numpy()
    d = table[metric].to_numpy(dtype=float)
    y = d / d.max() if d.max() > 0 else d
    L = len(d)
    mid = np.array([is_middle(i, L) for i in range(L)])
    ax.plot(x, y, "-", color=colour, lw=1.5, label=label)
    ax.plot(x[mid], y[mid], "o", color=colour, ms=5)
    ax.plot(x[~mid], y[~mid], "o", color=colour, mfc="white", ms=5)
    k = int(np.argmin(d))
    ax.plot(x[k], y[k], "*", color=colour, mec="black", mew=0.8, ms=15, zorder=5)


def plot_distance_heatmaps(dists: Mapping[str, pd.DataFrame], metric: str = "W1 [0,1]",
                           annotate_max_cols: int = 25) -> plt.Figure:
    """Layer × epoch heatmap of one distance, one panel per run (stacked); the closest layer of each epoch
    is boxed and middle-half layers are marked "(mid)"."""
    sizes = [(d["epoch"].nunique(), d["layer"].nunique()) for d in dists.values()]
    width = max(6.0, 0.62 * max(e for e, _ in sizes) + 3.5)
    heights = [0.36 * l + 1.0 for _, l in sizes]
    fig, axes = plt.subplots(len(dists), 1, figsize=(width, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (label, dist) in zip(axes.flat, dists.items()):
        m = dist.pivot(index="depth", columns="epoch", values=metric).sort_index()
        layers = dist.drop_duplicates("depth").sort_values("depth")["layer"].tolist()
        rows = [f"{l} (mid)" if is_middle(i, len(layers)) else l for i, l in enumerate(layers)]
        plot_heatmap(m.to_numpy(), rows, [str(c) for c in m.columns], ax=ax, title=label,
                     annot=m.shape[1] <= annotate_max_cols, fmt=".3f", cmap="mako_r", cbar_label=metric,
                     annot_kws={"fontsize": 7})
        for j, k in enumerate(np.nanargmin(m.to_numpy(), axis=0)):
            ax.add_patch(Rectangle((j, k), 1, 1, fill=False, edgecolor="crimson", lw=2))
        ax.set_xlabel("epoch")
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def _plot_series(ax: plt.Axes, x: Any, y: Any, stderr: Any = None, log: bool = True, band_alpha: float = 0.2,
                 **kw) -> None:
    """A quantity against epochs with a ±stderr band. With ``log``, estimates <= 0 (a Hutchinson trace
    near zero can come out negative) are left off the line and marked by a hollow triangle at the bottom."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    shown = np.where(y > 0, y, np.nan) if log else y
    (line,) = ax.plot(x, shown, marker="o", ms=3.5, **kw)
    if stderr is not None:
        s = np.asarray(stderr, dtype=float)
        lo = np.maximum(y - s, np.where(y > 0, y, np.inf).min() / 10) if log else y - s
        ax.fill_between(x, lo, y + s, color=line.get_color(), alpha=band_alpha, lw=0)
    if log:
        ax.set_yscale("log")
        bad = ~(y > 0)
        if bad.any():
            ax.plot(x[bad], np.full(bad.sum(), 0.03), "v", mfc="none", color=line.get_color(), ms=7,
                    transform=ax.get_xaxis_transform(), clip_on=False)


def plot_trends(series: Mapping[str, pd.DataFrame], from_fraction: float = 0.5,
                panel_size: tuple[float, float] = (4.3, 3.1)) -> plt.Figure:
    """One row per run: (1) full-network trace (± stderr) and λ_max, log y; (2) each layer's trace ÷ its
    largest |trace| over epochs (± stderr, linear y); (3) each layer's λ_max, log y. The window of the
    trend rule (the second half of training) is shaded; ▽ at the bottom of a log panel marks an estimate <= 0."""
    fig, axes = plt.subplots(len(series), 3, figsize=(panel_size[0] * 3, panel_size[1] * len(series)), squeeze=False)
    for r, (label, s) in enumerate(series.items()):
        row = axes[r]
        e_min, e_max = s["epoch"].min(), s["epoch"].max()
        for ax in row:
            ax.axvspan(e_min + from_fraction * (e_max - e_min), e_max, color="0.92", zorder=0)
        full = s[s["scope"] == FULL]
        _plot_series(row[0], full["epoch"], full["trace"], full["trace_stderr"], label="trace (± s.e.)", color="C0")
        _plot_series(row[0], full["epoch"], full["lambda_max"], label="λ_max", color="C3")
        row[0].legend(loc="best")
        row[0].set_title(f"{label}: full network")
        layers = s[s["scope"] != FULL]
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, layers["depth"].nunique()))
        for c, (_, g) in zip(colours, layers.groupby("depth", sort=True)):
            scale = g["trace"].abs().max() or 1.0
            _plot_series(row[1], g["epoch"], g["trace"] / scale, g["trace_stderr"] / scale, log=False,
                         band_alpha=0.1, color=c, lw=1.3)
            _plot_series(row[2], g["epoch"], g["lambda_max"], label=g["scope"].iloc[0], color=c, lw=1.3)
        row[1].axhline(0, color="0.5", lw=0.8)
        row[1].set_title("layer traces ÷ max |trace| (± s.e.)")
        row[2].set_title("layer λ_max")
        row[2].legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small", frameon=False)
        for ax in (row[0], row[2]):
            log_axis(ax)
        for ax in row:
            ax.set_xlabel("epoch" if r == len(series) - 1 else "")
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- notebooks 06-08 (regularisation)


def plot_sweep(table: pd.DataFrame, corr: Mapping[str, Mapping[str, float]] | None = None) -> plt.Figure:
    """Final Hessian trace (± stderr, log axis) against training loss, test accuracy and the two gaps.

    One colour per setting, one point per seed; panel titles give the partial Spearman ρ given the
    training loss (``corr['partial_<col>']``) when ``corr`` is passed.
    """
    panels = [("train_loss", "final training loss"), ("test_acc", "test accuracy"),
              ("acc_gap", "train acc. − test acc."), ("loss_gap", "test loss − train loss")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), constrained_layout=True)
    settings = list(dict.fromkeys(table["run"]))
    for ax, (col, name) in zip(axes, panels):
        for _, r in table.iterrows():
            i = settings.index(r["run"])
            ax.errorbar(r["trace"], r[col], xerr=r["trace_stderr"], fmt="o", color=f"C{i % 10}", capsize=3,
                        label=r["change"] if r["seed"] == table.loc[table["run"] == r["run"], "seed"].iloc[0] else None)
        log_axis(ax, "x")
        ax.set_xlabel("Hessian trace after the last epoch")
        ax.set_ylabel(name)
        c = (corr or {}).get(f"partial_{col}")
        if c:
            ax.set_title(f"partial ρ | train loss = {c['rho']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]", fontsize="medium")
    axes[0].legend(fontsize="small", title="setting")
    return fig


def plot_paired(comparisons: pd.DataFrame, lines: Mapping[str, float] | None = None,
                scale: float = 100, unit: str = "points") -> plt.Figure:
    """Paired 95 % intervals (one row per comparison) with the per-seed differences behind them.

    ``lines``: label -> x position of reference lines (e.g. the equivalence margin), drawn dashed.
    """
    fig, ax = plt.subplots(figsize=(7, 0.6 * len(comparisons) + 1.6), constrained_layout=True)
    y = np.arange(len(comparisons))
    for i, (_, r) in enumerate(comparisons.iterrows()):
        ax.errorbar(scale * r["diff"], i, xerr=[[scale * (r["diff"] - r["lo"])], [scale * (r["hi"] - r["diff"])]],
                    fmt="D", color="k", capsize=4)
    ax.axvline(0, color="grey", lw=1)
    for j, (label, x) in enumerate((lines or {}).items()):
        ax.axvline(scale * x, color=f"C{j + 1}", ls="--", lw=1, label=label)
    ax.set_yticks(y, comparisons["comparison"])
    ax.invert_yaxis()
    ax.set_xlabel(f"paired difference ({unit}), 95 % interval over seeds")
    if lines:
        ax.legend(fontsize="small")
    return fig


def plot_trace_matching(tables: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Trace reduction (SGD − arm, seed 0) against γ per middle rule; dashed: full HTR's; ringed: the chosen γ."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    for i, (label, t) in enumerate(tables.items()):
        g = t[t["reduction"].notna()]
        ax.plot(g["gamma"], g["reduction"], marker="o", color=f"C{i}", label=label)
        ch = g[g["chosen"]]
        ax.scatter(ch["gamma"], ch["reduction"], s=160, facecolors="none", edgecolors=f"C{i}", lw=1.5)
        if g["target"].notna().any():
            ax.axhline(float(g["target"].iloc[0]), color=f"C{i}", ls="--", lw=1)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("γ of the middle penalty")
    ax.set_ylabel("trace reduction vs SGD (seed 0)")
    ax.legend(fontsize="small", title="dashed: full HTR's")
    return fig


def plot_gamma_selection(tables: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Validation accuracy against γ for each (legend label -> selection table); dashed: SGD (γ = 0); ringed: the chosen γ."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8), constrained_layout=True)
    for i, (rule, t) in enumerate(tables.items()):
        g = t[(t["gamma"] > 0) & t["val_acc"].notna()]
        ax.plot(g["gamma"], g["val_acc"], marker="o", color=f"C{i}", label=rule)
        ch = t[t["chosen"] & t["val_acc"].notna()]
        ax.scatter(ch["gamma"], ch["val_acc"], s=160, facecolors="none", edgecolors=f"C{i}", lw=1.5)
        for _, r in t[t["status"] == "diverged"].iterrows():
            ax.axvline(r["gamma"], color=f"C{i}", ls=":", lw=1)
    sgd = next((t.loc[t["gamma"] == 0, "val_acc"] for t in tables.values() if (t["gamma"] == 0).any()), None)
    if sgd is not None and len(sgd):
        ax.axhline(float(sgd.iloc[0]), color="k", ls="--", lw=1, label="SGD (γ = 0)")
    ax.set_xscale("log")
    ax.set_xlabel("γ")
    ax.set_ylabel("validation accuracy (seed 0)")
    ax.legend(fontsize="small")
    return fig


def plot_arms(results: pd.DataFrame, columns: Sequence[tuple[str, str]] = (("test_acc", "test accuracy"),
                                                                             ("trace", "final Hessian trace"))
              ) -> plt.Figure:
    """One panel per column: each seed as a dot, mean ± std as a bar, one row per arm."""
    done = results[results["status"] == "done"].copy()
    done["arm label"] = done["arm"].map(lambda a: ARM_LABELS.get(a, a))
    fig, axes = plt.subplots(1, len(columns), figsize=(2.5 + 3.6 * len(columns), 0.5 * done["arm"].nunique() + 1.8),
                             constrained_layout=True, squeeze=False, sharey=True)
    for i, (ax, (col, name)) in enumerate(zip(axes[0], columns)):
        sns.pointplot(data=done, x=col, y="arm label", errorbar="sd", capsize=0.3, linestyle="none", color="k",
                      markers="d", ax=ax)
        sns.stripplot(data=done, x=col, y="arm label", hue="seed", palette="deep", size=6, jitter=False, ax=ax,
                      legend=i == len(columns) - 1)
        ax.set_xlabel(f"{name}\n(dots: seeds; ◆ mean ± std)")
        ax.set_ylabel("")
        v = done[col].dropna()
        if col == "trace" and len(v) and v.min() > 0 and v.max() / v.min() > 20:
            ax.set_xscale("log")
    if axes[0][-1].get_legend() is not None:
        sns.move_legend(axes[0][-1], "upper left", bbox_to_anchor=(1.02, 1), title="seed", frameon=False)
    return fig


def plot_step_costs(costs: pd.DataFrame) -> plt.Figure:
    """Median seconds per training step (interquartile bars) for plain SGD and each penalty rule."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2), constrained_layout=True)
    y = np.arange(len(costs))
    ax.barh(y, costs["median_s"], xerr=[costs["median_s"] - costs["q25_s"], costs["q75_s"] - costs["median_s"]],
            color=[f"C{i}" for i in range(len(costs))], capsize=3)
    ax.set_yticks(y, [f"{r['step']} ({r['x_plain']:.1f}× plain)" for _, r in costs.iterrows()])
    ax.invert_yaxis()
    ax.set_xlabel("seconds per training step (median, IQR)")
    return fig


# ------------------------------------------------------------------- spectra claims under PROTOCOL.md


def _runs_axes(n: int, ncols: int = 3, size: tuple[float, float] = (4.6, 3.4)) -> tuple[plt.Figure, np.ndarray]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_outliers_vs_epoch(table: pd.DataFrame, C: int, block: str = "full") -> plt.Figure:
    """Per run: eigenvalues above the bulk edge at every read epoch (one line per examples-per-class), the
    band C ± 2, and the training loss on a second axis."""
    t = table[table["block"] == block]
    runs = list(dict.fromkeys(t["run"]))
    fig, axes = _runs_axes(len(runs))
    for ax, run in zip(axes, runs):
        g = t[t["run"] == run]
        ax.axhspan(C - 2, C + 2, color="0.9", label=f"C ± 2 (C = {C})")
        for n, gn in g.groupby("per_class"):
            gn = gn.sort_values("epoch")
            ax.plot(gn["epoch"], gn["outliers"], "o-", label=f"outliers, {n}/class")
            ax.plot(gn["epoch"], gn["gap_count_earlier"], "x:", alpha=0.6, label=f"earlier gap count, {n}/class")
        ax2 = ax.twinx()
        loss = g.drop_duplicates("epoch").sort_values("epoch")
        ax2.plot(loss["epoch"], loss["train_loss"], color="0.4", lw=1, ls="--")
        ax2.set_ylabel("training loss (dashed)")
        ax2.grid(False)
        ax.set(title=run, xlabel="epoch", ylabel="eigenvalues above the bulk edge")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_top_with_edge(table: pd.DataFrame, tops: Mapping[str, Sequence[float]], C: int) -> plt.Figure:
    """Per run (last epoch, most examples per class): the top Hessian Ritz values, the bulk edge λ_max(G_within)
    as a dashed line and the C-th position marked; the title gives the count above the edge and, where the table
    has it, the class directions k_cls that C1's amended rule counts."""
    runs = list(tops)
    fig, axes = _runs_axes(len(runs))
    for ax, run in zip(axes, runs):
        row = table[table["run"] == run].iloc[0]
        v = np.asarray(tops[run], dtype=float)
        k = np.arange(1, len(v) + 1)
        ax.semilogy(k[v > 0], v[v > 0], "o", ms=4)
        ax.axhline(row["bulk_edge"], ls="--", color="C3", label=f"bulk edge {row['bulk_edge']:.3g}")
        ax.axvline(C + 0.5, ls=":", color="0.5", label=f"k = C = {C}")
        # the verdict counts class directions (amendment S2), not eigenvalues above the edge: both in the title
        kcls = f", k_cls = {int(row['class_directions'])}" if pd.notna(row.get("class_directions", np.nan)) else ""
        ax.set(title=f"{run}: epoch {row['epoch']}, {row['per_class']}/class\nabove edge: {row['outliers']}{kcls}",
               xlabel="k", ylabel="λ_k(Hess)")
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_disagreement(table: pd.DataFrame, threshold: float = 0.10, by: str = "run") -> plt.Figure:
    """Top-C disagreement with Hess of G (filled) and of H (open) per epoch, log scale, the rule's threshold dashed."""
    groups = list(dict.fromkeys(table[by]))
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for i, name in enumerate(groups):
        g = table[table[by] == name].sort_values("epoch")
        ax.semilogy(g["epoch"], g["a_ggn"], "o-", color=f"C{i % 10}", label=f"{name}: G")
        if "a_residual" in g and g["a_residual"].notna().any():
            ax.semilogy(g["epoch"], g["a_residual"], "o--", mfc="none", color=f"C{i % 10}", label=f"{name}: H")
    ax.axhline(threshold, ls="--", color="k", lw=1, label=f"threshold {threshold:g}")
    ax.set(xlabel="epoch", ylabel="max_k≤C |λ_k(X) − λ_k(Hess)| / λ_k(Hess)")
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return fig


def plot_layer_distances(table: pd.DataFrame, null: pd.DataFrame | None = None) -> plt.Figure:
    """Per run: W1 of each layer to the full Hessian against normalised depth, one line per read epoch, the
    middle half shaded, the noise floor as a band above the smallest distance, the size-matched null as bars."""
    runs = list(dict.fromkeys(table["run"]))
    fig, axes = _runs_axes(len(runs))
    for ax, run in zip(axes, runs):
        g = table[table["run"] == run]
        L = int(g["num_layers"].iloc[0])
        ax.axvspan(0.25, 0.75, color="0.93", label="middle half")
        for j, (epoch, ge) in enumerate(g.groupby("epoch")):
            ge = ge.sort_values("index")
            x = (ge["index"] + 0.5) / L
            ax.semilogy(x, ge["w1"], "o-", color=plt.cm.viridis(j / max(1, g["epoch"].nunique() - 1)),
                        label=f"epoch {epoch} (floor {ge['floor'].iloc[0]:.2g})")
        if null is not None and len(null):
            nl = null[null["run"] == run]
            nl = nl[nl["epoch"] == nl["epoch"].max()].merge(g[["layer", "index"]].drop_duplicates(), on="layer")
            x = (nl["index"] + 0.5) / L
            ax.errorbar(x, nl["null_mean"], yerr=[nl["null_mean"] - nl["null_min"], nl["null_max"] - nl["null_mean"]],
                        fmt="s", color="C3", mfc="none", capsize=3, label="random subsets, same size (last epoch)")
        ax.set(title=run, xlabel="normalised depth", ylabel="W1(layer, full)")
        ax.legend(fontsize="xx-small")
    fig.tight_layout()
    return fig


def plot_curvature_trends(series: pd.DataFrame, trends: pd.DataFrame) -> plt.Figure:
    """Full-network λ_max and trace against the epoch per run (log scale), Kendall τ and p in the legend, and the
    training loss dashed on a second axis."""
    full = series[series["scope"] == FULL]
    runs = list(dict.fromkeys(full["run"]))
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.2 * len(runs)), squeeze=False)
    for (ax_l, ax_t), run in zip(axes, runs):
        g = full[full["run"] == run].sort_values("epoch")
        for ax, q in ((ax_l, "lambda_max"), (ax_t, "trace")):
            r = trends[(trends["run"] == run) & (trends["scope"] == FULL) & (trends["quantity"] == q)].iloc[0]
            ax.semilogy(g["epoch"], g[q], "o-", ms=3, label=f"τ = {r['tau']:.2f}, p↓ = {r['p_decrease']:.2g}")
            ax2 = ax.twinx()
            ax2.plot(g["epoch"], g["train_loss"], color="0.4", lw=1, ls="--")
            ax2.grid(False)
            ax2.set_ylabel("training loss (dashed)")
            ax.set(title=f"{run}: {q}", xlabel="epoch")
            ax.legend(fontsize="x-small")
    fig.tight_layout()
    return fig


def plot_c4_partial(distances: pd.DataFrame, partial: pd.DataFrame, c: float, b: float) -> plt.Figure:
    """What decides C4 (amendment 6): left, each deciding layer's log normalised W1 (epoch mean) against its log size
    share; right, the partial residual log W1 − α̂_net − b̂ log share against |d − 1/2| with the fitted ĉ |d − 1/2|
    (a U-shape in depth that layer size explains leaves ĉ ≤ 0)."""
    layers = (distances.assign(log_w=np.log(distances["w1_normalised"]), share=distances["size"])
              .groupby(["run", "index"], sort=False).agg(log_w=("log_w", "mean"), size=("size", "first"))
              .reset_index())
    layers["log_share"] = layers.groupby("run")["size"].transform(lambda s: np.log(s / s.sum()))
    both = layers.merge(pd.DataFrame(partial), on=["run", "index"])
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (run, g) in enumerate(both.groupby("run", sort=False)):
        left.plot(g["log_share"], g["log_w"], "o", color=f"C{i}", label=run)
        right.plot(g["distance_from_middle"], g["partial_log_w1"], "o", color=f"C{i}", label=run)
    z = np.linspace(0, both["distance_from_middle"].max(), 50)
    right.plot(z, c * z, "k-", lw=1, label=f"ĉ |d − 1/2|, ĉ = {c:.2f} (end/centre {np.exp(c / 2):.2f})")
    left.set(xlabel="log size share log(n_l / N)", ylabel="log normalised W1 (epoch mean)",
             title=f"layer size (b̂ = {b:.2f})")
    right.set(xlabel="|d − 1/2| (0 = the middle of depth)", ylabel="log W1 − α̂_net − b̂ log share",
              title="depth after size (decides)")
    left.legend(fontsize="x-small")
    right.legend(fontsize="x-small")
    fig.tight_layout()
    return fig
