"""The benchmark cases: each builds its candidates (ours and the peers), times them interleaved, returns rows.

A case returns ``(rows, times)``: table rows for RESULTS.md and the raw medians (seconds) that
the targets are computed from. Candidates are zero-argument callables; a peer that is missing
or raises becomes a row that says so.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import wasserstein_distance
from torch import nn
from torch.func import functional_call, grad, jvp, vjp

from htr_utils import (TraceEstimate, ggn_trace_penalty, hutchinson_trace, hvp_operator, lanczos, layer_groups,
                       layerwise_spectra, middle_layers, slq_density, top_eigenvalues, trace_penalty)
from htr_utils.study.models import build_model
from htr_utils.study.training import sgd_step

from . import peers
from .timing import interleaved_medians


@dataclass(frozen=True)
class Problem:
    """A model on random 1×32×32 inputs with random labels (timings do not depend on the values)."""
    label: str
    model: str
    inputs: int
    width: float = 1.0

    def build(self, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
        torch.manual_seed(seed)
        model = build_model(self.model, 1, 10, width=self.width).eval()
        return model, torch.randn(self.inputs, 1, 32, 32), torch.randint(0, 10, (self.inputs,))


def num_params(p: Problem) -> int:
    return sum(t.numel() for t in build_model(p.model, 1, 10, width=p.width).parameters())


def fails(err: BaseException) -> str:
    msg = " ".join(str(err).split())
    return f"fails: {type(err).__name__}: {msg[:160]}"


def prepare(makers: dict[str, Callable[[], Callable[[], object]]]) -> tuple[dict, dict]:
    """Build every candidate and run it once (warm-up); (runnable candidates, {name: 'not installed' / 'fails: ...'})."""
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


def ms(sec: float) -> str:
    return f"{sec * 1e3:.1f} ms" if sec < 1 else f"{sec:.2f} s"


def timed(makers: dict, repeats: int, ours: str) -> tuple[dict[str, float], list[tuple[str, str, str]]]:
    """Medians of the runnable candidates and rows (name, median or status, × ours)."""
    ok, status = prepare(makers)
    t = interleaved_medians(ok, repeats=repeats, warmup=0) if ok else {}
    rows = [(name, ms(t[name]), f"{t[name] / t[ours]:.2f}" if ours in t else "–") if name in t
            else (name, status[name], "–") for name in makers]
    return t, rows


# ============================================================================ 1. one HVP

def case_hvp(problem: Problem, repeats: int, lanczos_steps: int) -> tuple[list[tuple], dict[str, float]]:
    """One gradient against one Hessian-vector product: ours (marginal, and per step of a Lanczos run), from
    scratch with torch.func (jvp of grad, double backward), and each peer's product."""
    model, x, y = problem.build()
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = grad(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))
    v_tree = {k: torch.randn_like(p) for k, p in params.items()}
    op = hvp_operator(model, F.cross_entropy, (x, y))
    v = torch.randn(op.dim)
    ours = "htr_utils matvec (marginal)"
    makers = {
        "one gradient (torch.func.grad)": lambda: (lambda: g(params)),
        ours: lambda: (lambda: op.matvec(v)),
        "htr_utils inside Lanczos (per step)": lambda: (lambda: lanczos(op, lanczos_steps)),
        "from scratch: jvp of grad": lambda: (lambda: jvp(g, (params,), (v_tree,))),
        "from scratch: double backward": lambda: (lambda: vjp(g, params)[1](v_tree)),
        "curvlinops HessianLinearOperator @ v": lambda: peers.curvlinops_hvp(model, x, y, v),
        "PyHessian hessian_vector_product (stored graph)": lambda: peers.pyhessian_hvp(model, x, y, v),
        "hessian-eigenthings HessianOperator.matvec": lambda: peers.eigenthings_hvp(model, x, y, v),
    }
    ok, status = prepare(makers)
    peers.release_grads(model)
    t = interleaved_medians(ok, repeats=repeats, warmup=0)
    if "htr_utils inside Lanczos (per step)" in t:
        t["htr_utils inside Lanczos (per step)"] /= lanczos_steps
    grad_t = t["one gradient (torch.func.grad)"]
    rows = [(problem.label, name, ms(t[name]), f"{t[name] / grad_t:.2f}", f"{t[name] / t[ours]:.2f}") if name in t
            else (problem.label, name, status[name], "–", "–") for name in makers]
    return rows, t


