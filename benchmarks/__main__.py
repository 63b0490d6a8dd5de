"""htr_utils against peer libraries, interleaved in one process; writes benchmarks/RESULTS.md.

Run: python -m benchmarks [--quick] [--out PATH] [--repeats 5]
(``make bench`` installs the peers and runs it.)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

from . import cases, peers
from .cases import Problem

HEADINGS = ["## 1. One Hessian-vector product", "## 2. SLQ spectral density", "## 3. Hutchinson trace",
            "## 4. Layer spectra of every layer", "## 5. One HTR training step",
            "## 6. Top eigenvalues: single-vector against block Lanczos",
            "## 7. The three ratios of issue 32, side by side"]


def table(rows: list[tuple], header: tuple[str, ...]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def machine() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)"
    rows = [("platform", platform.platform()), ("processor", platform.processor() or platform.machine()),
            ("CPU count", os.cpu_count()), ("torch threads", torch.get_num_threads()), ("GPU", gpu),
            ("python", platform.python_version()), ("torch", torch.__version__)]
    rows += [(peers.PEERS[m], peers.version(m)) for m in peers.PEERS]
    return table(rows, ("", ""))


def settings(quick: bool) -> dict:
    """Problems and sizes. Full: the issue's matrix, trimmed where a 2-core CPU cannot afford it (see RESULTS.md)."""
    if quick:
        lenet = Problem("LeNet, 8 inputs", "lenet", 8, width=0.25)
        small = Problem("LeNet width 0.125, 8 inputs", "lenet", 8, width=0.125)
        vgg = Problem("VGG11_bn width 0.125, 8 inputs", "vgg11_bn", 8, width=0.125)
        return {"hvp": [lenet, vgg], "slq": [small], "trace": [small], "layers": [lenet],
                "htr": [Problem("LeNet, batch 16", "lenet", 16, width=0.25)],
                "exact": [small], "slq_iters": 4, "probes": 5, "layer_iters": 2, "htr_probes": 2, "lanczos_steps": 2,
                "top": [small], "top_k": (2,)}
    lenet100, lenet1000 = Problem("LeNet, 100 inputs", "lenet", 100), Problem("LeNet, 1000 inputs", "lenet", 1000)
    small = Problem("LeNet width 0.25, 100 inputs", "lenet", 100, width=0.25)  # 4,157 params: exact spectrum
    vgg = Problem("VGG11_bn width 0.125, 100 inputs", "vgg11_bn", 100, width=0.125)  # the cpu profile's deep network
    resnet = Problem("ResNet18, 128 inputs", "resnet18", 128)
    return {"hvp": [lenet100, lenet1000, vgg, resnet], "slq": [small, lenet100, vgg], "trace": [small, lenet100, vgg],
            "layers": [lenet100, vgg], "htr": [Problem("LeNet, batch 256", "lenet", 256),
                                               Problem("VGG11_bn width 0.125, batch 128", "vgg11_bn", 128, width=0.125)],
            "exact": [small], "slq_iters": 128, "probes": 100, "layer_iters": 32, "htr_probes": 10,
            "lanczos_steps": 16, "top": [lenet100], "top_k": (10, 20)}


