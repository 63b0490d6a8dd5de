"""How far the study's numbers move across machines (issue 17), emulated on one machine.

Two measurements, each written to ``benchmarks/stability.json`` and printed as a table:

* ``variants``: the cpu profile's LeNet + FashionMNIST regularisation arms (SGD and SGD + HTR at the
  chosen γ, seed 1) trained from scratch under four CPU variants, each in its own process:
  torch's native CPU kernels against ``ATEN_CPU_CAPABILITY=default`` (no vector instructions, as an
  older CPU would run them), with 1 and 2 threads. Reported per number: the spread (max − min)
  over the variants, beside the margin the rule that reads it works with.
* ``devices``: two runs of the same spectra config trained on different machines (e.g. this CPU and
  a GPU), compared epoch by epoch over the epochs both have: training loss, test accuracy, and the
  full Hessian's λ_max and trace.

    python -m benchmarks.stability variants [--out DIR]
    python -m benchmarks.stability devices RUN_DIR_A RUN_DIR_B
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

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


def run_variants(out: Path) -> dict:
    rows = {}
    for name, (isa, threads) in VARIANTS.items():
        env = dict(os.environ, OMP_NUM_THREADS=str(threads))
        if isa:
            env["ATEN_CPU_CAPABILITY"] = isa
        root = out / name.replace(",", "").replace(" ", "_")
        proc = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(threads), str(GAMMA)], env=env,
                              capture_output=True, text=True, check=False)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode or not line:
            raise RuntimeError(f"variant {name!r} failed:\n{proc.stderr[-3000:]}")
        rows[name] = json.loads(line[-1][len("RESULT "):])
        print(name, rows[name], flush=True)
    numbers = {f"{arm} {q}": [r[arm][q] for r in rows.values()] for arm in ("sgd", "htr")
               for q in ("test_acc", "train_loss", "trace", "lambda_max")}
    numbers["htr − sgd test_acc"] = [r["htr"]["test_acc"] - r["sgd"]["test_acc"] for r in rows.values()]
    spread = {k: {"min": min(v), "max": max(v), "spread": max(v) - min(v)} for k, v in numbers.items()}
    return {"variants": rows, "spread": spread}


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


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stability")
    sub = ap.add_subparsers(dest="what", required=True)
    v = sub.add_parser("variants")
    v.add_argument("--out", type=Path, default=Path("build/stability"))
    d = sub.add_parser("devices")
    d.add_argument("run_a", type=Path)
    d.add_argument("run_b", type=Path)
    args = ap.parse_args(argv)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    if args.what == "variants":
        results["variants"] = run_variants(args.out)
        for k, s in results["variants"]["spread"].items():
            print(f"{k:28s} {s['min']:.6g} – {s['max']:.6g}  spread {s['spread']:.3g}")
    else:
        results.setdefault("devices", {})[args.run_a.name] = out = compare_devices(args.run_a, args.run_b)
        print(f"epochs {out['epochs'][0]}-{out['epochs'][-1]}; largest differences:",
              ", ".join(f"{k} {v:.3g}" for k, v in out["max"].items()))
        print("Kendall τ (a, b):", ", ".join(f"{q} {ta:+.3f} / {tb:+.3f}" for q, (ta, tb) in out["kendall_tau"].items()))
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