# ============================================================================ 2. SLQ density

def exact_eigenvalues(problem: Problem) -> np.ndarray:
    """All eigenvalues of the Hessian of ``problem`` (float64, from our products with the identity's columns)."""
    model, x, y = problem.build()
    model = model.double()
    op = hvp_operator(model, F.cross_entropy, (x.double(), y))
    eye = torch.eye(op.dim, dtype=torch.float64)
    H = torch.cat([op.matmat(eye[:, i:i + 256]) for i in range(0, op.dim, 256)], dim=1)
    return torch.linalg.eigvalsh((H + H.T) / 2).numpy()


def w1_to_exact(grid: np.ndarray, density: np.ndarray, exact: np.ndarray) -> float:
    """W₁ between a density on a grid (as weights of the grid points) and the exact spectral measure, / its range."""
    return float(wasserstein_distance(grid, exact, u_weights=np.clip(density, 0, None))) / float(np.ptp(exact))


def case_slq(problem: Problem, num_iters: int, repeats: int, exact: np.ndarray | None = None
             ) -> tuple[list[tuple], dict[str, float]]:
    """An SLQ density (one probe, ``num_iters`` steps, 1024 grid points, κ = 1.25 for both ours and curvlinops),
    its time and, where the exact spectrum is known, W₁ to it as a fraction of the spectral range."""
    model, x, y = problem.build()
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def ours():
        d = slq_density(hvp_operator(model, F.cross_entropy, (x, y)), num_iters=num_iters)  # includes building op
        out["htr_utils slq_density"] = (d.grid, d.density)

    def curvlinops(name: str, range_given: bool):
        def make():
            fn = peers.curvlinops_slq(model, x, y, num_iters, kappa=1.25, range_given=range_given)

            def run():
                grid, density = fn()
                out[name] = (np.asarray(grid), np.asarray(density))
            return run
        return make

    def pyhessian():
        fn = peers.pyhessian_slq(model, x, y, num_iters)
        return fn

    cl, cl_given = "curvlinops lanczos_approximate_spectrum", "curvlinops, spectral range given (not timed)"
    makers = {"htr_utils slq_density": lambda: ours, cl: curvlinops(cl, False), cl_given: curvlinops(cl_given, True),
              "PyHessian density": pyhessian}
    t, rows = timed(makers, repeats, "htr_utils slq_density")
    peers.release_grads(model)
    acc = {name: (f"{w1_to_exact(*out[name], exact):.2e}" if exact is not None and name in out else "–")
           for name in makers}
    return [(problem.label, *r, acc[r[0]]) for r in rows], t


# ============================================================================ 3. Hutchinson trace

def case_trace(problem: Problem, probes: int, repeats: int, exact: float | None = None
               ) -> tuple[list[tuple], dict[str, float]]:
    """Hutchinson trace with ``probes`` Rademacher probes: ours batched (16 probes per vmapped product), our
    matvec in a loop, curvlinops' and PyHessian's estimators; estimates with standard errors."""
    model, x, y = problem.build()
    op = hvp_operator(model, F.cross_entropy, (x, y))
    est: dict[str, str] = {}

    def ours():
        e = hutchinson_trace(op, probes)
        est["htr_utils hutchinson_trace (batched)"] = f"{e.mean:.4g} ± {e.stderr:.2g}"

    def loop():
        gen = torch.Generator().manual_seed(1)
        vals = []
        for _ in range(probes):
            z = torch.randint(0, 2, (op.dim,), generator=gen).to(op.dtype) * 2 - 1
            vals.append(float(z @ op.matvec(z)))
        e = TraceEstimate.from_samples(vals)
        est["htr_utils matvec loop"] = f"{e.mean:.4g} ± {e.stderr:.2g}"

    def curv():
        fn = peers.curvlinops_trace(model, x, y, probes)

        def run():
            est["curvlinops hutchinson_trace"] = f"{fn():.4g} (no stderr)"
        return run

    def pyh():
        h = peers.pyhessian_object(model, x, y)

        def run():
            e = TraceEstimate.from_samples(h.trace(maxIter=probes, tol=float("-inf")))  # tol -inf: exactly ``probes``
            est["PyHessian trace"] = f"{e.mean:.4g} ± {e.stderr:.2g}"
        return run

    makers = {"htr_utils hutchinson_trace (batched)": lambda: ours, "htr_utils matvec loop": lambda: loop,
              "curvlinops hutchinson_trace": curv, "PyHessian trace": pyh}
    t, rows = timed(makers, repeats, "htr_utils hutchinson_trace (batched)")
    peers.release_grads(model)
    ex = f"{exact:.4g}" if exact is not None else "–"
    return [(problem.label, *r, est.get(r[0], "–"), ex) for r in rows], t


