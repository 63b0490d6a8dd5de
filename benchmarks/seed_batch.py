"""Seed batching (htr_utils.study.seed_batch) against one model at a time, on the cpu profile's regularisation setting.

Run: .venv/bin/python -m benchmarks.seed_batch [--repeats 5] [--sizes 2 5 10] [--compile] [--out PATH]

Real FashionMNIST as ``get_profile('cpu').regularisation['lenet_fashionmnist'].base`` prepares it (30,000
training images, batch 256, LeNet). Times per member-step, in one process, variants interleaved
(each repeat runs every variant once, in rotated order) and medians reported, because the machine is
shared: (a) ``training.sgd_step`` on one model; (b) the stacked model at S members (vmap forward);
(g) the stacked model with a hand-written grouped-convolution / bmm LeNet forward. Kinds: plain SGD
steps, HTR penalty steps (10 probes over all parameters, as the "htr" arm), evaluation of the test
set (10,000 images, batches of 1000), and fetching a training batch (DataLoader over the nested Subset
as the Trainer does, against one index gather for all members).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from htr_utils.study.data import make_loader
from htr_utils.study.profiles import get_profile
from htr_utils.study.seed_batch import (Params, build_members, dataset_tensors, member_batch_indices, member_probes,
                                        stack_parameters, stacked_evaluate, stacked_forward,
                                        stacked_sgd_step)
from htr_utils.study.training import evaluate, prepare_data, sgd_step

ROOT = Path(__file__).resolve().parents[1]


def grouped_lenet_forward(params: Params, x: torch.Tensor) -> torch.Tensor:
    """Stacked LeNet by hand: convolutions grouped by member (groups=S), linear layers as batched matmuls.

    x (S, B, C, 32, 32) -> logits (S, B, classes); same function as vmap(functional_call(LeNet)).
    """
    S, B = x.shape[:2]
    h = x.transpose(0, 1).reshape(B, -1, *x.shape[3:])  # (B, S*C, H, W): member s owns channels s*C..(s+1)*C
    for name in ("conv1", "conv2"):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        h = F.conv2d(h, w.reshape(-1, *w.shape[2:]), b.reshape(-1), groups=S)
        h = F.max_pool2d(F.relu(h), 2)
    h = h.reshape(B, S, -1).transpose(0, 1)  # (S, B, features), each member's features in LeNet's flatten order
    for name in ("fc1", "fc2", "fc3"):
        h = torch.baddbmm(params[f"{name}.bias"].unsqueeze(1), h, params[f"{name}.weight"].transpose(1, 2))
        if name != "fc3":
            h = F.relu(h)
    return h


class Setup:
    """Members, optimisers and fixed batches for one size S (the batches are the members' first ones)."""

    def __init__(self, cfg, seeds: list[int], x: torch.Tensor, y: torch.Tensor):
        self.members = build_members(cfg, seeds)
        self.params = stack_parameters(self.members)
        self.opt = torch.optim.SGD(self.params.values(), lr=cfg.lr, momentum=cfg.momentum)
        idx = next(member_batch_indices(len(y), cfg.batch_size, seeds, epoch=1))
        self.x, self.y = x[idx], y[idx]
        self.gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.names = list(self.params)
        self.S = len(seeds)

    def step(self, penalty: bool, forward: Callable | None = None) -> None:
        probes = member_probes([self.params[n] for n in self.names], self.gens, 10) if penalty else None
        stacked_sgd_step(self.members[0], self.params, self.opt, self.x, self.y, self.names if penalty else None,
                         1e-5, probes, forward)


def timed(fn: Callable[[], None], calls: int) -> float:
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 5, 10])
    ap.add_argument("--plain-calls", type=int, default=4, help="plain steps per variant and repeat")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile on the single model's plain step")
    ap.add_argument("--kinds", nargs="+", default=["plain", "htr", "eval", "fetch"],
                    help="which kinds to time (plain, htr, eval, fetch)")
    ap.add_argument("--compile-only", action="store_true", help="time only torch.compile against eager (plain step)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "seed_batch.json"))
    ap.add_argument("--data-root", default=str(ROOT / "data"))
    args = ap.parse_args()

    cfg = get_profile("cpu").regularisation["lenet_fashionmnist"].base
    data = prepare_data(cfg, args.data_root)
    x, y = dataset_tensors(data.train)
    xt, yt = dataset_tensors(data.test)
    single = Setup(cfg, [1], x, y)
    model = single.members[0]
    opt1 = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    xb, yb = single.x[0], single.y[0]
    if args.compile_only:
        result = {"threads": torch.get_num_threads(), "load_average": [os.getloadavg()[0]],
                  "compile": compile_single(cfg, xb, yb, args.repeats, args.plain_calls)}
        result["load_average"].append(os.getloadavg()[0])
        Path(args.out).write_text(json.dumps(result, indent=1))
        print(json.dumps(result))
        return
    gen1 = torch.Generator().manual_seed(1)
    loss_fn = nn.CrossEntropyLoss()
    stacked = {S: Setup(cfg, list(range(1, S + 1)), x, y) for S in args.sizes}

    variants: dict[tuple[str, str], tuple[Callable[[], None], int, int]] = {}  # (kind, name) -> (fn, calls, members)
    pc = args.plain_calls
    variants["plain", "a single"] = (lambda: sgd_step(model, opt1, loss_fn, xb, yb), pc, 1)
    variants["htr", "a single"] = (lambda: sgd_step(model, opt1, loss_fn, xb, yb, list(model.parameters()), 1e-5, 10,
                                                    gen1), 1, 1)
    variants["eval", "a single"] = (lambda: evaluate(model, data.test, 1000), 1, 1)
    variants["fetch", "a single"] = (lambda: [b for b, _ in zip(make_loader(data.train, cfg.batch_size, seed=1,
                                                                           epoch=1), range(10))], 1, 10)
    for S, st in stacked.items():
        variants["plain", f"b vmap S={S}"] = (lambda st=st: st.step(False), pc, S)
        variants["plain", f"g grouped S={S}"] = (lambda st=st: st.step(False, grouped_lenet_forward), pc, S)
        variants["htr", f"b vmap S={S}"] = (lambda st=st: st.step(True), 1, S)
        if S == max(args.sizes):  # the slowest kind: the grouped forward only at the largest S
            variants["htr", f"g grouped S={S}"] = (lambda st=st: st.step(True, grouped_lenet_forward), 1, S)
        variants["eval", f"b vmap S={S}"] = (lambda st=st: stacked_evaluate(st.members[0], st.params, xt, yt, 1000),
                                             1, S)
        variants["fetch", f"b gather S={S}"] = (
            lambda S=S: [(x[i], y[i]) for i, _ in zip(member_batch_indices(len(y), cfg.batch_size,
                                                                            list(range(1, S + 1)), 1), range(10))],
            1, 10 * S)

    variants = {k: v for k, v in variants.items() if k[0] in args.kinds}
    # the two forwards compute the same logits (checked here on the benchmark's own batch)
    st = stacked[max(args.sizes)]
    with torch.no_grad():
        ref, got = stacked_forward(st.members[0], st.params, st.x), grouped_lenet_forward(st.params, st.x)
    assert torch.allclose(ref, got, rtol=1e-4, atol=1e-5), float((ref - got).abs().max())

    for (kind, _), (fn, _, _) in variants.items():  # warm-up (the HTR steps, seconds each, are not repeated)
        if kind != "htr":
            fn()
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in variants}
    load = [os.getloadavg()[0]]
    keys = list(variants)
    for r in range(args.repeats):
        order = keys[r % len(keys):] + keys[:r % len(keys)]
        for k in order:
            fn, calls, members = variants[k]
            samples[k].append(timed(fn, calls) / members)
        load.append(os.getloadavg()[0])
        print(f"repeat {r + 1}/{args.repeats} done (load average {load[-1]:.1f})", flush=True)

    result: dict = {"threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.processor()
                    or platform.machine(), "cpus": os.cpu_count(), "repeats": args.repeats,
                    "load_average": load, "median_ms_per_member": {}, "speedup": {}}
    for (kind, name), v in samples.items():
        result["median_ms_per_member"].setdefault(kind, {})[name] = 1e3 * statistics.median(v)
        result.setdefault("all_ms_per_member", {}).setdefault(kind, {})[name] = [1e3 * t for t in v]
    for kind, row in result["median_ms_per_member"].items():
        base = row["a single"]
        result["speedup"][kind] = {name: base / t for name, t in row.items() if name != "a single"}

    if args.compile:
        result["compile"] = compile_single(cfg, xb, yb, args.repeats, pc)

    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"torch threads {result['threads']}, {args.repeats} interleaved repeats, medians (ms per member-step)")
    for kind, row in result["median_ms_per_member"].items():
        print(f"\n{kind}:")
        for name, t in row.items():
            sp = result["speedup"][kind].get(name)
            print(f"  {name:16s} {t:9.2f} ms" + ("" if sp is None else f"   x{sp:.2f}"))
    if "compile" in result:
        print("\ncompile:", json.dumps(result["compile"]))


def compile_single(cfg, xb: torch.Tensor, yb: torch.Tensor, repeats: int, calls: int) -> dict:
    """torch.compile on one model's plain step: compile time (first call) and per-step medians, eager interleaved."""
    eager = build_members(cfg, [1])[0]
    comp_model = build_members(cfg, [1])[0]
    compiled = torch.compile(comp_model)
    loss_fn = nn.CrossEntropyLoss()
    o_e = torch.optim.SGD(eager.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    o_c = torch.optim.SGD(comp_model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    t0 = time.perf_counter()
    sgd_step(compiled, o_c, loss_fn, xb, yb)
    first = time.perf_counter() - t0
    sgd_step(compiled, o_c, loss_fn, xb, yb)
    e, c = [], []
    for _ in range(repeats):
        e.append(timed(lambda: sgd_step(eager, o_e, loss_fn, xb, yb), calls))
        c.append(timed(lambda: sgd_step(compiled, o_c, loss_fn, xb, yb), calls))
    return {"first_call_s": first, "eager_ms": 1e3 * statistics.median(e), "compiled_ms": 1e3 * statistics.median(c)}


if __name__ == "__main__":
    main()
