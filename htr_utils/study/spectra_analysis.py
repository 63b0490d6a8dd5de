"""The spectra notebooks' computations and verdicts: 01 (full spectrum), 02 (Gauss-Newton), 03 (layer spectra).

The notebooks read the curvature records of the profile's spectra runs (see
:meth:`htr_utils.study.training.Trainer.curvature`): per epoch and curvature kind ("hessian",
"ggn", "residual" = Hess, G, H), the SLQ density, the largest Ritz values ("top", descending,
2C of them) and the Hutchinson trace, for the full network and for every layer block.
The functions here turn records into the numbers behind each verdict rule (stated in
:mod:`htr_utils.study.claims`) and into the verdicts; the figures are in :mod:`htr_utils.study.plotting`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..curvature import KINDS
from ..lanczos import SpectralDensity
from ..spectra import count_outliers, spectral_distance
from . import calibration_spectra as cs
from . import runs as run_cache  # train_run looked up at call time, as the grid's tests substitute it
from .data import num_classes
from .parallel import pool_map
from .paths import data_root
from .profiles import get_profile
from .records import BlockCurvature, CurvatureRecord
from .verdicts import Verdict, VerdictResult

#: the paper's names of the three curvature kinds (Hess = G + H)
KIND_LABELS = {"hessian": "Hess", "ggn": "G", "residual": "H"}


# --------------------------------------------------------------------------- runs and records


def spectra_runs(profile: str | None = None, progress: bool = True) -> dict[str, Any]:
    """{label: Run} of the profile's spectra runs, trained into the profile's run cache if missing.

    The cache (``profile.runs_dir()``, under the repository root) is shared by notebooks 01-05,
    so a run trained by one notebook is read at no cost by the others.
    """
    P = get_profile(profile)
    return {label: run_cache.train_run(cfg, root=P.runs_dir(), progress=progress, data_root=data_root())
            for label, cfg in P.spectra_runs.items()}


def run_classes(run: Any) -> int:
    """Number of classes C of a run's data set."""
    return num_classes(run.config.dataset)


def epochs_with_kinds(run: Any, kinds: Sequence[str] = KINDS) -> list[int]:
    """The run's curvature epochs at which every kind in ``kinds`` was computed (ascending)."""
    return [e for e in run.curvature_epochs() if set(kinds) <= set(run.config.kinds_at(e))]


