"""Notebooks 04 (C4, layer vs full spectrum) and 05 (C5, trace and λ_max trends): tables, verdicts, figures.

Both notebooks read the per-epoch curvature records of the shared spectra runs
(:meth:`htr_utils.study.runs.Run.curvature`; see :meth:`htr_utils.study.training.Trainer.curvature` for their
layout) and turn them into

* C4 — :func:`distance_table` (every epoch × layer, the five distance variants of
  :func:`layer_distances`, the raw-axis ones on a grid that resolves both
  spectra), :func:`closest_layers` (the layer closest to the
  full Hessian, distances summed over epochs, and whether it lies in the middle half),
  :func:`c4_verdict`, and the figures :func:`plot_depth_profiles` / :func:`plot_distance_heatmaps`;
* C5 — :func:`curvature_series` (full and layer traces with standard errors and largest
  eigenvalues per epoch), :func:`trend_table` (Spearman trend of each quantity over the second
  half of training, :func:`htr_utils.study.statistics.decreasing_trend`), :func:`c5_verdict`, and the
  figure :func:`plot_trends`.

The functions take curvature records (:mod:`htr_utils.study.records`), so they are tested on constructed spectra;
:func:`load_records` reads them from a run.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..lanczos import SpectralDensity
from ..spectra import authors_distance, spectral_distance
from .records import CurvatureRecord, KindCurvature
from .statistics import decreasing_trend
from .verdicts import Verdict, VerdictResult

DISTANCE_VARIANTS: dict[str, dict] = {
    "W1 raw": {"metric": "wasserstein", "rescale": False},
    "W1 [0,1]": {"metric": "wasserstein", "rescale": True},
    "KL raw": {"metric": "kl", "rescale": False},
    "KL [0,1]": {"metric": "kl", "rescale": True},
    "authors": {"authors": True},
}


def layer_distances(full: SpectralDensity, layers: Mapping[str, SpectralDensity]) -> pd.DataFrame:
    """One row per layer (forward order): its depth, normalised depth (0..1) and every distance variant to ``full``.

    KL is KL(layer ‖ full). "authors" is the public code's density-value variant.
    """
    names = list(layers)
    rows = []
    for i, name in enumerate(names):
        row = {"layer": name, "depth": i, "normalised_depth": i / max(len(names) - 1, 1)}
        for label, kw in DISTANCE_VARIANTS.items():
            if kw.get("authors"):
                row[label] = authors_distance(layers[name], full)
            else:
                row[label] = spectral_distance(layers[name], full, kw["metric"], rescale=kw["rescale"])
        rows.append(row)
    return pd.DataFrame(rows)



#: all distance variants (columns of :func:`distance_table`), in the order of DISTANCE_VARIANTS
METRICS: tuple[str, ...] = tuple(DISTANCE_VARIANTS)
#: distances between the spectra as distributions over the eigenvalue axis (the faithful ones)
FAITHFUL: tuple[str, ...] = ("W1 raw", "W1 [0,1]", "KL raw", "KL [0,1]")
AUTHORS = "authors"
FULL = "full"  # scope name of the whole network in curvature_series / trend_table


# ============================================================================ records


def load_records(run: Any, kind: str = "hessian") -> list[CurvatureRecord]:
    """The curvature records of ``run`` (a :class:`htr_utils.study.runs.Run`) that contain ``kind``, by epoch."""
    records = [run.curvature(e) for e in run.curvature_epochs()]
    records = [r for r in records if kind in r.kinds]
    if not records:
        raise ValueError(f"{run!r} has no curvature record with kind {kind!r}")
    return records


def _entry(record: CurvatureRecord, kind: str) -> KindCurvature:
    entry = record.kinds[kind]
    if not entry.layers:
        raise ValueError(f"epoch {record.epoch}: no layer spectra for kind {kind!r} (was the run layerwise?)")
    return entry


# ============================================================================ C4: layer vs full distances


def is_middle(index: int, num_layers: int) -> bool:
    """The middle half of L layers: indices i with L/4 <= i < 3L/4 (the same rule as layers.middle_layers)."""
    return num_layers / 4 <= index < 3 * num_layers / 4


def closest_layer_is_middle(distances: Sequence[float]) -> tuple[int, bool]:
    """Rule for C4: the layer with the smallest distance (ties: the first) lies in the middle half."""
    d = np.asarray(distances, dtype=float)
    k = int(np.argmin(d))
    return k, is_middle(k, len(d))


def distance_table(records: Iterable[CurvatureRecord], kind: str = "hessian") -> pd.DataFrame:
    """One row per (epoch, layer): depth, normalised depth and the five distances of the layer's spectrum
    to the full spectrum (columns :data:`METRICS`, see :func:`layer_distances`)."""
    frames = []
    for rec in records:
        entry = _entry(rec, kind)
        table = layer_distances(entry.full.density, {l: v.density for l, v in entry.layers.items()})
        table.insert(0, "epoch", rec.epoch)
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def summed_distances(dist: pd.DataFrame, min_epoch: int = 1) -> pd.DataFrame:
    """Each layer's distances summed over the epochs >= ``min_epoch`` (rows: layers in forward order)."""
    sel = dist[dist["epoch"] >= min_epoch]
    if sel.empty:
        raise ValueError(f"no epoch >= {min_epoch} in the distance table (epochs {sorted(dist['epoch'].unique())})")
    out = sel.groupby(["depth", "layer"], sort=True)[list(METRICS)].sum().reset_index()
    out.insert(2, "normalised_depth", out["depth"] / max(len(out) - 1, 1))
    return out