def htr_text(S: dict, htr_rows: list[tuple], note: str = "") -> str:
    """Section 5: one HTR training step, plain / penalised (probes one by one or batched) / middle layers."""
    return f"""{HEADINGS[4]}

Train mode, SGD; HTR adds 0.01·`trace_penalty` ({S['htr_probes']} Rademacher probes) over all
parameters — one double backward per probe (the default), or all probes in one batched double
backward (`batched=True`, `is_grads_batched`) — or over the weights of the middle half of the
Conv/Linear layers (the layer rule). Batch-normalised models use the elementary batch norm on
penalty steps (the fused kernel has no third derivative), as training does.{note}

{table(htr_rows, ("problem", "step", "median", "× plain step"))}"""


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (for the test)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved rounds per case (median reported)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's own); 1 is steadier on a loaded machine")
    ap.add_argument("--only-htr", action="store_true",
                    help="run section 5 alone and replace it in an existing --out file (no peers needed)")
    ap.add_argument("--only-top", action="store_true",
                    help="run section 6 alone and replace it in an existing --out file (no peers needed)")
    ap.add_argument("--only-ratios", action="store_true",
                    help="run section 7 alone (HVP / gradient, SLQ / curvlinops, HTR / plain step, interleaved in "
                         "one loop) and replace it in an existing --out file")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    q, S = args.quick, settings(args.quick)
    R = 1 if q else args.repeats
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.0f} s] {msg}", flush=True)

    if args.only_htr:
        htr_rows = []
        for p in S["htr"]:
            htr_rows += cases.case_htr_step(p, S["htr_probes"], R)[0]
            log(f"HTR step {p.label}")
        command = "python -m benchmarks --only-htr" + (f" --threads {args.threads}" if args.threads else "")
        section = htr_text(S, htr_rows, f" Written by `{command}` ({R} rounds); the other sections come "
                                        "from the full run.")
        out = Path(args.out)
        text = out.read_text() if out.exists() else ""
        if HEADINGS[4] in text:
            head, rest = text.split(HEADINGS[4], 1)
            tail = HEADINGS[5] + rest.split(HEADINGS[5], 1)[1] if HEADINGS[5] in rest else ""
            text = head + section + ("\n\n" + tail if tail else "\n")
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        out.write_text(text)
        log(f"wrote section 5 of {out}")
        return out

    if args.only_ratios:
        command = "python -m benchmarks --only-ratios" + (f" --threads {args.threads}" if args.threads else "")
        section = ratios_section(S, R, q, log, command)
        out = Path(args.out)
        text = out.read_text() if out.exists() else ""
        if HEADINGS[6] in text:
            head, rest = text.split(HEADINGS[6], 1)
            nxt = rest.find("\n## ")
            text = head + section + (rest[nxt:] if nxt >= 0 else "")
        else:
            text = text.rstrip("\n") + "\n\n" + section
        out.write_text(text)
        log(f"wrote section 7 of {out}")
        return out

    if args.only_top:
        command = "python -m benchmarks --only-top" + (f" --threads {args.threads}" if args.threads else "")
        section = top_section(S, R, q, log, command + (" (sections 1-5: the full run above)" if not q else ""))
        out = Path(args.out)
        text = out.read_text() if out.exists() else ""
        head = text.split(HEADINGS[5])[0].rstrip("\n") if HEADINGS[5] in text else text.rstrip("\n")
        out.write_text((head + "\n\n" if head else "") + section)
        log(f"wrote section 6 of {out}")
        return out

    exact = {p: cases.exact_eigenvalues(p) for p in S["exact"]}
    log("exact spectra formed")
    hvp_rows, hvp_t = [], {}
    for p in S["hvp"]:
        rows, hvp_t[p] = cases.case_hvp(p, R, 4 if p.model == "resnet18" else S["lanczos_steps"])
        hvp_rows += rows
        log(f"HVP {p.label}")
    slq_rows, slq_t = [], {}
    for p in S["slq"]:
        rows, slq_t[p] = cases.case_slq(p, S["slq_iters"], R, exact.get(p))
        slq_rows += rows
        log(f"SLQ {p.label}")
    tr_rows = []
    for p in S["trace"]:
        rows, _ = cases.case_trace(p, S["probes"], R, float(exact[p].sum()) if p in exact else None)
        tr_rows += rows
        log(f"trace {p.label}")
    lay_rows, lay_t = [], {}
    for p in S["layers"]:
        rows, lay_t[p] = cases.case_layers(p, S["layer_iters"], R)
        lay_rows += rows
        log(f"layers {p.label}")
    htr_rows, htr_t = [], {}
    for p in S["htr"]:
        rows, htr_t[p] = cases.case_htr_step(p, S["htr_probes"], R)
        htr_rows += rows
        log(f"HTR step {p.label}")
    top = top_section(S, R, q, log)
    ratios = ratios_section(S, R, q, log)
    elapsed = time.perf_counter() - start

    # ---- targets
    met = lambda ok: "**met**" if ok else "**not met**"  # noqa: E731
    targets = []
    for p, t in hvp_t.items():
        r = t["htr_utils inside Lanczos (per step)"] / t["one gradient (torch.func.grad)"]
        targets.append(f"- HVP ≤ 1.5 gradients (marginal, inside Lanczos), {p.label}: {r:.2f} gradients — {met(r <= 1.5)}.")
    for p, t in slq_t.items():
        cl = t.get("curvlinops lanczos_approximate_spectrum")
        if cl:
            r = cl / t["htr_utils slq_density"]
            given = t.get("curvlinops, spectral range given (not timed)")
            extra = (f" (against curvlinops handed its spectral range, i.e. without its range estimate: "
                     f"{given / t['htr_utils slq_density']:.2f}×)" if given else "")
            targets.append(f"- SLQ ≥ 2× faster than curvlinops as called by default, {p.label}: {r:.2f}× — "
                           f"{met(r >= 2)}{extra}.")
        else:
            targets.append(f"- SLQ ≥ 2× faster than curvlinops, {p.label}: curvlinops did not run, not measured.")
    for p, t in lay_t.items():
        targets.append(f"- Layer spectra in lockstep ≥ 2× faster than one after another, {p.label}: "
                       f"{t['speed-up']:.2f}× — {met(t['speed-up'] >= 2)}.")
    for p, t in htr_t.items():
        targets.append(f"- HTR step, {p.label}: middle layers ({t['middle_params']:,} of {t['all_params']:,} "
                       f"parameters) {t['HTR, middle layers'] / t['HTR, all parameters']:.2f}× the cost of all "
                       f"parameters (no target; C7's cost claim).")

    mode = ("**quick mode** (tiny sizes, 1 round: a smoke test, not a measurement)" if q
            else f"median of {R} interleaved rounds per case")
    sizes = ", ".join(f"{p.label} ({cases.num_params(p):,} params)" for p in dict.fromkeys(S["hvp"] + S["slq"]))
    doc = f"""# Benchmarks: htr_utils against peer libraries

Written by `python -m benchmarks{' --quick' if q else ''}` in {elapsed:.0f} s; {mode}. In every
case all candidates run in turn, round after round, in one process
(`benchmarks.timing.interleaved_medians`), after one untimed call of each, so load on the machine
hits all alike. Inputs: random 1×32×32 images with random labels (timings do not depend on the
values), float32, model in eval mode (train mode for the training step). A peer that raises is
reported as `fails: <error>`, one that is absent as `not installed`; peers are called unpatched.
"× ours" = that method's time / ours (above 1: ours is faster). Problems: {sizes}.

## Machine

{machine()}

Left out on purpose: ResNet18 appears in the HVP case only. One of its products takes seconds on
a CPU, so a 128-step SLQ density (with curvlinops' extra range estimate), 100 trace probes or a
layer-by-layer run over its 21 layers, five rounds each, would take hours. No GPU was available
for this run; the benchmark runs on the CPU.

## Targets

{chr(10).join(targets)}

{HEADINGS[0]}

Ours and PyHessian reuse work across products (our linearised gradient; PyHessian's stored
gradient graph), so their rows are the marginal cost of one more product; "from scratch" rows,
curvlinops and hessian-eigenthings recompute the forward and backward pass on every product.
"Inside Lanczos" is a {S['lanczos_steps']}-step `lanczos` run (4 steps for ResNet18) divided by its steps
(reorthogonalisation included).

{table(hvp_rows, ("problem", "method", "median", "gradients", "× ours (marginal matvec)"))}

{HEADINGS[1]}

One probe, {S['slq_iters']} Lanczos steps, 1024 grid points, Gaussian width κ = 1.25 for ours and
curvlinops (the paper's setting; curvlinops' own default is 3). Ours includes building the
operator (its spectral range comes from its own Lanczos run). curvlinops, as called by default,
first estimates the range with an extra eigensolver run on every call; the second curvlinops row
is handed that estimate, computed once outside the timing, so it measures its Lanczos alone.
"W₁ / range": the Wasserstein distance between the smoothed density (its grid points as atoms,
weighted by the density) and the exact spectrum, divided by the spectral range, where the
Hessian is small enough to form ({', '.join(p.label for p in S['exact'])}).

{table(slq_rows, ("problem", "method", "median", "× ours", "W₁ / range"))}

{HEADINGS[2]}

{S['probes']} Rademacher probes. Ours batches 16 probes per vmapped product; the loop calls our
`matvec` once per probe. Estimates use different probes, so they agree only within a few
standard errors; the exact trace is given where the Hessian can be formed.

{table(tr_rows, ("problem", "method", "median", "× ours", "estimate (mean ± stderr)", "exact trace"))}

{HEADINGS[3]}

Every Conv/Linear weight block, {S['layer_iters']} Lanczos steps, one probe. Lockstep:
`layerwise_spectra` on the operator over the union of the blocks (one batched product per step
for all layers). Sequential: `slq_density` on each layer's own operator in turn. Both include
building the operators.

{table(lay_rows, ("model", "rounds", "lockstep (layerwise_spectra)", "sequential (slq_density per layer)", "speed-up"))}

{htr_text(S, htr_rows)}

{top}
{ratios}"""
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(doc)
    log(f"wrote {out}")
    return out