# ============================================================================ 4. every layer's spectrum

def case_layers(problem: Problem, num_iters: int, repeats: int) -> tuple[list[tuple], dict[str, float]]:
    """Every Conv/Linear weight block's SLQ density: all at once (lockstep Lanczos, batched products) against one
    layer after another (slq_density on each layer's own operator). Both include building the operators."""
    model, x, y = problem.build()
    groups = layer_groups(model)
    union = [p for names in groups.values() for p in names]

    def lockstep():
        return layerwise_spectra(hvp_operator(model, F.cross_entropy, (x, y), params=union), groups, num_iters)

    def sequential():
        return {layer: slq_density(hvp_operator(model, F.cross_entropy, (x, y), params=names), num_iters)
                for layer, names in groups.items()}

    t = interleaved_medians({"lockstep": lockstep, "sequential": sequential}, repeats=repeats, warmup=0)
    t["speed-up"] = t["sequential"] / t["lockstep"]
    return [(f"{problem.label} ({len(groups)} layers)", repeats, ms(t["lockstep"]), ms(t["sequential"]),
             f"{t['speed-up']:.2f}")], t


# ============================================================================ 5. one HTR training step

def case_htr_step(problem: Problem, probes: int, repeats: int) -> tuple[list[tuple], dict[str, float]]:
    """One SGD step in train mode: plain, with γ·trace_penalty over all parameters, over the middle layers."""
    torch.manual_seed(0)
    model = build_model(problem.model, 1, 10, width=problem.width).train()
    x, y = torch.randn(problem.inputs, 1, 32, 32), torch.randint(0, 10, (problem.inputs,))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    named = dict(model.named_parameters())
    middle = [named[p] for p in middle_layers(layer_groups(model))]

    def step(penalty_params, batched=False):
        return lambda: sgd_step(model, opt, nn.CrossEntropyLoss(), x, y, penalty_params, 0.01, probes,
                                batched_probes=batched)

    t = interleaved_medians({"plain SGD step": step(None), "HTR, all parameters": step(list(model.parameters())),
                             "HTR, all parameters, probes batched": step(list(model.parameters()), batched=True),
                             "HTR, middle layers": step(middle)}, repeats=repeats, warmup=1)
    n_mid = sum(p.numel() for p in middle)
    rows = [(problem.label, k, ms(v), f"{v / t['plain SGD step']:.2f}") for k, v in t.items()]
    t["middle_params"], t["all_params"] = n_mid, sum(p.numel() for p in model.parameters())
    return rows, t


# ============================================================================ 6. top eigenvalues

class CountingOperator:
    """An operator that forwards to ``op`` and counts products (vectors) and calls."""

    def __init__(self, op) -> None:
        self.op, self.dim, self.dtype, self.device = op, op.dim, op.dtype, op.device
        self.products = self.calls = 0

    def matvec(self, v):
        self.products, self.calls = self.products + 1, self.calls + 1
        return self.op.matvec(v)

    def matmat(self, V):
        self.products, self.calls = self.products + V.shape[1], self.calls + 1
        return self.op.matmat(V)