def epoch_distances(dist: pd.DataFrame, epoch: int) -> pd.DataFrame:
    """The rows of one epoch (layers in forward order)."""
    out = dist[dist["epoch"] == epoch].sort_values("depth").reset_index(drop=True)
    if out.empty:
        raise ValueError(f"epoch {epoch} is not in the distance table")
    return out


def closest_layers(dists: Mapping[str, pd.DataFrame], min_epoch: int = 1, epoch: int | None = None,
                   metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per (run, metric): the layer closest to the full spectrum and whether it lies in the middle half.

    Distances are summed over the epochs >= ``min_epoch`` (or taken at ``epoch`` when given); the rule is
    :func:`closest_layer_is_middle` (middle half: L/4 <= index < 3L/4, ties: first).
    """
    rows = []
    for label, dist in dists.items():
        table = summed_distances(dist, min_epoch) if epoch is None else epoch_distances(dist, epoch)
        layers = list(table["layer"])
        middle = [l for i, l in enumerate(layers) if is_middle(i, len(layers))]
        for metric in metrics:
            k, mid = closest_layer_is_middle(table[metric].to_numpy())
            rows.append({"run": label, "metric": metric, "closest": k, "closest_layer": layers[k],
                         "num_layers": len(layers), "middle": mid, "middle_layers": ", ".join(middle),
                         "faithful": metric in FAITHFUL})
    return pd.DataFrame(rows)


def closest_summary(closest: pd.DataFrame) -> pd.DataFrame:
    """The verdict table: rows = runs, columns = metrics, cells 'index (layer): middle yes/no'."""
    cell = closest.apply(lambda r: f"{r['closest']} ({r['closest_layer']}): {'yes' if r['middle'] else 'no'}", axis=1)
    table = closest.assign(cell=cell).pivot(index="run", columns="metric", values="cell")
    table = table[[m for m in METRICS if m in table.columns]].reindex(list(dict.fromkeys(closest["run"])))
    table.columns.name = None
    return table


def middle_fraction_by_epoch(dists: Mapping[str, pd.DataFrame], min_epoch: int = 1,
                             metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Per run (rows) and metric (columns): the fraction of epochs >= ``min_epoch`` whose closest layer
    lies in the middle half (how stable the summed result is from epoch to epoch)."""
    out = {}
    for label, dist in dists.items():
        epochs = sorted(e for e in dist["epoch"].unique() if e >= min_epoch)
        out[label] = {m: np.mean([closest_layer_is_middle(epoch_distances(dist, e)[m].to_numpy())[1] for e in epochs])
                      for m in metrics}
    return pd.DataFrame(out).T[list(metrics)]


def c4_verdict(closest: pd.DataFrame, faithful: Sequence[str] = FAITHFUL) -> VerdictResult:
    """The C4 rule on a :func:`closest_layers` table.

    With the faithful metrics only: *reproduced* if the closest layer is in the middle half for a strict
    majority of (run, metric) pairs AND every run has it in the middle under at least one metric;
    *not reproduced* if it is in the middle for at most half of the pairs; *inconclusive* otherwise
    (a majority, but some run never has its closest layer in the middle). The authors' variant is
    summarised separately and does not enter the verdict.
    """
    fa = closest[closest["metric"].isin(faithful)]
    if fa.empty:
        raise ValueError("no faithful metric in the table")
    passed, total = int(fa["middle"].sum()), len(fa)
    per_run = fa.groupby("run", sort=False)["middle"].sum().astype(int)
    runs_without = [r for r, n in per_run.items() if n == 0]
    if 2 * passed > total and not runs_without:
        verdict = Verdict.REPRODUCED
    elif 2 * passed <= total:
        verdict = Verdict.NOT_REPRODUCED
    else:
        verdict = Verdict.INCONCLUSIVE
    au = closest[closest["metric"] == AUTHORS]
    v = {"pairs_middle": passed, "pairs_total": total,
         "per_run_middle": {r: int(n) for r, n in per_run.items()}, "runs_never_middle": runs_without,
         "authors_middle": {r["run"]: bool(r["middle"]) for _, r in au.iterrows()},
         "authors_pairs_middle": int(au["middle"].sum()), "authors_pairs_total": len(au)}
    per_run_text = "; ".join(f"{r}: {n}/{len(faithful)}" for r, n in v["per_run_middle"].items())
    measured = (f"closest layer (distance summed over epochs >= 1) in the middle half for {passed}/{total} "
                f"(run, faithful metric) pairs ({per_run_text}); authors' variant: middle for "
                f"{v['authors_pairs_middle']}/{v['authors_pairs_total']} runs")
    return VerdictResult(verdict, measured, {**v, "closest": closest.to_dict("records")})


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
    from matplotlib.patches import Rectangle

    from .plotting import plot_heatmap

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


# ============================================================================ C5: trace and λ_max trends


def curvature_series(records: Iterable[CurvatureRecord], kind: str = "hessian") -> pd.DataFrame:
    """Per epoch and scope (``"full"`` and every layer): Hutchinson trace (mean, stderr) and largest eigenvalue.

    Columns: epoch, scope, depth (-1 for the full network), trace, trace_stderr, lambda_max.
    """
    rows = []
    for rec in records:
        entry = _entry(rec, kind)
        scopes = [(FULL, -1, entry.full)] + [(l, i, v) for i, (l, v) in enumerate(entry.layers.items())]
        for scope, depth, v in scopes:
            rows.append({"epoch": rec.epoch, "scope": scope, "depth": depth,
                         "trace": v.trace.mean, "trace_stderr": v.trace.stderr,
                         "lambda_max": float(max(v.top)) if v.top else np.nan})
    return pd.DataFrame(rows).sort_values(["depth", "epoch"], kind="stable").reset_index(drop=True)


QUANTITIES = {"trace": "trace", "lambda_max": "λ_max"}


def trend_table(series: Mapping[str, pd.DataFrame], from_fraction: float = 0.5, alpha: float = 0.05) -> pd.DataFrame:
    """One row per (run, scope, quantity): :func:`htr_utils.study.statistics.decreasing_trend` over the last
    (1 − ``from_fraction``) of training, plus ``noise`` = median over that window of stderr / |trace|
    (Hutchinson's relative standard error; NaN for λ_max)."""
    rows = []
    for label, s in series.items():
        e_min, e_max = s["epoch"].min(), s["epoch"].max()
        for (depth, scope), g in s.groupby(["depth", "scope"], sort=True):
            g = g.sort_values("epoch")
            window = g["epoch"] >= e_min + from_fraction * (e_max - e_min)
            for col, name in QUANTITIES.items():
                t = decreasing_trend(g["epoch"].to_numpy(), g[col].to_numpy(), from_fraction, alpha)
                noise = (np.median(g.loc[window, "trace_stderr"] / g.loc[window, "trace"].abs())
                         if col == "trace" else np.nan)
                rows.append({"run": label, "scope": scope, "depth": depth, "quantity": name,
                             "level": "full" if scope == FULL else "layer", **t, "noise": float(noise)})
    return pd.DataFrame(rows)


def c5_verdict(trends: pd.DataFrame, layer_share: float = 0.75, min_points: int = 3) -> VerdictResult:
    """The C5 rule on a :func:`trend_table`.

    *inconclusive* if any run has fewer than ``min_points`` curvature epochs in the window (no trend
    can be tested); else
    *reproduced* if the full-network trace and λ_max are "decreasing" in every run and at least
    ``layer_share`` of the layer quantities (every layer's trace and λ_max, all runs) are;
    *not reproduced* if no full-network quantity of any run is "decreasing"; *inconclusive* otherwise.
    """
    full, layer = trends[trends["level"] == "full"], trends[trends["level"] == "layer"]
    full_down = full["trend"] == "decreasing"
    layer_down = float((layer["trend"] == "decreasing").mean()) if len(layer) else float("nan")
    too_short = bool((full["n"] < min_points).any())
    if too_short:
        verdict = Verdict.INCONCLUSIVE
    elif full_down.all() and layer_down >= layer_share:
        verdict = Verdict.REPRODUCED
    elif not full_down.any():
        verdict = Verdict.NOT_REPRODUCED
    else:
        verdict = Verdict.INCONCLUSIVE
    v = {"too_few_epochs": too_short,
            "full_decreasing": int(full_down.sum()), "full_total": len(full),
            "layer_decreasing_share": layer_down, "layer_decreasing": int((layer["trend"] == "decreasing").sum()),
            "layer_total": len(layer), "early_rise": int(trends["early_rise"].sum()), "total": len(trends),
            "full_early_rise": int(full["early_rise"].sum()),
            "increasing": int((trends["trend"] == "increasing").sum())}
    full_text = "; ".join(f"{r['run']} {r['quantity']}: {r['trend']} (ρ={r['rho']:.2f}, n={r['n']}"
                          f"{', early rise' if r['early_rise'] else ''})" for _, r in full.iterrows())
    measured = (f"full network: {v['full_decreasing']}/{v['full_total']} decreasing [{full_text}]; layers: "
                f"{v['layer_decreasing']}/{v['layer_total']} decreasing; early rise in {v['early_rise']}/{v['total']} "
                f"quantities" + ("; too few curvature epochs in the window to test a trend" if too_short else ""))
    return VerdictResult(verdict, measured, {**v, "trends": trends.to_dict("records")})


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


def _tidy_log_axis(ax: plt.Axes) -> None:
    """Plain tick labels (0.5, 2, 50) on a log y axis; minor ticks at 2 and 5 × 10^k, labelled only when the
    axis spans less than two decades (else the major labels suffice)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if ax.get_yscale() != "log":
        return
    lo, hi = ax.get_ylim()
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_locator(LogLocator(base=10))
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
    ax.yaxis.set_minor_formatter(plain if np.log10(hi / lo) < 2 else NullFormatter())
    ax.set_ylim(lo, hi)


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
            _tidy_log_axis(ax)
        for ax in row:
            ax.set_xlabel("epoch" if r == len(series) - 1 else "")
            ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig
