"""How far the study's numbers move across machines (issue 17), emulated on one machine.

Three measurements, each written to ``benchmarks/stability.json`` and printed as a table:

* ``variants``: the cpu profile's LeNet + FashionMNIST regularisation arms (SGD and SGD + HTR at the
  chosen γ, seed 1) trained from scratch under four CPU variants, each in its own process:
  torch's native CPU kernels against ``ATEN_CPU_CAPABILITY=default`` (no vector instructions, as an
  older CPU would run them), with 1 and 2 threads. Reported per number: the spread (max − min)
  over the variants, beside the margin the rule that reads it works with.
* ``reruns``: whole notebooks rerun from an empty run cache under CPU variants (``RERUN_NOTEBOOKS``:
  those whose runs fit this CPU: 00's checks and 06's sweep of 21 LeNet runs), each variant in its own
  process with its own cache (``$HTR_RUNS_DIR``); per variant and notebook the verdict and the key
  numbers it rests on.
* ``devices``: two runs of the same spectra config trained on different machines (e.g. this CPU and
  a GPU), compared epoch by epoch over the epochs both have: training loss, test accuracy, and the
  full Hessian's λ_max and trace.

    python -m benchmarks.stability variants [--out DIR] [--only 'default ISA, 2 threads' ...]
    python -m benchmarks.stability reruns [--out DIR] [--only VARIANT ...] [--notebooks 00 06] [--collect]
    python -m benchmarks.stability devices RUN_DIR_A RUN_DIR_B
    python -m benchmarks.stability assess figures/cpu

``assess`` judges the verdicts in a report folder against these spreads and writes its
``stability.json`` (REPORT.md's "across machines" column), then rewrites its REPORT.md:

* C6b: every paired accuracy interval of the rule shifted by ± the variants' spread of the paired
  HTR − SGD difference (conservative: that spread is one seed's, the rule reads a 10-seed mean),
  and the rule applied again; stable if neither shift changes the verdict.
* C5: the rule applied to the trend series of each device's copy of the spectra runs (runs with at
  least the rule's minimum of epochs in common); stable if both copies give the committed verdict.
* C7: its accuracy half waits on C6b's gain, so it is as stable as C6b.
* a notebook with ``reruns`` (any rerun whole, e.g. C0, C6a, C6b): stable if its rule gives the committed
  verdict under every variant rerun; the key numbers' range over the variants and the committed run beside.
* a verdict with several of these checks is stable only if every one of them says so; a verdict with none
  is "not measured" (its readings were not rerun under the variants).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from htr_utils.study.profiles import RUNS_DIR_ENV

RESULTS = Path(__file__).with_name("stability.json")
VARIANTS = {"native, 1 thread": ("", 1), "native, 2 threads": ("", 2),
            "default ISA, 1 thread": ("default", 1), "default ISA, 2 threads": ("default", 2)}
GAMMA = 1e-4  # the γ the cpu profile's selection grid chose (figures/cpu/07_trace_regularisation)

_CHILD = r"""
import json, sys, torch
from htr_utils.study.profiles import get_profile
from htr_utils.study.runs import environment, train_run
from htr_utils.study.outputs import data_root
torch.set_num_threads(int(sys.argv[2]))
study = get_profile("cpu").regularisation["lenet_fashionmnist"]
arms = study.arms({"all": float(sys.argv[3])})
out = {"environment": environment("cpu")}
for name in ("sgd", "htr"):
    run = train_run(arms[name].replace(seed=1), root=sys.argv[1], progress=False, data_root=data_root())
    m = run.metrics.iloc[-1]
    rec = run.curvature(run.config.epochs).kinds["hessian"].full
    out[name] = {"test_acc": float(m["test_acc"]), "train_loss": float(m["train_loss"]),
                 "trace": float(rec.trace.mean), "lambda_max": float(max(rec.top))}
