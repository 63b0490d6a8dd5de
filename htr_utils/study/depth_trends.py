"""Notebooks 04 (C4, layer vs full spectrum) and 05 (C5, trace and λ_max trends): tables and verdicts.

Both notebooks read the per-epoch curvature records of the shared spectra runs
(:meth:`htr_utils.study.runs.Run.curvature`; see :meth:`htr_utils.study.training.Trainer.curvature` for their
layout) and turn them into

* C4 — :func:`distance_table` (every epoch × layer, the five distance variants of
  :func:`layer_distances`, the raw-axis ones on a grid that resolves both
  spectra), :func:`closest_layers` (the layer closest to the
  full Hessian, distances summed over epochs, and whether it lies in the middle half),
  and :func:`c4_verdict`;
* C5 — :func:`curvature_series` (full and layer traces with standard errors and largest
  eigenvalues per epoch), :func:`trend_table` (Spearman trend of each quantity over the second
  half of training, :func:`htr_utils.study.statistics.decreasing_trend`) and :func:`c5_verdict`.

The functions take curvature records (:mod:`htr_utils.study.records`), so they are tested on constructed spectra;
:func:`load_records` reads them from a run.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

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