def run_overview(runs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per run: model, width, data set, C, epochs, final test accuracy, Hessian subset size,
    curvature epochs (all) and the epochs with all three kinds."""
    rows = []
    for label, run in runs.items():
        c = run.config
        rows.append({"run": label, "model": c.model, "width": c.width, "data": c.dataset, "C": run_classes(run),
                     "epochs": c.epochs, "final test acc": float(run.metrics["test_acc"].iloc[-1]),
                     "Hessian examples": c.examples_per_class * run_classes(run), "Lanczos steps": c.lanczos_iters,
                     "curvature epochs": len(run.curvature_epochs()),
                     "Hess/G/H epochs": ", ".join(map(str, epochs_with_kinds(run)))})
    return pd.DataFrame(rows)


def describe_runs(runs: Mapping[str, Any]) -> str:
    """One line naming each run's model, width, data set, training size, epochs, Hessian subset and the machine that
    trained it (from its config.json)."""
    parts = []
    for label, run in runs.items():
        c = run.config
        size = f"{c.train_size} train images" if c.train_size else "full training set"
        env = run.config_info().get("environment") or {}
        where = (f", trained on {env.get('gpu') or env.get('device')} (torch {env.get('torch')})"
                 if env.get("device") == "cuda" else "")
        parts.append(f"{label}: {c.model} (width {c.width:g}) on {c.dataset}, {size}, {c.epochs} epochs, "
                     f"Hessian on {c.examples_per_class}/class, {c.lanczos_iters} Lanczos steps{where}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- the outlier rule


def outlier_verdict(top: Sequence[float], num_classes: int, tolerance: int = 2) -> dict:
    """Rule for C1/C3: with the top 2C eigenvalues, the largest ratio gap λ_k/λ_{k+1} falls at |k − C| <= tolerance."""
    values = np.sort(np.asarray(top, dtype=float))[::-1][: 2 * num_classes]
    k = count_outliers(values)
    return {"outliers": k, "C": num_classes, "ok": abs(k - num_classes) <= tolerance,
            "gap_ratio": float(values[k - 1] / values[k]) if 0 < k < len(values) and values[k] > 0 else float("nan")}


# --------------------------------------------------------------------------- numbers of one spectrum


def spectral_support(dens: SpectralDensity) -> tuple[float, float]:
    """(smallest, largest) Ritz value of a density: the estimated extreme eigenvalues."""
    nodes = np.asarray(dens.nodes, dtype=float)
    return float(nodes.min()), float(nodes.max())


def spectral_radius(dens: SpectralDensity) -> float:
    """max |λ| over the density's Ritz values (the estimated operator norm of a symmetric block)."""
    return float(np.abs(np.asarray(dens.nodes, dtype=float)).max())


def bulk_mass(dens: SpectralDensity, rel: float = 0.01) -> float:
    """Fraction of the SLQ quadrature mass at |θ| < ``rel`` · λ_max: the spectral mass "near zero".

    Uses the unsmoothed quadrature measure Σ τ_j δ(λ − θ_j) (weights normalised over probes), so
    the answer does not depend on the Gaussian smoothing width.
    """
    nodes, weights = dens.atoms
    lam_max = float(np.max(nodes))
    if lam_max <= 0:
        return float("nan")
    return float(weights[np.abs(nodes) < rel * lam_max].sum())


def num_ritz_values(dens: SpectralDensity) -> int:
    """Number of Ritz values of the density's first Lanczos run (the zero-weight padding, copies of the
    largest value, removed): min(Lanczos steps, dimension), fewer if the recurrence broke down."""
    row = np.asarray(dens.nodes, dtype=float)[0]
    n = len(row)
    while n > 1 and row[n - 2] == row[-1]:
        n -= 1
    return n


def rule_values(entry: BlockCurvature, C: int) -> np.ndarray:
    """The eigenvalue estimates the outlier rule looks at: the top 2C Ritz values of ``entry`` (a record's
    full or layer entry), but at most the upper half of its m Ritz values.

    With m ≥ 4C Lanczos steps (the cpu and paper profiles) this is exactly the top 2C. With fewer steps
    (smoke) the lower Ritz values estimate the *bottom* of the spectrum (≈ 0 for a positive
    semi-definite block), and a ratio to such a value would fake a gap at the end of the list.
    """
    top = np.asarray(entry.top, dtype=float)
    return top[: min(2 * C, max(num_ritz_values(entry.density) // 2, 1))]


def top_within_trace(entry: BlockCurvature, nsigma: float = 3.0) -> bool:
    """Sanity check of a positive semi-definite block's Lanczos output: λ_max ≤ tr + ``nsigma``·stderr.

    For a PSD matrix the largest eigenvalue cannot exceed the trace. A Ritz value above it is a
    symptom of a Lanczos run that lost orthogonality (in float32, after the Krylov space of a
    low-rank block is numerically exhausted the recurrence can produce spurious, growing Ritz values).
    Applies to G, G_l, and Hess_l of networks piecewise linear in one layer's weights (Hess_l = G_l);
    not to Hess or H, which are indefinite. True when the entry has no trace.
    """
    trace, top = entry.trace, np.asarray(entry.top, dtype=float)
    if trace is None or not len(top):
        return True
    stderr = trace.stderr if np.isfinite(trace.stderr) else 0.0
    return bool(top[0] <= trace.mean + nsigma * stderr)


def full_spectrum_summary(record: CurvatureRecord, C: int, kind: str = "hessian", tolerance: int = 2,
                          bands: Sequence[float] = (0.01, 0.05)) -> dict:
    """C1's numbers for one curvature record: outlier count by the gap rule and the mass near zero.

    Rule (:func:`outlier_verdict`): among the top 2C Ritz values, the largest
    ratio gap λ_k/λ_{k+1} (positive values only) is at k with |k − C| ≤ ``tolerance``; the top 2C are
    taken by :func:`rule_values` (``rule_values`` = how many). ``bulk_mass_<p>%`` is the SLQ mass at
    |λ| < p % of λ_max (see :func:`bulk_mass`).
    """
    entry = record.kinds[kind].full
    dens, top = entry.density, rule_values(entry, C)
    v = outlier_verdict(top, C, tolerance)
    lo, hi = spectral_support(dens)
    pos = top[top > 0]
    row = {"epoch": record.epoch, "dim": entry.dim, "C": C, "lambda_max": hi, "lambda_min": lo,
           "outliers": v["outliers"], "rule_ok": v["ok"], "largest_gap_ratio": v["gap_ratio"],
           "gap_ratio_at_C": float(pos[C - 1] / pos[C]) if len(pos) > C else float("nan"),
           "rule_values": int(len(top)), "positive_top": int(len(pos)),
           "trace": entry.trace.mean if entry.trace else float("nan")}
    for b in bands:
        row[f"bulk_mass_{b:.0%}"] = bulk_mass(dens, b)
    return row


def w1_distance(a: SpectralDensity, b: SpectralDensity) -> float:
    """W₁ between two spectral densities on the raw eigenvalue axis (:func:`spectral_distance`), also when
    one of them is a point mass (all Ritz values equal, e.g. a residual block that is exactly zero):
    then W₁ = ∫ |λ − λ₀| φ(λ) dλ for the other density φ, and |λ₀ − λ₁| for two point masses."""
    (lo_a, hi_a), (lo_b, hi_b) = spectral_support(a), spectral_support(b)
    if hi_a > lo_a and hi_b > lo_b:
        return spectral_distance(a, b, "wasserstein")
    if hi_a == lo_a and hi_b == lo_b:
        return abs(hi_a - hi_b)
    dens, x0 = (a, hi_b) if hi_b == lo_b else (b, hi_a)
    f = np.asarray(dens.density, dtype=float)
    return float(np.trapezoid(np.abs(dens.grid - x0) * f, dens.grid) / np.trapezoid(f, dens.grid))


# --------------------------------------------------------------------------- Hess vs G vs H


def relative_top_difference(top_a: Sequence[float], top_b: Sequence[float], k: int) -> np.ndarray:
    """|λ_i(b) − λ_i(a)| / |λ_i(a)| for i = 1..k (both lists descending; as many as both have)."""
    a = np.asarray(top_a, dtype=float)[:k]
    b = np.asarray(top_b, dtype=float)[:k]
    n = min(len(a), len(b))
    return np.abs(b[:n] - a[:n]) / np.maximum(np.abs(a[:n]), 1e-300)


def gauss_newton_comparison(record: CurvatureRecord, C: int, part: str = "full") -> dict:
    """C2's numbers for one record holding all three kinds, on the full network (``part="full"``)
    or on one layer block (``part=<layer name>``).

    - ``w1_hess_ggn``: W₁(Hess, G) on the raw eigenvalue axis (:func:`w1_distance`), and
      ``w1_hess_ggn_rel``, the same divided by Hess's spectral range (largest − smallest Ritz value);
      ``w1_hess_res_rel`` likewise for H, for contrast;
    - ``topC_rel_diff_median`` / ``_max``: relative difference of the top-C eigenvalues of G
      from those of Hess (:func:`relative_top_difference`);
    - ``res_top_rel``: λ_max(H) / λ_max(Hess); ``res_radius_rel``: max |λ(H)| / λ_max(Hess), with
      H's extreme eigenvalues taken from its SLQ Ritz values (both ends of its spectrum);
    - ``ggn_valid``: G's Lanczos output passes :func:`top_within_trace` (λ_max(G) ≤ tr(G) + 3 stderr).
    """
    hess, ggn, res = (record.kinds[kind].block(part) for kind in ("hessian", "ggn", "residual"))
    lo, hi = spectral_support(hess.density)
    span = max(hi - lo, 1e-300)
    w1_g = w1_distance(hess.density, ggn.density)
    w1_h = w1_distance(hess.density, res.density)
    rel = relative_top_difference(hess.top, ggn.top, C)
    lam_max = hess.lambda_max if hess.top else hi
    res_lo, res_hi = spectral_support(res.density)
    scale = max(abs(lam_max), 1e-300)
    return {"epoch": record.epoch, "part": part, "lambda_max_hess": lam_max,
            "lambda_max_ggn": ggn.lambda_max, "lambda_max_res": res_hi, "lambda_min_res": res_lo,
            "hess_range": span, "w1_hess_ggn": w1_g, "w1_hess_ggn_rel": w1_g / span,
            "w1_hess_res_rel": w1_h / span,
            "topC_rel_diff_median": float(np.median(rel)) if len(rel) else float("nan"),
            "topC_rel_diff_max": float(np.max(rel)) if len(rel) else float("nan"),
            "res_top_rel": res_hi / scale, "res_radius_rel": max(abs(res_lo), abs(res_hi)) / scale,
            "ggn_valid": top_within_trace(ggn)}


def gauss_newton_table(runs: Mapping[str, Any], top_rel: float = 0.10, w1_rel: float = 0.05,
                       res_rel: float = 0.10) -> pd.DataFrame:
    """:func:`gauss_newton_comparison` of the full network at every epoch with all three kinds, one row
    per (run, epoch); ``final`` marks each run's last such epoch, ``passes`` applies :func:`gauss_newton_pass`."""
    rows = []
    for label, run in runs.items():
        epochs = epochs_with_kinds(run)
        for e in epochs:
            row = gauss_newton_comparison(run.curvature(e), run_classes(run))
            rows.append({"run": label, **row, "final": e == epochs[-1],
                         "passes": gauss_newton_pass(row, top_rel, w1_rel, res_rel)})
    return pd.DataFrame(rows)


def gauss_newton_pass(row: Mapping, top_rel: float = 0.10, w1_rel: float = 0.05, res_rel: float = 0.10) -> bool:
    """C2's rule on one row of :func:`gauss_newton_table`: the median relative difference of the top-C
    eigenvalues of G and Hess ≤ ``top_rel``, W₁(Hess, G) < ``w1_rel`` · range(Hess), and
    max |λ(H)| < ``res_rel`` · λ_max(Hess)."""
    return bool(row["topC_rel_diff_median"] <= top_rel and row["w1_hess_ggn_rel"] < w1_rel
                and row["res_radius_rel"] < res_rel)


# --------------------------------------------------------------------------- layers


def layer_table(record: CurvatureRecord, C: int, tolerance: int = 2) -> pd.DataFrame:
    """C3's numbers per layer (forward order) of one record: the outlier rule on the layer's top 2C
    Ritz values of Hess_l (:func:`rule_values`, as :func:`full_spectrum_summary`), λ_max(Hess_l), and, where the record
    holds G and H, W₁(Hess_l, G_l) / range(Hess_l) and ‖H_l‖ = max |λ(H_l)| (absolute and / λ_max(Hess_l)).
    ``valid``: Hess_l's Lanczos output passes :func:`top_within_trace` (Hess_l = G_l is PSD for networks
    piecewise linear in one layer's weights)."""
    kinds = record.kinds
    rows = []
    for depth, (layer, h) in enumerate(kinds["hessian"].layers.items()):
        top = rule_values(h, C)
        v = outlier_verdict(top, C, tolerance)
        lam_max = float(top[0]) if len(top) else spectral_support(h.density)[1]
        row = {"layer": layer, "depth": depth, "dim": h.dim, "lambda_max": lam_max, "outliers": v["outliers"],
               "rule_ok": v["ok"], "largest_gap_ratio": v["gap_ratio"], "valid": top_within_trace(h)}
        if "ggn" in kinds:
            lo, hi = spectral_support(h.density)
            row["w1_hess_ggn_rel"] = w1_distance(h.density, kinds["ggn"].layers[layer].density) \
                / max(hi - lo, 1e-300)
        if "residual" in kinds:
            radius = spectral_radius(kinds["residual"].layers[layer].density)
            row["res_norm"] = radius
            row["res_norm_rel"] = radius / max(abs(lam_max), 1e-300)
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- figures


# --------------------------------------------------------------------------- verdicts (rules: claims.py)


def c1_verdict(summary: pd.DataFrame, history: pd.DataFrame) -> VerdictResult:
    """C1 from :func:`full_spectrum_summary` rows at each run's final epoch (``summary``) and at every epoch."""
    ok = summary.set_index("run")["rule_ok"]
    verdict = Verdict.from_counts(int(ok.sum()), len(ok))
    per_run = "; ".join(f"{r.run}: k = {r.outliers} (C = {r.C}, largest gap λ_k/λ_k+1 = {r.largest_gap_ratio:.3g}, "
                        f"λ_C/λ_C+1 = {r.gap_ratio_at_C:.3g}), {r['bulk_mass_1%']:.1%} of the SLQ mass at |λ| < 1 % "
                        f"λ_max" for _, r in summary.iterrows())
    measured = f"rule holds for {int(ok.sum())}/{len(ok)} runs" + (
        f" (not for {', '.join(ok.index[~ok])})" if verdict is Verdict.INCONCLUSIVE else "") + ". " + per_run
    return VerdictResult(verdict, measured, {"final": summary.to_dict("records"), "history": history.to_dict("records")})


def c2_verdict(table: pd.DataFrame) -> VerdictResult:
    """C2 from :func:`gauss_newton_table`: each run's final epoch decides (column ``passes``)."""
    final_rows = table[table["final"]].set_index("run")
    invalid = list(final_rows.index[~final_rows["ggn_valid"]])
    ok = final_rows["passes"][final_rows["ggn_valid"]]
    verdict = Verdict.from_counts(int(ok.sum()), len(ok))
    later = table[(table["epoch"] > 0) & table["ggn_valid"]]
    per_run = "; ".join(f"{run} (epoch {r.epoch}): top-C rel. diff. median {r.topC_rel_diff_median:.1%}, "
                        f"W1(Hess,G) = {r.w1_hess_ggn_rel:.2%} of the range, max|λ(H)| = {r.res_radius_rel:.1%} "
                        f"of λ_max(Hess)" for run, r in final_rows.iterrows())
    measured = (f"final epoch: {int(ok.sum())}/{len(ok)} valid runs pass" +
                (f" (not {', '.join(ok.index[~ok])})" if verdict is Verdict.INCONCLUSIVE and not ok.empty else "") +
                (f"; INVALID (λ_max(G) > tr(G) + 3 stderr: Lanczos lost orthogonality): {', '.join(invalid)}"
                 if invalid else "") +
                f"; all valid epochs after initialisation: {int(later['passes'].sum())}/{len(later)} pass. " + per_run)
    return VerdictResult(verdict, measured, {"table": table.to_dict("records")})


def c3_verdict(table: pd.DataFrame, reproduced_at: float = 0.75, not_reproduced_below: float = 0.25) -> VerdictResult:
    """C3 from the :func:`layer_table` rows of every run's final epoch: the share f of valid layers with C ± 2 outliers."""
    valid = table[table["valid"]]
    invalid = [f"{r.run}: {r.layer}" for r in table[~table["valid"]].itertuples()]
    frac = float(valid["rule_ok"].mean()) if len(valid) else float("nan")
    verdict = (Verdict.INCONCLUSIVE if not len(valid) else Verdict.REPRODUCED if frac >= reproduced_at
               else Verdict.NOT_REPRODUCED if frac < not_reproduced_below else Verdict.INCONCLUSIVE)
    per_run = "; ".join(f"{run}: {int(g['rule_ok'].sum())}/{len(g)} layers (k = {', '.join(map(str, g['outliers']))})"
                        for run, g in valid.groupby("run", sort=False))
    measured = (f"{int(valid['rule_ok'].sum())}/{len(valid)} valid layers ({frac:.0%}) show C ± 2 outliers; {per_run}"
                + (f"; INVALID (λ_max > trace + 3 stderr, excluded): {', '.join(invalid)}" if invalid else "") + ". "
                f"G_l = Hess_l: max ‖H_l‖/λ_max(Hess_l) = {table['res_norm_rel'].max():.1e}, "
                f"max W1(Hess_l, G_l)/range = {table['w1_hess_ggn_rel'].max():.1e} (zero by construction)")
    return VerdictResult(verdict, measured, {"layers": table.to_dict("records"), "fraction": frac, "invalid": invalid})


def _block_args(r: pd.Series, C: int) -> tuple:
    return (r["lambda_1"], r["lambda_C"], r["lambda_C+1"], r["bulk_edge"], r["overlap"], int(r["dim"]), C)


def _fit_block(*args: Any) -> Any:
    """:func:`htr_utils.study.calibration_spectra.fit_spiked`, or its ValueError (the model's eigenvalues overflow
    along the search: no fit for this block) returned, not raised, so a worker process can hand it back."""
    try:
        return cs.fit_spiked(*args)
    except ValueError as err:
        return err


def layer_fits(layers: pd.DataFrame, C: int, per_run: int | None = None) -> tuple[list[Any], dict[str, str]]:
    """C3 (a)'s calibration models: :func:`htr_utils.study.calibration_spectra.fit_spiked` of each layer block's
    row (λ₁, λ_C, λ_C+1, edge, overlap, dim; at most ``per_run`` blocks per run, None: all), and {"run/block": why}
    for the blocks the spiked model cannot describe (a non-positive λ_C+1, no overlap, too few parameters, or a
    fit that does not converge), which are left out of the calibration and named."""
    fits, skipped = [], {}
    layers = layers.reset_index(drop=True)   # the rows' positions key the fits done ahead
    ok = (layers["lambda_1"] >= layers["lambda_C"]) & (layers["lambda_C"] >= layers["lambda_C+1"]) \
        & (layers["lambda_C+1"] > 0) & (layers["bulk_edge"] > 0) & (layers["overlap"] > 0) \
        & (layers["overlap"] <= 1) & (layers["dim"] > 2 * C)
    eligible = layers[ok] if per_run is None else layers.iloc[:0]   # per_run: fitted one by one, as few as needed
    done = dict(zip(eligible.index, pool_map(_fit_block, [_block_args(r, C) for _, r in eligible.iterrows()])))
    for run, g in layers.groupby("run", sort=False):
        taken = 0
        for idx, r in g.iterrows():
            name = f"{run}/{r['block']}"
            if per_run is not None and taken >= per_run:
                break
            if not (r["lambda_1"] >= r["lambda_C"] >= r["lambda_C+1"] > 0 and r["bulk_edge"] > 0
                    and 0 < r["overlap"] <= 1 and r["dim"] > 2 * C):
                skipped[name] = "outside the spiked model (λ_C+1 ≤ 0, no overlap, or at most 2C parameters)"
                continue
            fit = done[idx] if idx in done else _fit_block(*_block_args(r, C))
            if isinstance(fit, ValueError):
                skipped[name] = f"the fit failed ({fit})"
                continue
            if not np.isfinite([fit.a1, fit.aC, fit.beta, fit.loss]).all():
                skipped[name] = "the fit did not converge"
                continue
            fits.append(fit)
            taken += 1
    if not fits:
        raise ValueError(f"C3 calibration: no layer block could be fitted ({skipped}); read the class structure at "
                         "more examples per class or Lanczos steps")
    return fits, skipped
