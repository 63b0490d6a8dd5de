"""C1-C5 under PROTOCOL.md: the readings as tables beside the training state, and the verdicts.

Inputs are the spectra runs (:class:`htr_utils.study.runs.Run`: per-epoch metrics and curvature
records) and their readings (:mod:`htr_utils.study.spectra_readings`: class structure and SLQ atoms
taken from the kept weights). The rules themselves are :mod:`htr_utils.study.spectra_rules`, the
one implementation that :mod:`htr_utils.study.calibration` also applies to simulated data.
Every table carries the training loss and accuracies of the epoch it reads.
"""
from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from . import spectra_rules as rules
from .data import num_classes
from .depth_trends import curvature_series, is_middle, load_records
from .spectra_analysis import outlier_verdict
from .verdicts import VerdictResult

FULL = "full"


# ----------------------------------------------------------------------------- helpers


def _get(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, Mapping) else getattr(obj, key)


def block(reading: Any, name: str) -> Any:
    """The block ``name`` ("full" or a layer) of a class reading."""
    return _get(reading, "blocks")[name]


def classes_of(run: Any) -> int:
    return num_classes(run.config.dataset)


def is_smooth(run: Any) -> bool:
    """A network whose layer blocks have a residual: LeNet with GELU / tanh (ReLU, max-pool and eval BatchNorm
    make the logits piecewise linear in one layer's weights, so H_l = 0 and G_l = Hess_l exactly)."""
    return run.config.model == "lenet" and run.config.model_kwargs.get("activation", "relu") != "relu"


def epoch_state(run: Any, epoch: int) -> dict[str, float]:
    """Training loss, training and test accuracy after ``epoch`` (NaN at initialisation)."""
    m = run.metrics
    row = m[m["epoch"] == epoch]
    if epoch < 1 or row.empty:
        return {"train_loss": np.nan, "train_acc": np.nan, "test_acc": np.nan}
    r = row.iloc[0]
    return {"train_loss": float(r["train_loss"]), "train_acc": float(r["train_acc"]), "test_acc": float(r["test_acc"])}


def layer_names(run: Any) -> list[str]:
    return list(run.curvature(run.curvature_epochs()[-1]).layers)


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


# ----------------------------------------------------------------------------- C1 and C3: class structure