def case_top(problem: Problem, ks: tuple[int, ...], repeats: int) -> tuple[list[tuple], dict]:
    """top_eigenvalues(op, k): today's single-vector Lanczos (method="lanczos": max(4k, 32) steps, doubled until
    the top-k residual estimates are below 1e-6 · |θ|max, restarting from scratch) against the block method
    (block size k, thick restarts, batched products), on one operator built once (outside the timing)."""
    model, x, y = problem.build()
    op = CountingOperator(hvp_operator(model, F.cross_entropy, (x, y)))
    op.op.matvec(torch.zeros(op.dim))  # build and verify the linearised map outside the timing
    # Reference: the same Hessian in float64, block method to 1e-10 (not timed).
    ref64 = hvp_operator(copy.deepcopy(model).double(), F.cross_entropy, (x.double(), y))
    exact = top_eigenvalues(ref64, max(ks), tol=1e-10)
    rows, t_all = [], {}
    for k in ks:
        out: dict[str, tuple] = {}
        counts: dict[str, tuple[int, int]] = {}

        def run(name: str, **kw):
            def fn():
                op.products = op.calls = 0
                out[name] = top_eigenvalues(op, k, return_residuals=True, **kw)
                counts[name] = (op.products, op.calls)
            return fn

        old, new = "single-vector Lanczos (today's, method='lanczos')", "block Lanczos (new default, block size k)"
        t = interleaved_medians({old: run(old, method="lanczos"), new: run(new)}, repeats=repeats, warmup=1)
        scale = float(np.abs(exact).max())
        for name in (old, new):
            values, res = out[name]
            err = float(np.abs(values - exact[:k]).max()) / scale
            rows.append((problem.label, k, name, ms(t[name]), f"{t[name] / t[old]:.2f}", counts[name][0],
                         counts[name][1], f"{res.max() / scale:.1e}", f"{err:.1e}",
                         f"{values[0]:.4g} … {values[-1]:.4g}"))
        t_all[k] = t
    return rows, t_all


# ============================================================================ 7. the three ratios of issue 32

def ggn_htr_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, gamma: float,
                 probes: int, groups: int = 1) -> None:
    """One SGD step on CE + γ·ggn_trace_penalty (all parameters): for a ReLU network the same penalty tr(∇² loss).

    ``groups`` > 1: the batch's forward pass in that many groups, the penalty's probes drawn per group."""
    if groups == 1:
        out = pen_in = model(x)
    else:
        pen_in = [model(part) for part in x.chunk(groups)]
        out = torch.cat(pen_in)
    loss = F.cross_entropy(out, y)
    total = loss + gamma * ggn_trace_penalty(pen_in, list(model.parameters()), probes)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()