print("RESULT", json.dumps(out))
"""


def selected_variants(only: list[str] | None) -> list[tuple[str, str, int]]:
    """(name, instruction set, threads) of every variant, or of those named in ``only`` (checked)."""
    unknown = [n for n in only or [] if n not in VARIANTS]
    if unknown:
        raise SystemExit(f"--only {unknown}: not a variant; choose from {', '.join(map(repr, VARIANTS))}")
    return [(n, isa, t) for n, (isa, t) in VARIANTS.items() if not only or n in only]


def variant_dir(out: Path, name: str) -> Path:
    return out / name.replace(",", "").replace(" ", "_")


def run_variants(out: Path, only: list[str] | None = None, earlier: dict | None = None) -> dict:
    """Train every variant (or those in ``only``, keeping ``earlier``'s rows of the others) and their spread."""
    rows = {n: r for n, r in (earlier or {}).items() if n in VARIANTS}
    for name, isa, threads in selected_variants(only):
        env = variant_env(isa, threads)
        root = variant_dir(out, name)
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(threads), str(GAMMA)], env=env,
                              capture_output=True, text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise RuntimeError(f"variant {name!r} failed:\n{proc.stderr[-3000:]}")
        rows[name] = json.loads(line[-1][len("RESULT "):])
        print(name, rows[name], flush=True)
    rows = {n: rows[n] for n in VARIANTS if n in rows}
    return {"variants": rows, "spread": spread(rows)}


RERUN_NOTEBOOKS = ("00", "06")  # the notebooks whose whole computation a CPU variant can rerun here


def variant_env(isa: str, threads: int, **extra: str) -> dict[str, str]:
    """This process's environment with the variant's thread count and instruction set (and ``extra``)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **extra)
    env.pop("ATEN_CPU_CAPABILITY", None)
    if isa:
        env["ATEN_CPU_CAPABILITY"] = isa
    return env


_TAU = re.compile(r"([\w.-]+) (lambda_max|trace): .*?τ = ([-+]?[\d.]+)")


def key_numbers(verdict: dict) -> dict[str, float]:
    """The numbers a notebook's verdict rests on, from its verdict.json (C0: the worst check's measured /
    tolerance; C1: each network's outlier count k and bulk edge; C2: readings with G (and H) within 10 %;
    C3: the shares of its two parts; C5: the decreasing series and each full-network series' Kendall τ;
    C6a: the partial ρ's and their interval bounds)."""
    extra = verdict.get("extra") or {}
    cid = verdict.get("claim_id")
    if cid == "C0":
        return {"worst check / tolerance": max(c["measured"] / c["tolerance"] for c in extra["checks"])}
    if cid == "C1":
        return {**{f"k {r['run']}": float(r["outliers"]) for r in extra["rows"]},
                **{f"edge {r['run']}": float(r["bulk_edge"]) for r in extra["rows"]}}
    if cid == "C2":
        return {"G within 10 % (of total)": float(extra["pass_ggn"]) / float(extra["total"]),
                "H within 10 % (of total)": float(extra["pass_residual"]) / float(extra["total"])}
    if cid == "C3":
        return {"share of blocks with C ± 2 outliers": float(extra["share_counts"]),
                "share of G_l within 10 %": float(extra["share_agreement"])}
    if cid == "C5":
        taus = {f"τ {run} {q}": float(t) for run, q, t in _TAU.findall(verdict.get("measured", "").split("; layers")[0])}
        return {"full series decreasing": float(extra["full_decreasing"]), **taus}
    if cid == "C6b":
        study = next(iter(extra["per_study"]))
        rows = [r for r in extra["comparisons"][study] if r.get("in_rule") and r["quantity"] == "test_acc"]
        return {"log10 γ chosen": float(np.log10(extra["gammas"][study])),
                **{f"{r['comparison']} (pts) {b}": 100 * float(r[k]) for r in rows
                   for b, k in (("diff", "diff"), ("lo", "lo"), ("hi", "hi"))}}
    if cid == "C6a":
        corr = extra["correlations"]
        return {f"{q} {b}": float(corr[q][b]) for q in ("partial_test_acc", "partial_acc_gap", "partial_loss_gap")
                for b in ("rho", "lo", "hi")}
    return {}


