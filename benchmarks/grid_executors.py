"""The run grid's executors side by side (issue 15): the cpu profile's LeNet + FashionMNIST
regularisation runs trained twice from empty caches, back to back on this machine,

* ``local``: one run after another in this process, ``--local-threads`` torch threads (default 2);
* ``dask``: a Dask LocalCluster of ``--workers`` processes (default 2), 1 thread each,

then the wall-time ratio local / dask and whether the two caches hold the same numbers (every epoch's
metrics without the timing columns, and the final weights). Different thread counts may change the
last bits of float sums, so a run that differs is reported with its largest change in final test
accuracy and training loss.

    python -m benchmarks.grid_executors [--runs N] [--out DIR]

``--runs N`` takes the first N runs of the plan (the γ selection grid at seed 0, then the SGD and
SGD + L2 arms of seeds 1-10); the HTR arms wait for γ and are left out. Results go to
``benchmarks/grid_executors.json`` and a table on stdout.
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("grid_executors.json")
STUDY = "lenet_fashionmnist"


def _numbers(root: Path, h: str) -> tuple[str, list]:
    from htr_utils.study.runs import Run
    from htr_utils.study.training import TIMING_COLUMNS
    run = Run(root / h)
    return run.metrics.drop(columns=list(TIMING_COLUMNS)).to_json(), [
        v.tolist() for v in run.load_model().state_dict().values()]


def _final(root: Path, h: str) -> dict[str, float]:
    from htr_utils.study.runs import Run
    m = Run(root / h).metrics.iloc[-1]
    return {"test_acc": float(m["test_acc"]), "train_loss": float(m["train_loss"])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.grid_executors", description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=16, help="the first N runs of the plan (default 16)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--local-threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="where the two caches go (default: a temporary folder, removed)")
    args = ap.parse_args(argv)

    from htr_utils.study import grid
    from htr_utils.study.outputs import data_root
    from htr_utils.study.profiles import get_profile
    from htr_utils.study.runs import environment

    P = get_profile("cpu")
    tasks = [t for t in grid.plan(P, [STUDY]) if t.readings is None and not t.skipped][:args.runs]
    if not tasks:
        raise SystemExit("no regularisation run to train: is FashionMNIST on disk? (make data)")
    base = args.out or Path(tempfile.mkdtemp(prefix="grid_executors_"))
    roots = {"local": base / "local", "dask": base / "dask"}
    for r in roots.values():
        if r.exists() and any(r.iterdir()):
            raise SystemExit(f"{r} is not empty: the benchmark times training from an empty cache; pass another --out")
    droot, wall = data_root(), {}
    try:
        t0 = time.perf_counter()
        run_all = grid.local_executor(roots["local"], droot, args.local_threads, "cpu")
        run_all(tasks, lambda o: print(f"local {o['hash']}: {o['status']} {o['seconds']:.0f} s", flush=True))
        wall["local"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with grid._dask_client(args.workers, None, 1) as client:
            grid.dask_executor(client, roots["dask"], droot, 1, "cpu")(
                tasks, lambda o: print(f"dask  {o['hash']}: {o['status']} {o['seconds']:.0f} s (pid {o['pid']})",
                                       flush=True))
        wall["dask"] = time.perf_counter() - t0

        same, moved = [], {"test_acc": 0.0, "train_loss": 0.0}
        for t in tasks:
            a, b = _numbers(roots["local"], t.hash), _numbers(roots["dask"], t.hash)
            same.append(a == b)
            fa, fb = _final(roots["local"], t.hash), _final(roots["dask"], t.hash)
            for k in moved:
                moved[k] = max(moved[k], abs(fa[k] - fb[k]))
    finally:
        if args.out is None:
            shutil.rmtree(base, ignore_errors=True)
    result = {"machine": environment("cpu"), "runs": len(tasks), "workers": args.workers,
              "local_threads": args.local_threads, "wall_s": wall, "ratio_local_over_dask": wall["local"] / wall["dask"],
              "identical_runs": sum(same), "largest_final_change": moved}
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| executor | wall | runs |\n|---|---|---|\n| local, {args.local_threads} threads | {wall['local']:.0f} s | "
          f"{len(tasks)} |\n| Dask LocalCluster, {args.workers} workers × 1 thread | {wall['dask']:.0f} s | {len(tasks)} |")
    print(f"local / Dask wall-time ratio {result['ratio_local_over_dask']:.2f}; bit-identical runs {sum(same)}/{len(tasks)}; "
          f"largest change in final test accuracy {moved['test_acc']:.4f}, training loss {moved['train_loss']:.2g}")


if __name__ == "__main__":
    main()