def case_ratios(repeats: int, quick: bool = False, probes: int = 10) -> tuple[list[tuple], dict[str, float]]:
    """HVP / gradient (LeNet, 1000 inputs; per step of a 16-step Lanczos run), SLQ / curvlinops' SLQ handed its
    range (LeNet, 100 inputs, 128 steps) and HTR step / plain step (LeNet, batch 256, 10 probes; Hutchinson double
    backward and the GGN route), all candidates in one interleaved loop so that load hits them alike."""
    n_hvp, n_slq, n_htr, steps, iters = (8, 8, 16, 2, 4) if quick else (1000, 100, 256, 16, 128)
    cand: dict[str, Callable[[], object]] = {}
    model, x, y = Problem("", "lenet", n_hvp).build()
    params = {k: p.detach() for k, p in model.named_parameters()}
    g = grad(lambda p: F.cross_entropy(functional_call(model, p, (x,)), y))
    op = hvp_operator(model, F.cross_entropy, (x, y))
    cand["gradient"] = lambda: g(params)
    cand["HVP (per Lanczos step)"] = lambda: lanczos(op, steps)
    smodel, sx, sy = Problem("", "lenet", n_slq).build()
    sop = hvp_operator(smodel, F.cross_entropy, (sx, sy))  # built (and verified) once, as curvlinops' operator is
    cand["SLQ htr_utils, operator given"] = lambda: slq_density(sop, num_iters=iters)
    cand["SLQ htr_utils, operator built per call"] = lambda: slq_density(hvp_operator(smodel, F.cross_entropy,
                                                                                     (sx, sy)), num_iters=iters)
    try:
        cand["SLQ curvlinops, range given"] = peers.curvlinops_slq(smodel, sx, sy, iters, kappa=1.25, range_given=True)
    except peers.PeerMissing:
        pass
    torch.manual_seed(0)
    hmodel = build_model("lenet", 1, 10).train()
    hx, hy = torch.randn(n_htr, 1, 32, 32), torch.randint(0, 10, (n_htr,))
    opt = torch.optim.SGD(hmodel.parameters(), lr=1e-3)
    P = list(hmodel.parameters())
    cand["plain SGD step"] = lambda: sgd_step(hmodel, opt, nn.CrossEntropyLoss(), hx, hy)
    cand["HTR step, trace_penalty"] = lambda: sgd_step(hmodel, opt, nn.CrossEntropyLoss(), hx, hy, P, 0.01, probes)
    cand["HTR step, ggn_trace_penalty"] = lambda: ggn_htr_step(hmodel, opt, hx, hy, 0.01, probes)
    cand["HTR step, ggn_trace_penalty, 1 probe"] = lambda: ggn_htr_step(hmodel, opt, hx, hy, 0.01, 1)
    cand[f"HTR step, ggn_trace_penalty, {probes} groups x 1 probe"] = lambda: ggn_htr_step(hmodel, opt, hx, hy, 0.01, 1,
                                                                                          groups=probes)
    t = interleaved_medians(cand, repeats=repeats, warmup=1)
    t["HVP (per Lanczos step)"] /= steps
    ratios = {"HVP / gradient": t["HVP (per Lanczos step)"] / t["gradient"],
              "HTR / plain (trace_penalty)": t["HTR step, trace_penalty"] / t["plain SGD step"],
              "HTR / plain (ggn_trace_penalty)": t["HTR step, ggn_trace_penalty"] / t["plain SGD step"],
              "HTR / plain (ggn_trace_penalty, 1 probe)": t["HTR step, ggn_trace_penalty, 1 probe"] / t["plain SGD step"],
              "HTR / plain (ggn_trace_penalty, groups)":
                  t[f"HTR step, ggn_trace_penalty, {probes} groups x 1 probe"] / t["plain SGD step"]}
    if "SLQ curvlinops, range given" in t:
        ratios["SLQ / curvlinops (range given)"] = t["SLQ htr_utils, operator given"] / t["SLQ curvlinops, range given"]
        ratios["SLQ / curvlinops (range given), ours built per call"] = (t["SLQ htr_utils, operator built per call"]
                                                                         / t["SLQ curvlinops, range given"])
    rows = [(name, ms(v)) for name, v in t.items()]
    return rows, {**t, **ratios}


def htr_penalty_variance(draws: int = 20, probes: int = 1, seed: int = 0, groups: int = 10
                         ) -> dict[str, tuple[float, float, float]]:
    """Spread of the penalties on LeNet, batch 256, train mode, at ``probes`` probes: (mean, sd, seconds per call).

    Keys: trace_penalty, ggn_trace_penalty, and ggn_trace_penalty over ``groups`` groups of the batch."""
    torch.manual_seed(seed)
    model = build_model("lenet", 1, 10).train()
    x, y = torch.randn(256, 1, 32, 32), torch.randint(0, 10, (256,))
    P = list(model.parameters())
    out = {}
    for name in ("trace_penalty", "ggn_trace_penalty", "ggn_trace_penalty, groups"):
        vals, secs = [], []
        gen = torch.Generator().manual_seed(seed + 1)
        for _ in range(draws):
            start = time.perf_counter()
            if name == "ggn_trace_penalty, groups":
                parts = [model(part) for part in x.chunk(groups)]
                loss, logits = F.cross_entropy(torch.cat(parts), y), parts
            else:
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            pen = (trace_penalty(loss, P, probes, generator=gen) if name == "trace_penalty"
                   else ggn_trace_penalty(logits, P, probes, generator=gen))
            torch.autograd.grad(pen, P)  # the penalty's own backward, as a training step pays it
            secs.append(time.perf_counter() - start)
            vals.append(float(pen.detach()))
        out[name] = (float(np.mean(vals)), float(np.std(vals, ddof=1)), float(np.median(secs)))
    return out
