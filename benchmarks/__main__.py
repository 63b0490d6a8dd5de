"""htr_utils against peer libraries, interleaved in one process; writes benchmarks/RESULTS.md.

Run: python -m benchmarks [--quick] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad

from htr_utils import (hutchinson_trace, hvp_operator, lanczos, layer_groups, layerwise_spectra, middle_layers,
                       slq_density, trace_penalty)
from htr_utils.models import build_model

from . import peers
from .timing import interleaved_medians

HEADINGS = ["## 1. One Hessian-vector product", "## 2. SLQ spectral density", "## 3. Hutchinson trace",
            "## 4. Layer spectra of every layer", "## 5. One HTR training step"]


def problem(name: str, n: int, seed: int = 0, **kw):
    torch.manual_seed(seed)
    model = build_model(name, 1, 10, **kw).eval()
    return model, torch.randn(n, 1, 32, 32), torch.randint(0, 10, (n,))


def fails(err: BaseException) -> str:
    msg = " ".join(str(err).split())
    return f"fails: {type(err).__name__}: {msg[:160]}"


def prepare(makers: dict[str, Callable[[], Callable[[], object]]]) -> tuple[dict, dict]:
    """Build every candidate and run it once; returns (runnable candidates, {name: 'not installed' / 'fails: ...'})."""
    ok, status = {}, {}
    for name, make in makers.items():
        try:
            fn = make()
            fn()
            ok[name] = fn
        except peers.PeerMissing:
            status[name] = "not installed"
        except Exception as err:  # a failing peer is a result, not a crash
            status[name] = fails(err)
    return ok, status


def table(rows: list[tuple], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def ms(sec: float) -> str:
    return f"{sec * 1e3:.1f} ms" if sec < 1 else f"{sec:.2f} s"


def timed_rows(makers, repeats, ours: str, extra: Callable[[str], str] | None = None):
    ok, status = prepare(makers)
    t = interleaved_medians(ok, repeats=repeats, warmup=0) if ok else {}
    rows = []
    for name in makers:
        if name in t:
            ratio = f"{t[name] / t[ours]:.2f}" if ours in t else "–"
            rows.append((name, ms(t[name]), ratio) + ((extra(name),) if extra else ()))
        else:
            rows.append((name, status[name], "–") + (("–",) if extra else ()))
    return t, rows


# --- cases --------------------------------------------------------------------------------------

def case_hvp(sizes, repeats, lanczos_steps):
    out, times = [], {}
    for n in sizes:
        model, x, y = problem("lenet", n)
        params = {k: p.detach() for k, p in model.named_parameters()}
        g = grad(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))
        op = hvp_operator(model, F.cross_entropy, (x, y))
        v = torch.randn(op.dim)
        makers = {
            "one gradient (torch.func.grad)": lambda: (lambda: g(params)),
            "htr_utils matvec (marginal)": lambda: (lambda: op.matvec(v)),
            "htr_utils inside Lanczos (per step)": lambda: (lambda: lanczos(op, lanczos_steps)),
            "curvlinops HessianLinearOperator @ v": lambda: peers.curvlinops_hvp(model, x, y, v),
            "PyHessian hessian_vector_product (stored graph)": lambda: peers.pyhessian_hvp(model, x, y, v),
            "hessian-eigenthings HessianOperator.matvec": lambda: peers.eigenthings_hvp(model, x, y, v),
        }
        ok, status = prepare(makers)
        peers.release_grads(model)
        t = interleaved_medians(ok, repeats=repeats, warmup=0)
        if "htr_utils inside Lanczos (per step)" in t:
            t["htr_utils inside Lanczos (per step)"] /= lanczos_steps
        grad_t, ours = t["one gradient (torch.func.grad)"], t["htr_utils matvec (marginal)"]
        for name in makers:
            if name in t:
                out.append((n, name, ms(t[name]), f"{t[name] / grad_t:.2f}", f"{t[name] / ours:.2f}"))
            else:
                out.append((n, name, status[name], "–", "–"))
        times[n] = t
    txt = table(out, ("inputs", "method", "median", "gradients", "× ours (marginal matvec)"))
    return txt, times


def case_slq(n, num_iters, repeats):
    model, x, y = problem("lenet", n)
    makers = {
        "htr_utils slq_density": lambda: (
            lambda: slq_density(hvp_operator(model, F.cross_entropy, (x, y)), num_iters=num_iters)),
        "curvlinops lanczos_approximate_spectrum": lambda: peers.curvlinops_slq(model, x, y, num_iters),
        "PyHessian density": lambda: peers.pyhessian_slq(model, x, y, num_iters),
    }
    t, rows = timed_rows(makers, repeats, "htr_utils slq_density")
    peers.release_grads(model)
    return table(rows, ("method", "median", "× ours")), t


def case_trace(n, probes, repeats):
    model, x, y = problem("lenet", n)
    op = hvp_operator(model, F.cross_entropy, (x, y))
    estimates: dict[str, str] = {}

    def ours():
        est = hutchinson_trace(op, probes)
        estimates["htr_utils hutchinson_trace (batched)"] = f"{est.mean:.3f} ± {est.stderr:.3f}"
        return est

    def loop():
        gen = torch.Generator().manual_seed(1)
        vals = []
        for _ in range(probes):
            z = torch.randint(0, 2, (op.dim,), generator=gen).to(op.dtype) * 2 - 1
            vals.append(float(z @ op.matvec(z)))
        vals = torch.tensor(vals, dtype=torch.float64)
        se = float(vals.std() / probes ** 0.5) if probes > 1 else float("nan")
        estimates["htr_utils matvec loop"] = f"{float(vals.mean()):.3f} ± {se:.3f}"

    def curv():
        fn = peers.curvlinops_trace(model, x, y, probes)

        def run():
            estimates["curvlinops hutchinson_trace"] = f"{fn():.3f} (no stderr)"
        return run

    def pyh():
        h = peers.pyhessian_object(model, x, y)

        def run():
            import numpy as np
            s = np.asarray(h.trace(maxIter=probes, tol=float("-inf")))
            se = s.std(ddof=1) / len(s) ** 0.5 if len(s) > 1 else float("nan")
            estimates["PyHessian trace"] = f"{s.mean():.3f} ± {se:.3f}"
        return run

    makers = {"htr_utils hutchinson_trace (batched)": lambda: ours, "htr_utils matvec loop": lambda: loop,
              "curvlinops hutchinson_trace": curv, "PyHessian trace": pyh}
    t, rows = timed_rows(makers, repeats, "htr_utils hutchinson_trace (batched)",
                         extra=lambda name: estimates.get(name, "–"))
    peers.release_grads(model)
    return table(rows, ("method", "median", "× ours", "estimate (mean ± stderr)")), t


def case_layers(n, num_iters, repeats_by_model):
    out, ratios = [], {}
    for label, name, kw, repeats in repeats_by_model:
        model, x, y = problem(name, n, **kw)
        groups = layer_groups(model)
        union = [p for names in groups.values() for p in names]

        def lockstep():
            return layerwise_spectra(hvp_operator(model, F.cross_entropy, (x, y), params=union), groups, num_iters)

        def sequential():
            return {layer: slq_density(hvp_operator(model, F.cross_entropy, (x, y), params=names), num_iters)
                    for layer, names in groups.items()}

        t = interleaved_medians({"lockstep": lockstep, "sequential": sequential}, repeats=repeats, warmup=0)
        ratios[label] = t["sequential"] / t["lockstep"]
        out.append((f"{label} ({len(groups)} layers)", repeats, ms(t["lockstep"]), ms(t["sequential"]),
                    f"{ratios[label]:.2f}"))
    txt = table(out, ("model", "repeats", "lockstep (layerwise_spectra)", "sequential (slq_density per layer)",
                      "speed-up (sequential / lockstep)"))
    return txt, ratios


def case_htr_step(batch, probes, repeats):
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10).train()
    x, y = torch.randn(batch, 1, 32, 32), torch.randint(0, 10, (batch,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    named = dict(model.named_parameters())
    middle = [named[p] for p in middle_layers(layer_groups(model))]
    every = list(model.parameters())

    def step(penalty_params):
        def run():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            if penalty_params:
                loss = loss + 0.01 * trace_penalty(loss, penalty_params, probes)
            loss.backward()
            opt.step()
        return run

    t = interleaved_medians({"plain SGD step": step(None), "HTR, all parameters": step(every),
                             "HTR, middle layers": step(middle)}, repeats=repeats, warmup=1)
    rows = [(k, ms(v), f"{v / t['plain SGD step']:.2f}") for k, v in t.items()]
    txt = table(rows, ("step", "median", "× plain step"))
    return txt + f"\n\nMiddle layers: {', '.join(p for p in middle_layers(layer_groups(model)))}.", t


# --- report -------------------------------------------------------------------------------------

def machine() -> str:
    rows = [("platform", platform.platform()), ("processor", platform.processor() or platform.machine()),
            ("CPU count", os.cpu_count()), ("torch threads", torch.get_num_threads()),
            ("python", platform.python_version()), ("torch", torch.__version__)]
    rows += [(peers.PEERS[m], peers.version(m)) for m in peers.PEERS]
    return table(rows, ("", ""))


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (for a test)")
    ap.add_argument("--repeats", type=int, default=5, help="rounds for the HVP case and the training step")
    ap.add_argument("--slow-repeats", type=int, default=3, help="rounds for SLQ, trace and layer spectra")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    args = ap.parse_args(argv)
    q = args.quick
    R = 1 if q else args.repeats
    R_big = 1 if q else args.slow_repeats
    sizes = [8] if q else [100, 1000]
    n_small = 8 if q else 100
    slq_iters, probes, layer_iters = (4, 5, 2) if q else (128, 100, 32)
    start = time.perf_counter()

    hvp_txt, hvp_t = case_hvp(sizes, R, lanczos_steps=2 if q else 16)
    print("case 1 done", f"{time.perf_counter() - start:.0f}s", flush=True)
    slq_txt, slq_t = case_slq(n_small, slq_iters, R_big)
    print("case 2 done", f"{time.perf_counter() - start:.0f}s", flush=True)
    tr_txt, tr_t = case_trace(n_small, probes, R_big)
    print("case 3 done", f"{time.perf_counter() - start:.0f}s", flush=True)
    lay_models = [("LeNet", "lenet", {}, R_big)]
    if not q:  # the VGG's sequential run alone is tens of seconds
        lay_models.append(("VGG11_bn width 0.125", "vgg11_bn", {"width": 0.125}, 1))
    lay_txt, lay_r = case_layers(n_small, layer_iters, lay_models)
    print("case 4 done", f"{time.perf_counter() - start:.0f}s", flush=True)
    htr_txt, htr_t = case_htr_step(32 if q else 256, 2 if q else 10, R)
    elapsed = time.perf_counter() - start

    # targets
    big = max(sizes)
    t = hvp_t[big]
    hvp_lz = t["htr_utils inside Lanczos (per step)"] / t["one gradient (torch.func.grad)"]
    ours_slq = slq_t.get("htr_utils slq_density")
    cl_slq = slq_t.get("curvlinops lanczos_approximate_spectrum")
    slq_ratio = cl_slq / ours_slq if (ours_slq and cl_slq) else None
    met = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    targets = [
        f"- HVP ≤ 1.5 gradients (marginal, inside Lanczos; LeNet, {big} inputs): {hvp_lz:.2f} gradients — {met(hvp_lz <= 1.5)}.",
        (f"- SLQ ≥ 2× faster than curvlinops ({n_small} inputs, {slq_iters} steps): {slq_ratio:.2f}× — {met(slq_ratio >= 2)}."
         if slq_ratio else "- SLQ ≥ 2× curvlinops: curvlinops not available, not measured."),
    ]
    targets += [f"- Lockstep ≥ 2× faster than sequential layer spectra, {k}: {r:.2f}× — {met(r >= 2)}."
                for k, r in lay_r.items()]

    mode = "**quick mode** (tiny sizes, 1 repeat: smoke test, not a measurement)" if q else \
        f"{R} rounds for the HVP and training-step cases, {R_big} for SLQ, Hutchinson and the LeNet layer spectra, 1 for the VGG layer spectra (each round there is long; the run has an 8-minute budget)"
    doc = f"""# Benchmarks: htr_utils against peer libraries