def class_table(runs: Mapping[str, Any], readings: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (run, block, epoch, examples per class): outliers above the bulk edge, the edge, λ_1, λ_C,
    λ_C+1, the overlap of the top-C eigenvectors with the class means (and its chance value), the earlier
    largest-gap count, and the training state of the epoch."""
    rows = []
    for label, run in runs.items():
        C = classes_of(run)
        for (epoch, n), reading in sorted(_get(readings[label], "classes").items()):
            for name, b in _get(reading, "blocks").items():
                top = np.asarray(_get(b, "hess_top"), dtype=float)
                rows.append({"run": label, "block": name, "epoch": epoch, "per_class": n,
                             "outliers": int(_get(b, "outliers")), "bulk_edge": float(_get(b, "bulk_edge")),
                             "lambda_1": top[0], "lambda_C": top[C - 1] if len(top) >= C else np.nan,
                             "lambda_C+1": top[C] if len(top) > C else np.nan,
                             "overlap": float(_get(b, "overlap")), "overlap_chance": float(_get(b, "overlap_chance")),
                             "gap_count_earlier": outlier_verdict(top, C)["outliers"], "dim": int(_get(b, "dim")),
                             **epoch_state(run, epoch)})
    return pd.DataFrame(rows)


def primary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows C1 and C3 decide on: each run's last read epoch, its largest number of examples per class."""
    keep = []
    for _, g in table.groupby("run", sort=False):
        last = g[g["epoch"] == g["epoch"].max()]
        keep.append(last[last["per_class"] == last["per_class"].max()])
    return pd.concat(keep, ignore_index=True) if keep else table.iloc[:0]


def c1_verdict(table: pd.DataFrame, C: int) -> VerdictResult:
    """C1: per network, the count of Hessian eigenvalues above the bulk edge λ_max(G_within) at the last
    epoch on the most examples per class, about C (|k − C| ≤ 2); combined with "all_of"."""
    full = primary_rows(table[table["block"] == FULL])
    counts = dict(zip(full["run"], full["outliers"]))
    verdict = rules.c1_rule(counts, C)
    parts = "; ".join(f"{r['run']}: k = {r['outliers']} above the edge {r['bulk_edge']:.3g} (epoch {r['epoch']}, "
                      f"{r['per_class']}/class, training loss {r['train_loss']:.3f}; overlap with the class means "
                      f"{r['overlap']:.2f}, chance {r['overlap_chance']:.1e}; earlier gap count {r['gap_count_earlier']})"
                      for _, r in full.iterrows())
    return VerdictResult(verdict, f"C = {C}; {parts}", {"counts": counts, "C": C,
                                                        "rows": full.to_dict("records")})


def gelu_layer_agreement(runs: Mapping[str, Any]) -> pd.DataFrame:
    """C3 (b): for networks with smooth activations, top-C disagreement a_l(G_l) of every layer but the output
    layer (an identity there: H_l = 0) at every epoch >= 1 with G and H recorded, beside the training state."""
    rows = []
    for label, run in runs.items():
        if not is_smooth(run):
            continue
        C = classes_of(run)
        for e in run.curvature_epochs():
            rec = run.curvature(e)
            if e < 1 or "ggn" not in rec.kinds:
                continue
            for layer in list(rec.layers)[:-1]:  # the output layer: logits linear in it, H_l = 0 for any activation
                h, g = rec.kinds["hessian"].layers[layer].top, rec.kinds["ggn"].layers[layer].top
                res = rec.kinds["residual"].layers[layer].top if "residual" in rec.kinds else ()
                rows.append({"run": label, "layer": layer, "epoch": e,
                             "a_ggn": rules.top_disagreement(g, h, C),
                             "a_residual": rules.top_disagreement(res, h, C) if len(res) else np.nan,
                             **epoch_state(run, e)})
    return pd.DataFrame(rows)


def c3_verdict(table: pd.DataFrame, agreement: pd.DataFrame, C: int) -> VerdictResult:
    """C3: (a) share of layer blocks with about C eigenvalues above their bulk edge (last epoch, most examples
    per class), (b) share of smooth-network (layer, epoch) readings with G_l within 10 % of Hess_l."""
    layers = primary_rows(table[table["block"] != FULL])
    counts = layers["outliers"].tolist()
    a = agreement["a_ggn"].tolist() if len(agreement) else []
    verdict = rules.c3_rule(counts, C, a)
    ok = rules.about_c_codes(np.asarray(counts), C) == rules.R if counts else np.array([])
    s_a = float(np.mean(ok)) if len(ok) else float("nan")
    a = [v for v in a if np.isfinite(v)]  # a NaN (too few Ritz values) is a missing reading, as in the rule
    s_b = float(np.mean(np.asarray(a) <= rules.TOP_THRESHOLD)) if a else float("nan")
    per_run = "; ".join(f"{run}: " + ", ".join(f"{r['block']} {r['outliers']}" for _, r in g.iterrows())
                        for run, g in layers.groupby("run", sort=False))
    measured = (f"(a) {int(np.sum(ok))}/{len(ok)} layer blocks have about C = {C} eigenvalues above their bulk edge "
                f"({per_run}); (b) G_l within 10 % of Hess_l (top C) in {int(round(s_b * len(a))) if a else 0}/{len(a)} "
                f"readings of the smooth network")
    return VerdictResult(verdict, measured, {"share_counts": s_a, "share_agreement": s_b, "counts": counts,
                                             "rows": layers.to_dict("records")})


# ----------------------------------------------------------------------------- C2


def gauss_newton_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (run, epoch >= 1 with G and H): top-C disagreement of G and of H with Hess (full network),
    and the number of Hess and G Ritz values above H's edge max|λ(H)|."""
    rows = []
    for label, run in runs.items():
        C = classes_of(run)
        for e in run.curvature_epochs():
            rec = run.curvature(e)
            if e < 1 or not {"ggn", "residual"} <= set(rec.kinds):
                continue
            h, g, r = (rec.kinds[k].full for k in ("hessian", "ggn", "residual"))
            edge_h = float(np.max(np.abs(r.density.nodes)))
            rows.append({"run": label, "epoch": e, "a_ggn": rules.top_disagreement(g.top, h.top, C),
                         "a_residual": rules.top_disagreement(r.top, h.top, C), "H_edge": edge_h,
                         "hess_above_H_edge": int(np.sum(np.asarray(h.top) > edge_h)),
                         "ggn_above_H_edge": int(np.sum(np.asarray(g.top) > edge_h)),
                         "lambda_1": float(h.top[0]), **epoch_state(run, e)})
    return pd.DataFrame(rows)


def restart_floor(runs: Mapping[str, Any], readings: Mapping[str, Any]) -> dict[str, float]:
    """C2's noise floor per run: top-C disagreement between two independent Lanczos runs of Hess (last epoch,
    fewest examples per class read)."""
    out = {}
    for label, run in runs.items():
        cls = _get(readings[label], "classes")
        last = max(e for e, _ in cls)
        n = min(k for e, k in cls if e == last)
        b = block(cls[(last, n)], FULL)
        out[label] = rules.top_disagreement(_get(b, "hess_top_restart"), _get(b, "hess_top"), classes_of(run))
    return out


def c2_verdict(table: pd.DataFrame, floors: Mapping[str, float]) -> VerdictResult:
    # np.max, not max(): a NaN floor (an unread restart) must make the floor NaN wherever it sits
    floor = float(np.max(np.asarray(list(floors.values()), dtype=float))) if floors else float("nan")
    verdict = rules.c2_rule(table["a_ggn"].to_numpy(), table["a_residual"].to_numpy(), floor)
    pass_g = int((table["a_ggn"] <= rules.TOP_THRESHOLD).sum())
    pass_h = int((table["a_residual"] <= rules.TOP_THRESHOLD).sum())
    n_g, n_h = int(table["a_ggn"].notna().sum()), int(table["a_residual"].notna().sum())
    measured = (f"top-C eigenvalues of G within 10 % of Hess's in {pass_g}/{n_g} (run, epoch) readings "
                f"(median disagreement {table['a_ggn'].median():.3f}); the same criterion with H: {pass_h}/{n_h} "
                f"(median {table['a_residual'].median():.2f}); noise floor (two Lanczos runs of Hess) {floor:.1e}")
    return VerdictResult(verdict, measured, {"pass_ggn": pass_g, "pass_residual": pass_h, "total": len(table),
                                             "floor": floor, "floors": dict(floors)})


# ----------------------------------------------------------------------------- C4


def _measure(runs_atoms: Any) -> tuple[np.ndarray, np.ndarray]:
    return rules.pooled_atoms([(np.asarray(n, dtype=float), np.asarray(w, dtype=float)) for n, w in runs_atoms])


def distance_table(runs: Mapping[str, Any], readings: Mapping[str, Any]) -> pd.DataFrame:
    """One row per (run, epoch, layer): W1 between the layer's pooled SLQ atoms and the full Hessian's (pool A),
    KL at the full Hessian's smoothing width, the noise floor W1(A, B), the layer's depth and middle-half flag,
    and the training state."""
    rows = []
    for label, run in runs.items():
        taken = _get(readings[label], "distances") if label in readings else None
        for epoch, d in sorted((taken or {}).items()):
            a, b = _measure(_get(d, "full_a")), _measure(_get(d, "full_b"))
            floor = rules.w1_atoms(*a, *b)
            sigma = run.curvature(epoch).kinds["hessian"].full.density.sigma if epoch in run.curvature_epochs() \
                else np.nan
            layers = list(_get(d, "layers"))
            for i, name in enumerate(layers):
                m = _measure(_get(d, "layers")[name])
                rows.append({"run": label, "epoch": epoch, "layer": name, "index": i, "num_layers": len(layers),
                             "middle": is_middle(i, len(layers)), "w1": rules.w1_atoms(*m, *a),
                             "kl_common": rules.common_width_kl(a, m, sigma) if np.isfinite(sigma) else np.nan,
                             "floor": floor, **epoch_state(run, epoch)})
    return pd.DataFrame(rows)


def null_table(runs: Mapping[str, Any], readings: Mapping[str, Any], distances: pd.DataFrame) -> pd.DataFrame:
    """Size-matched null: per (run, epoch, layer), the layer's W1 beside the W1 of random parameter subsets of the
    layer's size (each pooled over its SLQ runs as the layer is; every value, min, mean, max), and whether the layer
    is closer than every subset."""
    rows = []
    for label in runs:
        for epoch, d in sorted(_get(readings[label], "distances").items()):
            null = _get(d, "null") or {}
            if not null:
                continue
            a = _measure(_get(d, "full_a"))
            for name, subsets in null.items():
                w = np.array([rules.w1_atoms(*_measure(s), *a) for s in subsets])
                layer_w1 = distances[(distances["run"] == label) & (distances["epoch"] == epoch)
                                     & (distances["layer"] == name)]["w1"].iloc[0]
                rows.append({"run": label, "epoch": epoch, "layer": name, "w1": layer_w1, "null_min": w.min(),
                             "null_mean": w.mean(), "null_max": w.max(), "subsets": len(w),
                             "closer_than_size": bool(layer_w1 < w.min()), "null_w1": [float(v) for v in w]})
    return pd.DataFrame(rows)


def c4_readings(table: pd.DataFrame, null: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, epoch): the closest middle and outer layers, their W1, the floor, the floor over the median
    W1 of the reading's random subsets, the classification, and the reading's size-matched null rates: plug-in
    p_mid / p_out (:func:`htr_utils.study.spectra_rules.c4_null_rates`) and the upper 95 % limits the rule uses
    (:func:`htr_utils.study.spectra_rules.c4_null_upper`)."""
    rows = []
    for (label, epoch), g in table.groupby(["run", "epoch"], sort=False):
        g = g.sort_values("index")
        w1, floor = g["w1"].to_numpy(), g["floor"].iloc[0]
        mid, out = g[g["middle"]], g[~g["middle"]]
        n = null[(null["run"] == label) & (null["epoch"] == epoch)] if len(null) else null
        if set(n.get("layer", [])) != set(g["layer"]):
            raise ValueError(f"C4: the reading of {label} at epoch {epoch} has no size-matched null for every layer; "
                             "take the distance readings again with null_subsets > 0 (PROTOCOL.md, C4 amendment 2)")
        by_layer = n.set_index("layer")["null_w1"]
        subsets = [by_layer[layer] for layer in g["layer"]]
        p_mid, p_out = rules.c4_null_rates(subsets, floor)
        hi_mid, hi_out = rules.c4_null_upper(subsets, floor, seed=zlib.crc32(f"{label}:{epoch}".encode()))
        rows.append({"run": label, "epoch": epoch, "num_layers": len(g), "closest": g.loc[g["w1"].idxmin(), "layer"],
                     "middle_layer": mid.loc[mid["w1"].idxmin(), "layer"], "middle_w1": mid["w1"].min(),
                     "outer_layer": out.loc[out["w1"].idxmin(), "layer"], "outer_w1": out["w1"].min(),
                     "floor": floor, "floor / null": floor / float(np.median(np.concatenate(subsets))),
                     "reading": rules.c4_classify(w1, floor), "p_mid": p_mid, "p_out": p_out,
                     "p_mid_hi": hi_mid, "p_out_hi": hi_out, "train_loss": g["train_loss"].iloc[0]})
    return pd.DataFrame(rows)


def c4_verdict(readings_table: pd.DataFrame, null: str = "size-matched") -> VerdictResult:
    """C4's verdict. ``null="size-matched"``: the primary rule (PROTOCOL.md, amendments 2-4): every network mostly
    "middle" and the bound on that under the readings' size-matched null (upper limits of p_mid) below 0.05; ``"middle share"``: the
    superseded rule of amendment 1 (binomial tally against the share of middle layers), for comparison."""
    t = readings_table
    labels, nets = t["reading"].tolist(), t["run"].tolist()
    n_mid, n_out = labels.count("middle"), labels.count("outer")
    all_mid, all_out = rules.majorities(labels, nets)
    per_run = "; ".join(f"{run}: " + ", ".join(f"e{r['epoch']} {r['closest']} ({r['reading']})" for _, r in g.iterrows())
                        for run, g in t.groupby("run", sort=False))
    tally = f"middle closest beyond the noise floor in {n_mid}/{len(labels)} readings, outer in {n_out}, tie in " \
            f"{labels.count('tie')}; every network mostly middle: {all_mid}, mostly outer: {all_out}"
    if null == "middle share":
        p0 = float(np.mean([rules.middle_share(int(L)) for L in t["num_layers"]]))
        verdict = rules.verdict_of(rules.c4_amendment1_codes(n_mid, n_out, len(labels), p0, all_mid, all_out))
        return VerdictResult(verdict, f"{tally}; chance rate {p0:.3f} (amendment 1, superseded) [{per_run}]",
                             {"middle": n_mid, "outer": n_out, "total": len(labels), "null": null, "chance": p0})
    if null != "size-matched":
        raise ValueError(f"c4_verdict: null must be 'size-matched' or 'middle share', got {null!r}")
    bound_mid = rules.network_bound(rules.by_network(t["p_mid_hi"], nets))
    bound_out = rules.network_bound(rules.by_network(t["p_out_hi"], nets))
    verdict = rules.c4_rule(labels, t["p_mid_hi"].tolist(), t["p_out_hi"].tolist(), nets)
    limits = []
    if bound_mid >= rules.ALPHA:
        limits.append(f"the design cannot reproduce C4: even if every network read mostly middle, the null bound on "
                      f"that is {bound_mid:.3g} ≥ {rules.ALPHA}")
    if bound_out >= rules.ALPHA:
        limits.append(f"the design cannot refute C4: even if every network read mostly outer, the null bound on that "
                      f"is {bound_out:.3g} ≥ {rules.ALPHA}")
    measured = (f"{tally}; under the size-matched null (mean p_mid {t['p_mid'].mean():.2f}, p_out "
                f"{t['p_out'].mean():.2f}; upper 95 % limits {t['p_mid_hi'].mean():.2f}, {t['p_out_hi'].mean():.2f}) "
                f"P(all mostly middle) ≤ {bound_mid:.3g}, P(all mostly outer) ≤ {bound_out:.3g}"
                + "".join(f" ({x})" for x in limits) + f" [{per_run}]")
    return VerdictResult(verdict, measured, {"middle": n_mid, "outer": n_out, "tie": labels.count("tie"),
                                             "total": len(labels), "null": null, "all_middle": all_mid,
                                             "all_outer": all_out, "bound_middle": bound_mid,
                                             "bound_outer": bound_out})


# ----------------------------------------------------------------------------- C5


def trend_series(runs: Mapping[str, Any]) -> pd.DataFrame:
    """Per run, block (full or layer) and curvature epoch >= 1: λ_max, Hutchinson trace, and the training state."""
    frames = []
    for label, run in runs.items():
        s = curvature_series(load_records(run))
        s = s[s["epoch"] >= 1].copy()
        state = pd.DataFrame([{"epoch": e, **epoch_state(run, e)} for e in sorted(s["epoch"].unique())])
        frames.append(s.merge(state, on="epoch").assign(run=label, decides=not is_smooth(run)))
    return pd.concat(frames, ignore_index=True)


def trend_table(series: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, scope, quantity): number of points, Kendall τ against the epoch, exact one-sided p."""
    rows = []
    for (label, depth, scope), g in series.groupby(["run", "depth", "scope"], sort=False):
        g = g.sort_values("epoch")
        for q in ("lambda_max", "trace"):
            tau, p_dec, p_inc = rules.kendall_trend(g[q].to_numpy())
            rows.append({"run": label, "scope": scope, "level": FULL if scope == FULL else "layer", "quantity": q,
                         "n": len(g), "first_epoch": int(g["epoch"].iloc[0]), "last_epoch": int(g["epoch"].iloc[-1]),
                         "first": float(g[q].iloc[0]), "last": float(g[q].iloc[-1]), "tau": tau,
                         "p_decrease": p_dec, "p_increase": p_inc})
    return pd.DataFrame(rows)


def c5_verdict(trends: pd.DataFrame) -> VerdictResult:
    full = trends[trends["level"] == FULL]
    short = full[full["n"] < rules.MIN_TREND_POINTS]
    if len(short):
        raise ValueError(f"C5: series {[f'{r.run} {r.quantity} (n = {r.n})' for r in short.itertuples()]} have fewer "
                         f"than {rules.MIN_TREND_POINTS} points; no trend is tested on so few (at n = 3 the smallest "
                         "exact p is 1/6): record the curvature at more epochs")
    verdict = rules.verdict_of(rules.c5_codes(full["p_decrease"].to_numpy(), full["p_increase"].to_numpy()))
    layer = trends[trends["level"] == "layer"]
    layer_down = int((layer["p_decrease"] < 0.05).sum())
    parts = "; ".join(f"{r['run']} {r['quantity']}: {r['first']:.4g} → {r['last']:.4g} (epochs {r['first_epoch']}–"
                      f"{r['last_epoch']}, n = {r['n']}, τ = {r['tau']:.2f}, p↓ = {r['p_decrease']:.2g}, p↑ = {r['p_increase']:.2g})"
                      for _, r in full.iterrows())
    measured = (f"full network: {int((full['p_decrease'] < 0.05).sum())}/{len(full)} series decrease significantly "
                f"[{parts}]; layers: {layer_down}/{len(layer)}")
    return VerdictResult(verdict, measured, {"full_decreasing": int((full["p_decrease"] < 0.05).sum()),
                                             "full_total": len(full), "layer_decreasing": layer_down,
                                             "layer_total": len(layer)})


def trend_table_ar1(series: pd.DataFrame, phi0: float = rules.PHI_MEASURED) -> pd.DataFrame:
    """C5 amendment (issue 30): one row per full-network (run, quantity): Kendall τ with one-sided p-values
    from the AR(1) null at the series' φ (:func:`htr_utils.study.spectra_rules.kendall_trend_ar1`), the series'
    own detrended lag-1 autocorrelation, and the earlier exact iid p-values beside."""
    rows = []
    for label, g in series[series["scope"] == FULL].groupby("run", sort=False):
        g = g.sort_values("epoch")
        decides = bool(g["decides"].iloc[0]) if "decides" in g else True
        for q in ("lambda_max", "trace"):
            v = g[q].to_numpy()
            # amendment of 2026-12-07: an extension's series may be too short to test; it is shown, not tested
            tested = len(v) >= rules.MIN_TREND_POINTS or decides
            tau, p_dec, p_inc, phi = rules.kendall_trend_ar1(v, phi0) if tested else (np.nan,) * 4
            _, p_dec_iid, p_inc_iid = rules.kendall_trend(v)
            r1 = rules.lag1_autocorrelation(v) if len(v) >= 3 else np.nan
            rows.append({"run": label, "quantity": q, "n": len(v), "first_epoch": int(g["epoch"].iloc[0]),
                         "last_epoch": int(g["epoch"].iloc[-1]), "first": float(v[0]), "last": float(v[-1]),
                         "tau": tau, "r1": r1, "phi": phi, "p_decrease": p_dec,
                         "p_increase": p_inc, "p_decrease_iid": p_dec_iid, "p_increase_iid": p_inc_iid,
                         "decides": decides})
    return pd.DataFrame(rows)


def c5_ar1_verdict(trends: pd.DataFrame) -> VerdictResult:
    """C5 under the issue-30 amendment: :func:`htr_utils.study.spectra_rules.c5_codes` on the AR(1)-adjusted
    p-values of :func:`trend_table_ar1`; the measured text gives p↓ and p↑ of every series. Amendment of
    2026-12-07: only the paper's ReLU networks' series decide (``decides``); an extension's (LeNet-GELU) are
    shown beside, tested where they have MIN_TREND_POINTS points."""
    every = trends
    if "decides" in trends:
        trends = trends[trends["decides"].astype(bool)]
    short = trends[trends["n"] < rules.MIN_TREND_POINTS]
    if len(short) or not len(trends):
        raise ValueError("C5: every deciding full-network series needs at least "
                         f"{rules.MIN_TREND_POINTS} points; record the curvature at more epochs")
    verdict = rules.verdict_of(rules.c5_codes(trends["p_decrease"].to_numpy(), trends["p_increase"].to_numpy()))
    m = len(trends)
    parts = "; ".join(f"{r['run']} {r['quantity']}: {r['first']:.4g} → {r['last']:.4g} (n = {r['n']}, τ = "
                      f"{r['tau']:.2f}, r₁ = {r['r1']:.2f}, tested at φ = {r['phi']:.2f}: p↓ = {r['p_decrease']:.2g}, "
                      f"p↑ = {r['p_increase']:.2g})" for _, r in trends.iterrows())
    down = int((trends["p_decrease"] < rules.ALPHA).sum())
    up = int((trends["p_increase"] < rules.ALPHA / m).sum())
    measured = (f"AR(1)-adjusted Kendall: {down}/{m} series decrease (p↓ < {rules.ALPHA}), {up}/{m} increase "
                f"(p↑ < {rules.ALPHA}/{m}) [{parts}]")
    ext = every[~every.index.isin(trends.index)]
    if len(ext):
        measured += "; extensions, never deciding: " + "; ".join(
            f"{r['run']} {r['quantity']}: {r['first']:.4g} → {r['last']:.4g} (n = {r['n']}, " +
            (f"p↓ = {r['p_decrease']:.2g}, p↑ = {r['p_increase']:.2g})" if np.isfinite(r["p_decrease"]) else
             f"too few points to test; iid Kendall p↓ = {r['p_decrease_iid']:.2g})") for _, r in ext.iterrows())
        if (every["n"] >= rules.MIN_TREND_POINTS).all():
            before = rules.verdict_of(rules.c5_codes(every["p_decrease"].to_numpy(), every["p_increase"].to_numpy()))
            measured += f"; issue-30 rule (every network's series decide), superseded: {before.value}"
    return VerdictResult(verdict, measured, {"decreasing": down, "increasing": up, "total": m,
                                             "rows": trends.to_dict("records"),
                                             "extension_rows": ext.to_dict("records")})


# ----------------------------------------------------------------------------- C2 (issue 30): per network, far-epoch control


def gauss_newton_control_table(runs: Mapping[str, Any]) -> pd.DataFrame:
    """C2 amendment (issue 30): :func:`gauss_newton_table` with, per (run, epoch), the control: the top-C
    disagreement of G recorded at the far epoch (:func:`htr_utils.study.spectra_rules.far_epoch` among the run's
    epochs ≥ 1 with G) against this epoch's Hess; ``decides``: the paper's ReLU networks (not :func:`is_smooth`).
    Needs only the runs' curvature records (top Ritz values of Hess and G at every epoch with G)."""
    table = gauss_newton_table(runs)
    rows = []
    for label, run in runs.items():
        C = classes_of(run)
        g_epochs = [e for e in run.curvature_epochs() if e >= 1 and "ggn" in run.curvature(e).kinds]
        for e in g_epochs:
            if len(g_epochs) < 2:  # no far epoch: the control was not read, so the network is inconclusive
                rows.append({"run": label, "epoch": e, "control_epoch": np.nan, "a_control": np.nan,
                             "decides": not is_smooth(run)})
                continue
            far = rules.far_epoch(g_epochs, e)
            h = run.curvature(e).kinds["hessian"].full.top
            g_far = run.curvature(far).kinds["ggn"].full.top
            rows.append({"run": label, "epoch": e, "control_epoch": far,
                         "a_control": rules.top_disagreement(g_far, h, C), "decides": not is_smooth(run)})
    return table.merge(pd.DataFrame(rows), on=["run", "epoch"], how="left")


def c2_network_verdict(table: pd.DataFrame, floors: Mapping[str, float]) -> VerdictResult:
    """C2 under the issue-30 amendment: a verdict per network (:func:`htr_utils.study.spectra_rules.c2_network_rule`)
    from its share of readings with a(G) ≤ 0.10, each network's far-epoch control and its restart floor; the
    paper's ReLU networks decide ("all_of"), a smooth network (LeNet-GELU) is a labelled extension."""
    readings, deciding, parts = {}, [], []
    for label, g in table.groupby("run", sort=False):
        floor = float(floors.get(label, float("nan")))
        readings[label] = (g["a_ggn"].to_numpy(), g["a_control"].to_numpy(), floor)
        if bool(g["decides"].iloc[0]):
            deciding.append(label)
    if not deciding:
        raise ValueError("C2: no ReLU network (the paper's) among the runs; C2 is decided by LeNet and VGG11_bn")
    verdict, per = rules.c2_network_rule(readings, deciding)
    # amendment of 2026-12-07: the far-epoch control no longer gates; the issue-30 rule with it is shown beside
    before, _ = rules.c2_network_rule(readings, deciding, control=True)
    for label, g in table.groupby("run", sort=False):
        n = int(g["a_ggn"].notna().sum())
        role = "decides" if label in deciding else "extension, does not decide (smooth activation)"
        n_ctrl = int(g["a_control"].notna().sum())
        control = (f"far-epoch G (shown, no longer a control: it cannot pass) within 10 % in {int((g['a_control'] <= rules.TOP_THRESHOLD).sum())}/{n_ctrl} "
                   f"(median {g['a_control'].median():.2f})" if n_ctrl else
                   "control not read (G recorded at one epoch only)")
        parts.append(f"{label} ({role}): {per[label].value}; G within 10 % of Hess in "
                     f"{int((g['a_ggn'] <= rules.TOP_THRESHOLD).sum())}/{n} readings (median a(G) "
                     f"{g['a_ggn'].median():.3f}); {control}; restart floor {floors.get(label, float('nan')):.1e}")
    parts.append(f"issue-30 rule (far-epoch control gates), superseded: {before.value}")
    # amendment S4: no control could be run, so a verdict here does not show that the 10 % criterion discriminates
    parts.insert(0, "the 10 % criterion is uncontrolled (no control could be run, PROTOCOL S1/S4)")
    return VerdictResult(verdict, "; ".join(parts), {"per_network": {k: v.value for k, v in per.items()},
                                                     "deciding": deciding, "floors": dict(floors),
                                                     "issue30_with_control": before.value})


# ----------------------------------------------------------------------------- C1 / C3 (issue 30): class directions


def class_direction_table(runs: Mapping[str, Any], readings: Mapping[str, Any]) -> pd.DataFrame:
    """:func:`class_table` with, per row, k_cls (``class_directions``: how many of the top 2C Ritz vectors have more
    than ``CLASS_MASS`` (60 %) of their mass in the class-mean span and a Ritz value above G_within's continuous
    edge λ_C+1(G_within) (``within_continuous_edge``, amendment of 2026-12-07); NaN where the reading predates the
    per-vector overlaps or has fewer than C + 1 Ritz values of G_within), the issue-30 count without the edge
    (``class_directions_any_eigenvalue``, shown beside) and the second eigenvalue of G_within (``within_2``)."""
    table = class_table(runs, readings)
    extra = []
    for label in runs:
        for (epoch, n), reading in sorted(_get(readings[label], "classes").items()):
            for name, b in _get(reading, "blocks").items():
                ov, wt = tuple(getattr(b, "overlaps", ()) or ()), tuple(getattr(b, "within_top", ()) or ())
                C = classes_of(runs[label])
                # amendment of 2026-12-07: a class direction must also clear G_within's continuous edge λ_C+1
                # a block of dimension ≤ C has no continuous part: every eigenvalue is read, none is bulk
                edge = (rules.within_continuous_edge(wt, C) if len(wt) > C else
                        -np.inf if wt and len(wt) >= _get(b, "dim") else np.nan)
                counted = bool(ov) and not np.isnan(edge) and len(_get(b, "hess_top")) >= len(ov)
                extra.append({"run": label, "block": name, "epoch": epoch, "per_class": n,
                              "class_directions": rules.class_direction_count(ov, eigenvalues=_get(b, "hess_top"),
                                                                              edge=edge) if counted else np.nan,
                              "class_directions_any_eigenvalue": rules.class_direction_count(ov) if ov else np.nan,
                              "within_continuous_edge": edge,
                              "within_2": wt[1] if len(wt) > 1 else np.nan})
    return table.merge(pd.DataFrame(extra), on=["run", "block", "epoch", "per_class"], how="left")


def _class_counts(rows: pd.DataFrame, who: str) -> list[int]:
    if rows["class_directions"].isna().any():
        missing = rows[rows["class_directions"].isna()]
        raise ValueError(f"{who}: the class readings of {sorted(set(missing['run']))} at epoch "
                         f"{sorted(set(missing['epoch']))} have no per-vector overlaps (new in issue 30) or fewer than "
                         "C + 1 Ritz values of G_within; delete their readings/class_e*.json files in the run folders "
                         "and take the class readings again")
    return [int(k) for k in rows["class_directions"]]


def c1_class_verdict(table: pd.DataFrame, C: int) -> VerdictResult:
    """C1 under the issue-30 amendment: per network k_cls (top-2C Hessian eigenvectors with most of their mass in the
    class-mean span) about C, last epoch, most examples per class, "all_of". Reported apart, never deciding: "C
    eigenvalues clear the strongest within-class direction" (the earlier count above λ_max(G_within))."""
    full = primary_rows(table[table["block"] == FULL])
    counts = dict(zip(full["run"], _class_counts(full, "C1")))
    verdict = rules.c1_class_rule(counts, C)
    strong = rules.c1_rule(dict(zip(full["run"], full["outliers"])), C)
    before = {r["run"]: int(r["class_directions_any_eigenvalue"]) for _, r in full.iterrows()
              if np.isfinite(r.get("class_directions_any_eigenvalue", np.nan))}
    parts = "; ".join(f"{r['run']}: k_cls = {counts[r['run']]} of the top {2 * C} eigenvectors are class directions "
                      f"above G_within's continuous edge {r.get('within_continuous_edge', np.nan):.3g} "
                      f"({before.get(r['run'], 'n/a')} at any eigenvalue, the issue-30 count) "
                      f"(top-C overlap {r['overlap']:.2f}, chance {r['overlap_chance']:.1e}); {r['outliers']} eigenvalues "
                      f"clear the strongest within-class direction {r['bulk_edge']:.3g} (epoch {r['epoch']}, "
                      f"{r['per_class']}/class, training loss {r['train_loss']:.3f})" for _, r in full.iterrows())
    measured = (f"C = {C}; the top-C subspace is class directions: {verdict.value}; C eigenvalues clear the strongest "
                f"within-class direction (reported apart, does not decide): {strong.value} [{parts}]")
    if len(before) == len(counts):
        measured += f"; issue-30 rule (no edge, k > 2C branch), superseded: {rules.c1_rule(before, C).value}"
    return VerdictResult(verdict, measured, {"class_directions": counts, "clear_within": strong.value, "C": C,
                                             "rows": full.to_dict("records")})


def c3_class_verdict(table: pd.DataFrame, agreement: pd.DataFrame, C: int) -> VerdictResult:
    """C3 under the issue-30 amendment: (a) share of layer blocks with k_cls about C (last epoch, most examples per
    class), (b) as before; the share clearing the layer's strongest within-class direction is reported apart."""
    layers = primary_rows(table[table["block"] != FULL])
    counts = _class_counts(layers, "C3")
    a = agreement["a_ggn"].tolist() if len(agreement) else []
    verdict = rules.c3_class_rule(counts, C, a)
    ok = rules.about_c_class_codes(np.asarray(counts), C) == rules.R if counts else np.array([])
    ok_edge = rules.about_c_codes(layers["outliers"].to_numpy(), C) == rules.R if len(layers) else np.array([])
    a = [v for v in a if np.isfinite(v)]
    s_b = float(np.mean(np.asarray(a) <= rules.TOP_THRESHOLD)) if a else float("nan")
    per_run = "; ".join(f"{run}: " + ", ".join(f"{r['block']} {int(r['class_directions'])}" for _, r in g.iterrows())
                        for run, g in layers.groupby("run", sort=False))
    measured = (f"(a) {int(np.sum(ok))}/{len(ok)} layer blocks have about C = {C} class directions among their top "
                f"{2 * C} eigenvectors ({per_run}); reported apart: {int(np.sum(ok_edge))}/{len(ok_edge)} have about C "
                f"eigenvalues above their strongest within-class direction; (b) G_l within 10 % of Hess_l (top C) in "
                f"{int(round(s_b * len(a))) if a else 0}/{len(a)} readings of the smooth network")
    return VerdictResult(verdict, measured, {"share_counts": float(np.mean(ok)) if len(ok) else float("nan"),
                                             "share_agreement": s_b, "counts": counts,
                                             "share_clear_within": float(np.mean(ok_edge)) if len(ok_edge) else float("nan"),
                                             "rows": layers.to_dict("records")})


# ----------------------------------------------------------------------------- C4 (issue 30): depth regression


def depth_distance_table(runs: Mapping[str, Any], readings: Mapping[str, Any],
                         sizes: Mapping[str, Mapping[str, int]]) -> pd.DataFrame:
    """C4 amendment (issue 30): one row per (run, epoch, layer): raw W1 between the layer's pooled SLQ atoms and the
    full Hessian's (pool A), the normalised W1 (each measure divided by its largest |eigenvalue|), the layer's size
    (``sizes[run][layer]``, :func:`htr_utils.study.spectra_readings.layer_sizes`), size share, normalised depth
    d = (i + 0.5) / L, symmetric-middle flag (0.25 ≤ d ≤ 0.75), whether the run decides (a ReLU network), and the
    training state; ``probe_se`` (amendment 6) is the probes' own standard error of the log normalised W1."""
    rows = []
    for label, run in runs.items():
        taken = _get(readings[label], "distances") if label in readings else None
        for epoch, d in sorted((taken or {}).items()):   # a run read for no distance (cpu: LeNet-GELU) has no rows
            a = _measure(_get(d, "full_a"))
            layers = list(_get(d, "layers"))
            if set(layers) != set(sizes.get(label, {})):
                raise ValueError(f"C4: layer sizes of {label} must name its layers {layers}; pass "
                                 "spectra_readings.layer_sizes(run.load_model(epoch)) for every run")
            total = sum(sizes[label].values())
            depth, middle = rules.normalised_depth(len(layers)), rules.symmetric_middle(len(layers))
            for i, name in enumerate(layers):
                m = _measure(_get(d, "layers")[name])
                rows.append({"run": label, "epoch": epoch, "layer": name, "index": i, "num_layers": len(layers),
                             "depth": depth[i], "middle": bool(middle[i]), "size": sizes[label][name],
                             "share": sizes[label][name] / total, "w1": rules.w1_atoms(*m, *a),
                             "w1_normalised": rules.normalised_w1(*m, *a),
                             "probe_se": _probe_se(_get(d, "layers")[name], a), "decides": not is_smooth(run),
                             **epoch_state(run, epoch)})
    return pd.DataFrame(rows)


def _probe_se(runs_atoms: Any, full: tuple[np.ndarray, np.ndarray]) -> float:
    """C4 amendment 6: the probes' own standard error of a layer's log normalised W1, sd over its K independent SLQ
    probes (each probe's measure against the full pool A) / √K; NaN for a single probe."""
    logs = [np.log(rules.normalised_w1(*_measure([r]), *full)) for r in runs_atoms]
    return float(np.std(logs, ddof=1) / np.sqrt(len(logs))) if len(logs) > 1 else float("nan")


def _depth_fit(table: pd.DataFrame, column: str, runs: list[str]) -> dict[str, float]:
    per_layer = (table.assign(log_w=np.log(table[column])).groupby(["run", "index"], sort=False)
                 .agg(log_w=("log_w", "mean"), size=("size", "first")).reset_index())
    log_w = [per_layer[per_layer["run"] == r].sort_values("index")["log_w"].to_numpy() for r in runs]
    sizes = [per_layer[per_layer["run"] == r].sort_values("index")["size"].to_numpy() for r in runs]
    return rules.c4_depth_test(log_w, sizes)


def c4_depth_verdict(table: pd.DataFrame, step: Mapping[str, Any] | None = None) -> VerdictResult:
    """C4 under the issue-30 amendment: the depth regression (:func:`htr_utils.study.spectra_rules.c4_depth_test`)
    of each layer's log raw W1, averaged over the epochs read, over the deciding networks' real layers; the same
    regression on the normalised W1, each network's closest layer (symmetric middle), and the extensions' fits
    are shown beside and never decide. ``step``: the result of :func:`step_check`, stated in the measured text."""
    deciding = list(dict.fromkeys(table.loc[table["decides"], "run"]))
    if len(deciding) < 1 or table.groupby("run")["epoch"].nunique().min() < 2:
        raise ValueError("C4: the depth regression needs the paper's ReLU networks, each read at 2 or more epochs")
    fit = _depth_fit(table, "w1", deciding)
    verdict = rules.verdict_of(rules.c4_depth_codes(fit["p_R"], fit["p_N"]))
    norm = _depth_fit(table, "w1_normalised", deciding)
    closest = []
    for (run, epoch), g in table.groupby(["run", "epoch"], sort=False):
        r = g.loc[g["w1"].idxmin()]
        closest.append(f"{run} e{epoch}: {r['layer']} (d = {r['depth']:.2f}, {'middle' if r['middle'] else 'outer'})")
    extensions = [r for r in dict.fromkeys(table["run"]) if r not in deciding]
    ext = ""
    if extensions:
        e = _depth_fit(table, "w1", extensions) if table[table["run"].isin(extensions)]["index"].nunique() > 3 else None
        ext = (f"; extension (does not decide) {', '.join(extensions)}: ratio {e['ratio']:.2g}, p_R {e['p_R']:.2g}"
               if e else "")
    low_power = "; above 0.70 the design had under 50 % power at the stated effect" if fit["residual_sd"] > 0.70 else ""
    measured = (f"log W1 = α_net + b log size share + c |d − 1/2| over {sum(table[table['decides']].groupby('run')['index'].nunique())} "
                f"layers of {', '.join(deciding)}: ĉ = {fit['c']:.2f} ± {fit['se']:.2f} (end-to-centre ratio "
                f"{fit['ratio']:.2g}; stated effect {rules.C4_STATED_RATIO:g}), residual sd {fit['residual_sd']:.2f} "
                f"(calibration assumed 0.63{low_power}), p_R = {fit['p_R']:.2g}, p_N = {fit['p_N']:.2g}; normalised W1 (shown, does "
                f"not decide): ratio {norm['ratio']:.2g}, p_R = {norm['p_R']:.2g}; closest layer [{'; '.join(closest)}]"
                + ext)
    if step is not None:
        lo, hi = step["steps"]
        measured += (f"; step check ({step['run']} epoch {step['epoch']}, {lo} vs {hi} Lanczos steps): mean |Δ log W1| "
                     f"{step['mean_abs_delta_log_w1']:.3f} "
                     + (f"≤ {STEP_CHECK_LIMIT}, {lo} steps stand" if step["stands"] else
                        f"> {STEP_CHECK_LIMIT}: the protocol takes every reading at {hi} steps"))
    return VerdictResult(verdict, measured, {"fit": fit, "normalised": norm, "deciding": deciding,
                                             "extensions": extensions,
                                             "step_check": None if step is None else
                                             {k: step[k] for k in ("run", "epoch", "steps", "mean_abs_delta_log_w1",
                                                                   "stands")}})


STEP_CHECK_LIMIT = 0.3  # C4: mean |Δ log W1| over the layers above the 5-probe error → every reading at twice the steps


def role(run: Any) -> str:
    """"decides" for the paper's ReLU networks, "extension (does not decide)" for a smooth one (LeNet-GELU)."""
    return "extension (does not decide)" if is_smooth(run) else "decides"


def step_check(readings: Mapping[str, Any], settings: Mapping[str, Any]) -> dict[str, Any]:
    """C4's step check (PROTOCOL.md, amendment 5) on the run whose reading settings name a ``step_check_epoch``:
    :func:`lanczos_step_check` of that epoch's distance reading against its reading at twice the steps; ``stands``
    says whether the distance readings' step count stands (mean |Δ log W1| ≤ 0.3). Raises if no run has one."""
    for label, reading in settings.items():
        epoch = getattr(reading, "step_check_epoch", None)
        if epoch is None or label not in readings:
            continue
        long = _get(readings[label], "step_check")
        if long is None:
            raise ValueError(f"C4 step check: {label} has no reading at twice the steps; take the distance readings "
                             "(spectra_readings(profile, what=('distance',)))")
        out = lanczos_step_check(_get(readings[label], "distances")[epoch], long, reading.step_check_probes)
        out.update(run=label, epoch=epoch, stands=out["mean_abs_delta_log_w1"] <= STEP_CHECK_LIMIT)
        return out
    raise ValueError("C4 step check: no run's reading settings name a step_check_epoch (profiles.SpectraReading)")


def lanczos_step_check(short: Any, long: Any, probes: int = 2) -> dict[str, Any]:
    """C4's 32-vs-64-step check (PROTOCOL.md, amendment 5): per layer, log W1 to the full spectrum from the first
    ``probes`` SLQ runs of a reading at fewer Lanczos steps (``short``) and of the same epoch's reading at more
    (``long``). The readings seed every chain by (run, epoch, block, probe), so these runs share their start
    vectors and the difference is the steps' alone. Returns the mean |Δ log W1| and the per-layer values."""
    def log_w1(d: Any) -> dict[str, float]:
        full = _measure(_get(d, "full_a")[:probes])
        return {name: float(np.log(rules.w1_atoms(*_measure(runs_[:probes]), *full)))
                for name, runs_ in _get(d, "layers").items()}

    if min(len(_get(short, "full_a")), len(_get(long, "full_a"))) < probes:
        raise ValueError(f"lanczos_step_check: both readings need at least {probes} probes")
    a, b = log_w1(short), log_w1(long)
    if set(a) != set(b):
        raise ValueError("lanczos_step_check: the two readings must cover the same layers")
    delta = {k: abs(a[k] - b[k]) for k in a}
    return {"mean_abs_delta_log_w1": float(np.mean(list(delta.values()))), "per_layer": delta,
            "steps": (int(_get(short, "lanczos_iters")), int(_get(long, "lanczos_iters")))}


# ----------------------------------------------------------------------------- C4 amendment 6: normalised W1, own noise


UNDERPOWERED = "inconclusive (underpowered)"


def c4_normalised_verdict(table: pd.DataFrame, step: Mapping[str, Any] | None = None) -> VerdictResult:
    """C4 under amendment 6 (PROTOCOL.md): :func:`htr_utils.study.spectra_rules.c4_normalised_test` of each deciding
    layer's log normalised W1, averaged over the epochs read; noise from the regression's own residuals, the probes'
    share of it (``probe_se``) beside; *inconclusive (underpowered)* when the power at the stated ratio at that noise
    is under 50 %. The measured text prints the decision region for exp(ĉ/2) beside the estimate, and amendment 5's
    raw-W1 fit and verdict (shown, does not decide)."""
    raw = c4_depth_verdict(table, step)                    # also checks: ReLU networks, 2 or more epochs each
    deciding = raw.details["deciding"]
    per_layer = (table.assign(log_w=np.log(table["w1_normalised"])).groupby(["run", "index"], sort=False)
                 .agg(log_w=("log_w", "mean"), size=("size", "first"), epochs=("epoch", "nunique"),
                      probe_var=("probe_se", lambda v: float(np.mean(np.square(v)))) if "probe_se" in table else
                      ("log_w", lambda v: float("nan")))
                 .reset_index())
    rows = [per_layer[per_layer["run"] == r].sort_values("index") for r in deciding]
    fit = rules.c4_normalised_test([g["log_w"].to_numpy() for g in rows], [g["size"].to_numpy() for g in rows])
    parts = rules.c4_depth_partial([g["log_w"].to_numpy() for g in rows], [g["size"].to_numpy() for g in rows])
    partial = pd.concat([g[["run", "index"]].assign(distance_from_middle=z, partial_log_w1=p)
                         for g, z, p in zip(rows, parts["z"], parts["partial"])], ignore_index=True)
    dec = pd.concat(rows)
    probe_sd = float(np.nanmedian(np.sqrt(dec["probe_var"] / dec["epochs"]))) if dec["probe_var"].notna().any() \
        else float("nan")
    verdict = rules.verdict_of(fit["code"])             # inconclusive when underpowered
    label = UNDERPOWERED if fit["underpowered"] else verdict.value
    region = (f"decision region for the end-to-centre ratio exp(ĉ/2) = {fit['ratio']:.2f}: reproduced if ≥ "
              f"{fit['R_if_ratio_at_least']:.2f}, not reproduced if ≤ {fit['N_if_ratio_at_most']:.2f}")
    a5 = raw.details["fit"]
    measured = ((f"{UNDERPOWERED}: " if fit["underpowered"] else "") + f"log normalised W1 = α_net + b log size share + c |d − 1/2| over {len(dec)} layers of "
                f"{', '.join(deciding)}: ĉ = {fit['c']:.2f} ± {fit['se']:.2f} ({region}); residual sd "
                f"{fit['residual_sd']:.2f} (probes' part {probe_sd:.2f}), df {fit['df']}; power at the stated ratio "
                f"{rules.C4_NORMALISED_RATIO:g} at this noise {100 * fit['power']:.0f} % (decides at ≥ "
                f"{100 * rules.C4_MIN_POWER:.0f} %); p_R = {fit['p_R']:.2g}, p_N = {fit['p_N']:.2g}. Beside (does not "
                f"decide): raw W1 (amendment 5, stated ratio {rules.C4_STATED_RATIO:g}) ratio {a5['ratio']:.2g}, residual sd {a5['residual_sd']:.2f}, "
                f"p_R = {a5['p_R']:.2g}, p_N = {a5['p_N']:.2g} -> {raw.verdict.value}; closest layer (raw W1) {raw.measured.split('; closest layer ', 1)[-1]}")
    return VerdictResult(verdict, measured, {"fit": fit, "label": label, "probe_sd": probe_sd, "raw_fit": a5,
                                             "size_slope": parts["b"], "partial": partial.to_dict("records"),
                                             "raw_verdict": raw.verdict.value, "deciding": deciding,
                                             "extensions": raw.details["extensions"],
                                             "step_check": raw.details["step_check"]})
