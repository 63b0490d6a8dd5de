"""HVP / gradient on LeNet with 1,000 inputs under two allocator regimes, with page faults and kernels counted.

Run: python -m benchmarks.hvp_allocator [--repeats 30] [--threads 1] [--inputs 1000] [--out FILE.json]

Why: section 7's HVP / gradient moved between 0.88 and 1.13 over runs of unchanged code. glibc
hands each buffer above its mmap threshold (128 KiB, rising to at most 32 MiB) fresh pages from
the kernel and returns them on free, so a call that allocates large activations pays a page fault
per 4 KiB touched. A gradient allocates its forward activations anew each call; the linearised HVP
reads its stored ones. The share of faults therefore moves the ratio, and how many a call pays
depends on what the process did before. Each regime runs in its own fresh process:

* ``default``: glibc's defaults, as a user's script gets them;
* ``no-faults``: ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_`` set so that
  freed memory stays in the heap and is reused (the kernels' own cost, like for like).

Per call it reports the median wall time (interleaved rounds), minor page faults
(``getrusage``) and the convolution kernels dispatched (a ``TorchDispatchMode`` count), and the
median time of each of those kernels alone at LeNet's shapes.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks.cases import Problem
from benchmarks.timing import interleaved_medians
from htr_utils import hvp_operator

REGIMES: dict[str, dict[str, str]] = {
    "default": {},
    "no-faults": {"MALLOC_MMAP_THRESHOLD_": str(2**30), "MALLOC_TRIM_THRESHOLD_": str(2**32),
                  "MALLOC_TOP_PAD_": str(2**28)},
}
_CONV = {torch.ops.aten.convolution.default: "forward", torch.ops.aten.convolution_backward.default: "backward"}


class _ConvCounter(TorchDispatchMode):
    """Counts convolution kernels: forward, and backward by what each call computes (data / weight / both)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kind = _CONV.get(func)
        if kind == "backward":
            mask = args[-1]
            kind = "backward " + {(True, False): "data", (False, True): "weight"}.get((mask[0], mask[1]), "data+weight")
        if kind is not None:
            self.counts[kind] += 1
        return func(*args, **(kwargs or {}))


def _candidates(inputs: int) -> dict[str, Callable[[], object]]:
    model, x, y = Problem("", "lenet", inputs).build()
    params = {k: p.detach() for k, p in model.named_parameters()}
    gradient = grad(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))
    op = hvp_operator(model, F.cross_entropy, (x, y))
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(0))
    return {"gradient": lambda: gradient(params), "HVP (matvec)": lambda: op.matvec(v)}


def kernel_costs(repeats: int = 20, inputs: int = 1000) -> dict[str, float]:
    """Median ms of each convolution kernel the two products run, at LeNet's shapes (random values)."""
    gen = torch.Generator().manual_seed(0)
    x, w1, g1 = (torch.randn(s, generator=gen) for s in ((inputs, 1, 32, 32), (6, 1, 5, 5), (inputs, 6, 28, 28)))
    h, w2, g2 = (torch.randn(s, generator=gen) for s in ((inputs, 6, 14, 14), (16, 6, 5, 5), (inputs, 16, 10, 10)))
    back = torch.ops.aten.convolution_backward.default
    conv = ([1, 1], [0, 0], [1, 1], False, [0, 0], 1)
    kernels: dict[str, Callable[[], object]] = {
        "conv1 forward": lambda: F.conv2d(x, w1),
        "conv1 backward weight": lambda: back(g1, x, w1, None, *conv, [False, True, False]),
        "conv2 forward": lambda: F.conv2d(h, w2),
        "conv2 backward data": lambda: back(g2, h, w2, None, *conv, [True, False, False]),
        "conv2 backward weight": lambda: back(g2, h, w2, None, *conv, [False, True, False]),
        "conv2 backward data+weight": lambda: back(g2, h, w2, None, *conv, [True, True, False])}
    return {name: seconds * 1e3 for name, seconds in interleaved_medians(kernels, repeats=repeats).items()}


def measure(repeats: int = 30, inputs: int = 1000) -> dict[str, dict]:
    """Median ms, median minor faults and convolution kernels per call, for each candidate (this process)."""
    cand = _candidates(inputs)
    for fn in cand.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cand}
    faults: dict[str, list[int]] = {k: [] for k in cand}
    for _ in range(repeats):
        for name, fn in cand.items():
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1e3)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    out: dict[str, dict] = {}
    for name, fn in cand.items():
        with _ConvCounter() as counter:
            fn()
        out[name] = {"ms": statistics.median(times[name]), "minor_faults": statistics.median(faults[name]),
                     "conv_kernels": dict(sorted(counter.counts.items()))}
    return out


def run_regime(regime: str, repeats: int, threads: int, inputs: int = 1000) -> dict[str, dict]:
    """``measure`` in a fresh interpreter whose environment sets the regime's allocator variables."""
    env = {**os.environ, **REGIMES[regime], "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "benchmarks.hvp_allocator", "--child", "--repeats", str(repeats),
           "--threads", str(threads), "--inputs", str(inputs)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {regime!r} measurement failed (rc {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(results: dict[str, dict[str, dict]]) -> str:
    lines = ["| allocator | candidate | median | minor faults per call | convolution kernels per call |",
             "|---|---|---|---|---|"]
    for regime, res in results.items():
        for name, r in res.items():
            if name == "kernels":
                continue
            kernels = ", ".join(f"{n} {k}" for k, n in r["conv_kernels"].items())
            lines.append(f"| {regime} | {name} | {r['ms']:.1f} ms | {r['minor_faults']:.0f} | {kernels} |")
        ratio = res["HVP (matvec)"]["ms"] / res["gradient"]["ms"]
        lines.append(f"| {regime} | **HVP / gradient** | **{ratio:.2f}** | | |")
    lines += ["", "| convolution kernel (median ms) | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for kernel in next(iter(results.values()))["kernels"]:
        lines.append(f"| {kernel} | " + " | ".join(f"{res['kernels'][kernel]:.1f}" for res in results.values()) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, dict[str, dict]]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30, help="interleaved rounds per regime")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (OMP_NUM_THREADS) in each regime")
    ap.add_argument("--inputs", type=int, default=1000, help="LeNet's batch size")
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one regime, JSON on stdout
    args = ap.parse_args(argv)
    if min(args.repeats, args.threads, args.inputs) < 1:
        ap.error("--repeats, --threads and --inputs must be at least 1")
    if args.child:
        torch.set_num_threads(args.threads)
        print(json.dumps({**measure(args.repeats, args.inputs), "kernels": kernel_costs(args.repeats, args.inputs)}))
        return {}
    results = {regime: run_regime(regime, args.repeats, args.threads, args.inputs) for regime in REGIMES}
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