Written by `python -m benchmarks{' --quick' if q else ''}` in {elapsed:.0f} s; {mode}. Every
number is the median over rounds in which all candidates of a case run in turn in one process
(`benchmarks.timing.interleaved_medians`), after one untimed call of each. Data: random inputs
1×32×32 with random labels (timings do not depend on the values), float32, CPU. A peer that
raises is reported as `fails: <error>`, one that is absent as `not installed`; peers are called
unpatched. "× ours" = that method's time / ours (above 1: ours is faster).

## Machine

{machine()}

## Targets

{chr(10).join(targets)}

{HEADINGS[0]}

LeNet (61.7k parameters), eval mode. Ours and PyHessian reuse work across products (our
linearised gradient; PyHessian's stored gradient graph), so their rows are the marginal cost of
one more product; curvlinops and hessian-eigenthings recompute the forward and backward pass on
every product. "Inside Lanczos" is a {2 if q else 16}-step `lanczos` run divided by its steps
(reorthogonalisation included).

{hvp_txt}

{HEADINGS[1]}

LeNet, {n_small} inputs, {slq_iters} Lanczos steps, one probe, 1024 grid points; ours includes
building the operator. No accuracy column: LeNet's Hessian (61.7k²) is too large to form.

{slq_txt}

{HEADINGS[2]}

LeNet, {n_small} inputs, {probes} Rademacher probes. Ours batches 16 probes per vmapped product;
the loop calls our `matvec` once per probe. The estimates (different probes) should agree within
a few standard errors.

{tr_txt}

{HEADINGS[3]}

Every Conv/Linear weight block, {layer_iters} Lanczos steps, {n_small} inputs, one probe.
Lockstep: `layerwise_spectra` on the operator over the union of the blocks (one batched product
per step for all layers). Sequential: `slq_density` on each layer's own operator in turn. Both
include building the operators.

{lay_txt}

{HEADINGS[4]}

LeNet, batch {32 if q else 256}, train mode, SGD; HTR adds γ·`trace_penalty` (γ = 0.01,
{2 if q else 10} probes, one double backward per probe) over the given parameters.

{htr_txt}
"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    print(f"wrote {out} ({elapsed:.0f} s)")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