def top_section(S: dict, R: int, quick: bool, log, command: str = "python -m benchmarks") -> str:
    """Section 6: today's single-vector top_eigenvalues against the block method, measured side by side."""
    t0 = time.perf_counter()
    rows = []
    for p in S["top"]:
        r, _ = cases.case_top(p, S["top_k"], R)
        rows += r
        log(f"top eigenvalues {p.label}")
    mode = "quick mode: a smoke test, not a measurement" if quick else f"median of {R} interleaved rounds"
    return f"""{HEADINGS[5]}

Written by `{command}`. `top_eigenvalues(op, k)` on the Hessian of one batch (float32; the
operator is built and its linearised map verified once, outside the timing). Today's method (`method="lanczos"`):
single-vector Lanczos with full reorthogonalisation, max(4k, 32) steps, doubled and rerun from
scratch until the top-k residual estimates are ≤ 1e-6 · max|θ|; it sees each distinct
eigenvalue once. The new default (`method="block"`): block Lanczos with block size k and thick
restarts, one batched `matmat` per step, until every top-k Ritz pair has a computed residual
‖Ay − θy‖ ≤ tol · max|θ|, tol = max(1e-6, 1000 machine epsilons) = 1.2e-4 in float32 (the
products' rounding floor); it finds multiplicities up to k. Both run in one process, in turn,
round after round ({mode}; {time.perf_counter() - t0:.0f} s for this section; torch threads:
{torch.get_num_threads()}), on a 2-core CPU shared with other jobs: absolute times are inflated
and noisy, the ratios and product counts are the figures to read. "products": operator-vector
products per call; "calls": operator calls (a `matmat` counts once); "max residual": the largest
top-k residual / λ₁ (estimated for single-vector Lanczos, computed for the block method);
"error vs float64": the largest |λ_i − λ_i(float64)| / λ₁ against the same Hessian in float64
(block method, tol 1e-10); values: λ₁ … λ_k.

{table(rows, ("problem", "k", "method", "median", "× today's", "products", "calls", "max residual / λ₁",
              "error vs float64", "values"))}
"""


