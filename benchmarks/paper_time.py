"""How long ``grid train --profile paper --select lenet_fashionmnist`` takes on this machine (issue 15),
measured in parts and added up, because the whole selection takes hours on a 2-core CPU.

* The 50-epoch spectra run (the paper's setting: Hessian every epoch, every curvature kind at 8 epochs)
  is trained for ``--spectra-seconds`` and stopped; its per-epoch wall times (training + evaluation +
  curvature, from ``metrics.csv``) give the 50 epochs: epochs with every curvature kind × 8, the others
  × 42.
* Its readings are taken once at the last finished epoch: a class reading on 10 and on 100 examples
  per class and a distance reading with its size-matched null; the profile asks for 8, 1 and 5 of them.
* The regularisation study's arms (``--arms``, seed 1) are trained in full; each arm has 10 seeds. An
  arm not timed takes the time of its timed twin (SGD + L2 that of SGD, L2 + HTR that of HTR: the
  weight decay adds nothing measurable).

The runs use the local executor's setting (this process, torch's default threads) in a temporary
cache. Written to ``benchmarks/paper_time.json`` and printed.

    python -m benchmarks.paper_time [--spectra-seconds 420] [--arms sgd htr htr_middle htr_middle_authors]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("paper_time.json")
SETTING = "lenet_fashionmnist"
TWINS = {"sgd_l2": "sgd", "l2_htr": "htr"}

_SPECTRA_CHILD = r"""
import sys, torch
from htr_utils.study.profiles import get_profile
from htr_utils.study.runs import train_run
from htr_utils.study.outputs import data_root
train_run(get_profile("paper").spectra_runs[sys.argv[2]], root=sys.argv[1], progress=False, data_root=data_root())
"""


def _epoch_walls(run) -> "pd.Series":  # noqa: F821
    m = run.metrics.set_index("epoch")
    return m["epoch_seconds"] + m["eval_seconds"] + m["curvature_seconds"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.paper_time", description=__doc__.split("\n\n")[0])
    ap.add_argument("--spectra-seconds", type=float, default=420.0)
    ap.add_argument("--arms", nargs="+", default=["sgd", "htr", "htr_middle", "htr_middle_authors"])
    args = ap.parse_args(argv)

    import torch

    from htr_utils.study.outputs import data_root
    from htr_utils.study.profiles import get_profile
    from htr_utils.study.runs import Run, environment, run_path, train_run
    from htr_utils.study.spectra_readings import class_reading, distance_reading

    P = get_profile("paper")
    cfg, reading, study = P.spectra_runs[SETTING], P.spectra_reading[SETTING], P.regularisation[SETTING]
    arms = study.arms()
    unknown = [a for a in args.arms if a not in arms]
    if unknown:
        raise SystemExit(f"--arms {' '.join(unknown)}: not an arm of the paper's {SETTING} study; choose from {', '.join(arms)}")
    root, droot = Path(tempfile.mkdtemp(prefix="paper_time_")), data_root()
    out: dict = {"machine": environment("cpu"), "threads": torch.get_num_threads()}
    try:
        # 1. the spectra run, stopped after --spectra-seconds
        t0 = time.perf_counter()
        try:
            subprocess.run([sys.executable, "-c", _SPECTRA_CHILD, str(root), SETTING], timeout=args.spectra_seconds,
                           check=True, env=dict(os.environ))
        except subprocess.TimeoutExpired:
            pass
        run = Run(run_path(cfg, root))
        walls = _epoch_walls(run)
        if len(walls) < 2:
            raise SystemExit(f"only {len(walls)} epoch(s) of the spectra run in {args.spectra_seconds:.0f} s: "
                             "pass a larger --spectra-seconds")
        kinds = set(cfg.curvature_kinds_epochs) - {0}
        with_kinds = walls[[e in kinds for e in walls.index]]
        plain = walls[[e not in kinds for e in walls.index]]
        n_kinds = len([e for e in kinds if e <= cfg.epochs])
        spectra_s = float(with_kinds.mean()) * n_kinds + float(plain.mean()) * (cfg.epochs - n_kinds)
        out["spectra"] = {"epochs_timed": len(walls), "seconds_timed": time.perf_counter() - t0,
                          "epoch_with_every_kind_s": float(with_kinds.mean()),
                          "epoch_plain_s": float(plain.mean()), "estimate_s": spectra_s}
        print(f"spectra run: {len(walls)} epochs timed; epoch with every curvature kind {with_kinds.mean():.0f} s, "
              f"other epochs {plain.mean():.0f} s → 50 epochs ≈ {spectra_s / 60:.0f} min", flush=True)

        # 2. its readings, once each at the last finished epoch
        e = int(walls.index.max())
        secs = {"class_10": class_reading(run, e, reading.examples_per_class, reading.lanczos_iters, droot).seconds,
                "class_100": class_reading(run, e, reading.large_examples_per_class, reading.lanczos_iters,
                                           droot).seconds,
                "distance": distance_reading(run, e, reading.slq_probes, reading.lanczos_iters, reading.null_subsets,
                                             droot).seconds}
        counts = {"class_10": len(reading.class_epochs), "class_100": len(reading.large_epochs or (cfg.epochs,)),
                  "distance": len(reading.distance_epochs)}
        readings_s = sum(secs[k] * counts[k] for k in secs)
        out["readings"] = {"seconds_each": secs, "count": counts, "estimate_s": readings_s}
        print("readings: " + ", ".join(f"{k} {secs[k]:.0f} s × {counts[k]}" for k in secs)
              + f" → {readings_s / 60:.0f} min", flush=True)

        # 3. the regularisation arms, seed 1, in full
        timed = {}
        for name in args.arms:
            t0 = time.perf_counter()
            train_run(arms[name].replace(seed=1), root=root, progress=False, data_root=droot)
            timed[name] = time.perf_counter() - t0
            print(f"arm {name}: {timed[name]:.0f} s", flush=True)
        per_arm = {a: timed.get(a, timed.get(TWINS.get(a, ""), float("nan"))) for a in arms}
        reg_s = sum(per_arm.values()) * len(study.seeds)
        out["regularisation"] = {"timed_s": timed, "per_arm_s": per_arm, "seeds": len(study.seeds), "estimate_s": reg_s}
        out["total_estimate_s"] = spectra_s + readings_s + reg_s
    finally:
        shutil.rmtree(root, ignore_errors=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")
    print(f"regularisation: {len(arms)} arms × {len(study.seeds)} seeds ≈ {reg_s / 60:.0f} min\n"
          f"total ≈ {out['total_estimate_s'] / 3600:.1f} h with {out['threads']} threads, one run after another")


if __name__ == "__main__":
    main()