def run_reruns(out: Path, only: list[str] | None = None, notebooks: Sequence[str] = RERUN_NOTEBOOKS,
               profile: str = "cpu") -> dict:
    """Rerun ``notebooks`` of ``profile`` from an empty cache under each variant (or those in ``only``);
    per variant and notebook: verdict, measured, key numbers."""
    rows = {}
    for name, isa, threads in selected_variants(only):
        root = variant_dir(out, name)
        env = variant_env(isa, threads, **{RUNS_DIR_ENV: str((root / "runs").resolve())})
        proc = subprocess.run([sys.executable, "-m", "htr_utils.study.reproduce", "--profile", profile,
                               "--out", str(root / "figures"), "--only", *notebooks], env=env, check=False)
        if proc.returncode:
            raise RuntimeError(f"variant {name!r}: the rerun of notebooks {list(notebooks)} failed "
                               f"(exit {proc.returncode}); its outputs are in {root / 'figures'}")
        rows[name] = collect_rerun(root, _environment(env))
        print(name, {nb: r["verdict"] for nb, r in rows[name].items()}, flush=True)
    return rows


def collect_rerun(root: Path, environment: dict) -> dict[str, dict]:
    """Per notebook rerun into ``root/figures``: verdict, measured and key numbers (``environment``: what torch
    reported in the variant's process)."""
    row = {}
    for v in sorted((root / "figures").glob("*/verdict.json")):
        verdict = json.loads(v.read_text())
        row[v.parent.name] = {"claim_id": verdict.get("claim_id"), "verdict": verdict["verdict"],
                              "measured": verdict.get("measured", ""), "key": key_numbers(verdict),
                              "environment": environment}
    return row


_PROBE = ("import json, torch; from htr_utils.study.runs import cpu_model; print(json.dumps({'cpu_model': cpu_model(), "
          "'capability': torch.backends.cpu.get_cpu_capability(), 'threads': torch.get_num_threads(), "
          "'torch': torch.__version__}))")