def ratios_section(S: dict, R: int, quick: bool, log, command: str = "python -m benchmarks") -> str:
    """Section 7: issue 32's three ratios, every candidate in one interleaved loop, and the penalties' spread."""
    t0 = time.perf_counter()
    rows, t = cases.case_ratios(R, quick=quick, probes=S["htr_probes"])
    log("ratios")
    spread = cases.htr_penalty_variance(draws=3 if quick else 20)
    log("penalty spread")
    mode = "quick mode: a smoke test, not a measurement" if quick else f"median of {R} interleaved rounds"
    slq = t.get("SLQ / curvlinops (range given)")
    slq_built = t.get("SLQ / curvlinops (range given), ours built per call")
    ratio_rows = [("HVP / gradient (LeNet, 1000 inputs; per step of a 16-step Lanczos run)", f"{t['HVP / gradient']:.2f}"),
                  ("SLQ / curvlinops' SLQ handed its spectral range (LeNet, 100 inputs, 128 steps; both operators "
                   "built outside the timing)", f"{slq:.2f}" if slq is not None else "curvlinops not installed"),
                  ("the same, our operator built (traced and verified) inside every timed call",
                   f"{slq_built:.2f}" if slq_built is not None else "curvlinops not installed"),
                  (f"HTR step / plain step, trace_penalty, {S['htr_probes']} probes (LeNet, batch 256)",
                   f"{t['HTR / plain (trace_penalty)']:.2f}"),
                  (f"HTR step / plain step, ggn_trace_penalty, {S['htr_probes']} probes",
                   f"{t['HTR / plain (ggn_trace_penalty)']:.2f}"),
                  ("HTR step / plain step, ggn_trace_penalty, 1 probe", f"{t['HTR / plain (ggn_trace_penalty, 1 probe)']:.2f}"),
                  (f"HTR step / plain step, ggn_trace_penalty, {S['htr_probes']} groups of the batch, 1 probe each",
                   f"{t['HTR / plain (ggn_trace_penalty, groups)']:.2f}")]
    (hm, hs, ht), (gm, gs, gt) = spread["trace_penalty"], spread["ggn_trace_penalty"]
    (km, ks, kt) = spread["ggn_trace_penalty, groups"]
    return f"""{HEADINGS[6]}

Written by `{command}` ({mode}; {time.perf_counter() - t0:.0f} s; torch threads: {torch.get_num_threads()}).
All candidates below run in one `interleaved_medians` loop, round after round, in one process, so
load on the (shared) machine hits them alike. SLQ: both operators built outside the timing (like with
like; a built operator keeps its traced, verified map), and beside it ours built inside every call. The GGN
route (`ggn_trace_penalty`: tr(G) = (1/N) E‖Jᵀ S u‖², one logits backward per probe, no third
derivative) is the same penalty as `trace_penalty` for LeNet, which is piecewise linear in each
parameter (ReLU, max-pooling): there tr(∇² loss) = tr(G) exactly. With groups, the forward pass runs per
group of the batch and each group draws its own probe: (1/N) Σ_k ‖Σ_(i in group k) J_iᵀ S_i u_i‖², still
unbiased (only cross terms between groups, zero in expectation, are dropped), one backward's worth of work.

{table(ratio_rows, ("ratio", "value"))}

{table(rows, ("candidate", "median"))}

Spread of one penalty evaluation at one probe (LeNet, batch 256, train mode, {3 if quick else 20} draws; time
includes the penalty's backward): `trace_penalty` {hm:.4g} ± {hs:.3g} (sd) in {ht * 1e3:.0f} ms,
`ggn_trace_penalty` {gm:.4g} ± {gs:.3g} (sd) in {gt * 1e3:.0f} ms, `ggn_trace_penalty` over 10 groups
{km:.4g} ± {ks:.3g} (sd) in {kt * 1e3:.0f} ms; variance × time (lower is better at equal cost):
{hs ** 2 * ht:.3g}, {gs ** 2 * gt:.3g} and {ks ** 2 * kt:.3g}.
"""


if __name__ == "__main__":
    main(sys.argv[1:])