def _environment(env: dict[str, str]) -> dict:
    """What torch in a process with ``env`` (the variant's; its notebooks' kernels inherit it) reports."""
    proc = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def spread(rows: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Per number (each arm's test accuracy, training loss, trace, λ_max, and the paired HTR − SGD
    differences of test accuracy and trace): min, max and spread = max − min over the variants."""
    numbers = {f"{arm} {q}": [r[arm][q] for r in rows.values()] for arm in ("sgd", "htr")
               for q in ("test_acc", "train_loss", "trace", "lambda_max")}
    for q in ("test_acc", "trace"):
        numbers[f"htr − sgd {q}"] = [r["htr"][q] - r["sgd"][q] for r in rows.values()]
    return {k: {"min": min(v), "max": max(v), "spread": max(v) - min(v)} for k, v in numbers.items()}


def compare_devices(a: Path, b: Path) -> dict:
    from htr_utils.study.depth_trends import curvature_series, load_records
    from htr_utils.study.runs import Run

    runs = [Run(a), Run(b)]
    if runs[0].config != runs[1].config:
        raise ValueError(f"{a} and {b} are runs of different configs; compare runs of one config")
    series = [curvature_series(load_records(r)).query("scope == 'full'").set_index("epoch") for r in runs]
    metrics = [r.metrics.set_index("epoch") for r in runs]
    common = sorted(set(series[0].index) & set(series[1].index) & set(metrics[0].index) & set(metrics[1].index))
    rows = []
    for e in common:
        row = {"epoch": e}
        for q in ("lambda_max", "trace"):
            x, y = series[0].loc[e, q], series[1].loc[e, q]
            row[f"{q} rel. diff"] = abs(x - y) / abs(y)
        for q in ("train_loss", "test_acc"):
            row[f"{q} diff"] = abs(metrics[0].loc[e, q] - metrics[1].loc[e, q])
        rows.append(row)
    from htr_utils.study.spectra_rules import kendall_trend
    trends = {q: [kendall_trend([s.loc[e, q] for e in common if e >= 1])[0] for s in series]
              for q in ("lambda_max", "trace")}  # C5's τ over the common epochs, run a and run b
    envs = [r.config_info().get("environment", {}) for r in runs]
    return {"runs": [str(a), str(b)], "environments": envs, "epochs": common, "per_epoch": rows,
            "kendall_tau": trends,
            "max": {k: max(r[k] for r in rows) for k in rows[0] if k != "epoch"}}


def _trend_p(tau: float, n: int) -> tuple[float, float]:
    """Exact one-sided p-values (decrease, increase) of Kendall's τ of n untied points against their index."""
    from htr_utils.study.calibration import kendall_null
    null = np.cumsum(kendall_null(n))
    d = int(round((1.0 - tau) * n * (n - 1) / 4))  # discordant pairs
    return float(1.0 - (null[d - 1] if d > 0 else 0.0)), float(null[d])


def assess_c6b(intervals: list[dict], paired_spread: float, committed: str) -> dict[str, str]:
    from htr_utils.study.regularisation_rules import c6b_rule
    shifted = {str(c6b_rule([{"lo": i["lo"] + d, "hi": i["hi"] + d} for i in intervals]))
               for d in (-paired_spread, paired_spread)}
    hi = max(i["hi"] for i in intervals)
    why = (f"paired intervals shifted by ± {paired_spread * 100:.2g} pts (the variants' spread of HTR − SGD) "
           f"give {' / '.join(sorted(shifted))}; largest upper bound {hi * 100:+.3f} pts; at the committed run's "
           "chosen γ (the seed-1 variants trained at that γ)")
    return {"stable": "yes" if shifted == {committed} else "no", "why": why}


def assess_c5(devices: dict, committed: str) -> dict[str, str]:
    from htr_utils.study.spectra_rules import MIN_TREND_POINTS, c5_codes, verdict_of
    verdicts, used = [], []
    for side in (0, 1):
        p_dec, p_inc = [], []
        for name, d in devices.items():
            n = len([e for e in d["epochs"] if e >= 1])
            if n < MIN_TREND_POINTS:
                continue
            used.append(name) if side == 0 else None
            for q in ("lambda_max", "trace"):
                pd_, pi_ = _trend_p(d["kendall_tau"][q][side], n)
                p_dec.append(pd_), p_inc.append(pi_)
        verdicts.append(str(verdict_of(c5_codes(np.array(p_dec), np.array(p_inc)))) if p_dec else "no series")
    why = (f"the rule on the CPU and GPU copies of {len(used)} spectra runs over their common epochs: "
           f"{verdicts[0]} / {verdicts[1]} (committed: {committed})")
    return {"stable": "yes" if verdicts == [committed, committed] else "no", "why": why}


def assess_rerun(reruns: dict[str, dict], committed: dict) -> dict[str, str]:
    """Stable if every variant's rerun gives the committed verdict; the key numbers' range beside."""
    verdict = committed.get("verdict")
    got = {vn: r["verdict"] for vn, r in reruns.items()}
    keys = [key_numbers(committed), *(r["key"] for r in reruns.values())]
    ranges = "; ".join(f"{k} {min(x[k] for x in keys):.3g} … {max(x[k] for x in keys):.3g}"
                       for k in keys[0] if all(k in x for x in keys) and not k.endswith((" lo", " hi")))
    bounds = [k for k in keys[0] if k.endswith((" lo", " hi"))]
    if bounds:
        ranges += "; interval bounds " + ", ".join(
            f"{k} {min(x[k] for x in keys):.2f} … {max(x[k] for x in keys):.2f}" for k in bounds if "loss" not in k)
    why = (f"the notebook rerun from an empty cache under {len(got)} CPU variant{'s' if len(got) > 1 else ''}: "
           + ", ".join(f"{vn} {g}" for vn, g in got.items()) + f" (committed: {verdict}); over these and the "
           f"committed run: {ranges}")
    return {"stable": "yes" if set(got.values()) == {verdict} else "no", "why": why}


def assess(directory: Path, results: dict) -> dict[str, dict[str, str]]:
    from htr_utils.study.report import STABILITY_FILE, collect_verdicts, write_report
    verdicts = collect_verdicts(directory)
    spread_ = results.get("variants", {}).get("spread", {})
    out = {}
    for name, v in verdicts.items():
        cid, committed, extra = v.get("claim_id"), v.get("verdict"), v.get("extra") or {}
        parts = []  # every check measured for this verdict; stable only if each of them says so
        if cid == "C6b" and "htr − sgd test_acc" in spread_:
            study = next(iter(extra.get("per_study", {})))
            rows = [r for r in extra["comparisons"][study] if r.get("in_rule") and r["quantity"] == "test_acc"]
            parts.append(assess_c6b(rows, spread_["htr − sgd test_acc"]["spread"], committed))
        if cid == "C5" and results.get("devices"):
            parts.append(assess_c5(results["devices"], committed))
        reruns = {vn: r[name] for vn, r in results.get("reruns", {}).items() if name in r}
        if reruns:
            parts.append(assess_rerun(reruns, v))
        out[name] = ({"stable": "yes" if all(p["stable"] == "yes" for p in parts) else "no",
                      "why": "; and ".join(p["why"] for p in parts)} if parts
                     else {"stable": "not measured", "why": "not rerun under the variants"})
    c6b = [out[n] for n, v in verdicts.items() if v.get("claim_id") == "C6b"]
    for name, v in verdicts.items():
        if v.get("claim_id") == "C7" and c6b:
            out[name] = {"stable": c6b[0]["stable"], "why": "its accuracy half waits on C6b's gain, as stable as "
                                                            "C6b; the cost ratio is a timing, not rerun"}
    (directory / STABILITY_FILE).write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")
    write_report(directory)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stability")
    sub = ap.add_subparsers(dest="what", required=True)
    v = sub.add_parser("variants")
    v.add_argument("--out", type=Path, default=Path("build/stability"))
    v.add_argument("--only", nargs="+", default=None, metavar="VARIANT",
                   help="train only these variants and keep the others' earlier results")
    r = sub.add_parser("reruns")
    r.add_argument("--out", type=Path, default=Path("build/stability_reruns"))
    r.add_argument("--only", nargs="+", default=None, metavar="VARIANT",
                   help="rerun only under these variants and keep the others' earlier results")
    r.add_argument("--notebooks", nargs="+", default=list(RERUN_NOTEBOOKS), metavar="NN")
    r.add_argument("--collect", action="store_true",
                   help="rerun nothing: read the selected variants' finished reruns in --out again")
    d = sub.add_parser("devices")
    d.add_argument("run_a", type=Path)
    d.add_argument("run_b", type=Path)
    a = sub.add_parser("assess")
    a.add_argument("directory", type=Path, help="a report folder, e.g. figures/cpu")
    args = ap.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.what == "assess":
        for name, entry in assess(args.directory, results).items():
            print(f"{name:26s} {entry['stable']}: {entry['why']}")
        return
    if args.what == "variants":
        results["variants"] = run_variants(args.out, args.only, results.get("variants", {}).get("variants"))
        for k, s in results["variants"]["spread"].items():
            print(f"{k:28s} {s['min']:.6g} – {s['max']:.6g}  spread {s['spread']:.3g}")
    elif args.what == "reruns":
        if args.collect:
            rows = {name: collect_rerun(variant_dir(args.out, name), _environment(variant_env(isa, threads)))
                    for name, isa, threads in selected_variants(args.only)
                    if (variant_dir(args.out, name) / "figures").is_dir()}
        else:
            rows = run_reruns(args.out, args.only, args.notebooks)
        # variants may be rerun by processes side by side: keep what another one wrote meanwhile
        results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
        merged = results.get("reruns", {})
        for name, row in rows.items():
            merged[name] = {**merged.get(name, {}), **row}
        results["reruns"] = {n: merged[n] for n in VARIANTS if n in merged}
    else:
        results.setdefault("devices", {})[args.run_a.name] = out = compare_devices(args.run_a, args.run_b)
        print(f"epochs {out['epochs'][0]}-{out['epochs'][-1]}; largest differences:",
              ", ".join(f"{k} {v:.3g}" for k, v in out["max"].items()))
        print("Kendall τ (a, b):", ", ".join(f"{q} {ta:+.3f} / {tb:+.3f}" for q, (ta, tb) in out["kendall_tau"].items()))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
