"""HVP cost relative to one gradient, and SLQ against curvlinops, on LeNet (issue: core speed targets).

Run: python -m benchmarks.core_speed [--inputs 1000] [--repeats 5]
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp, vjp

from htr_utils import hvp_operator, slq_density
from htr_utils.models import build_model

from .timing import interleaved_medians


def lenet_problem(n: int, seed: int = 0):
    torch.manual_seed(seed)
    model = build_model("lenet", 1, 10).eval()
    return model, torch.randn(n, 1, 32, 32), torch.randint(0, 10, (n,))


def hvp_ratios(n: int = 1000, repeats: int = 5, lanczos_steps: int = 16) -> dict[str, float]:
    """Median seconds of a gradient and of HVPs computed four ways; 'in_lanczos' is the marginal cost per step."""
    model, x, y = lenet_problem(n)
    params = {k: v.detach() for k, v in model.named_parameters()}
    loss = lambda p: F.cross_entropy(functional_call(model, p, (x,)), y)  # noqa: E731
    g = grad(loss)
    v = {k: torch.randn_like(p) for k, p in params.items()}
    op = hvp_operator(model, F.cross_entropy, (x, y))
    flat = torch.randn(op.dim)
    op.matvec(flat)  # traces the linearised map once; later products reuse it

    def lanczos_steps_fn():
        from htr_utils import lanczos
        lanczos(op, lanczos_steps)

    t = interleaved_medians({
        "gradient": lambda: g(params),
        "jvp_of_grad": lambda: jvp(g, (params,), (v,)),
        "double_backward": lambda: vjp(g, params)[1](v),
        "htr_utils_matvec": lambda: op.matvec(flat),
        "htr_utils_matmat8": lambda: op.matmat(torch.randn(op.dim, 8)),
        "lanczos": lanczos_steps_fn,
    }, repeats=repeats)
    t["htr_utils_matmat8_per_vector"] = t.pop("htr_utils_matmat8") / 8
    t["in_lanczos"] = t.pop("lanczos") / lanczos_steps
    return t


def slq_vs_curvlinops(n: int = 100, num_iters: int = 64, repeats: int = 5) -> dict[str, float]:
    """Median seconds of one SLQ density (one probe) by htr_utils and by curvlinops' lanczos_approximate_spectrum."""
    from curvlinops import HessianLinearOperator, lanczos_approximate_spectrum
    model, x, y = lenet_problem(n)
    params = [p for p in model.parameters() if p.requires_grad]
    A = HessianLinearOperator(model, torch.nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)

    def ours():
        op = hvp_operator(model, F.cross_entropy, (x, y))  # includes building the operator
        return slq_density(op, num_iters=num_iters, num_probes=1)

    cached_bounds = {}

    def theirs():
        return lanczos_approximate_spectrum(A, num_iters, num_points=1024, num_repeats=1)

    def theirs_bounds_given():
        if not cached_bounds:
            d = ours()
            cached_bounds["b"] = (float(d.nodes.min()), float(d.nodes.max()))
        return lanczos_approximate_spectrum(A, num_iters, num_points=1024, num_repeats=1, boundaries=cached_bounds["b"])

    return interleaved_medians({"htr_utils": ours, "curvlinops": theirs,
                                "curvlinops_boundaries_given": theirs_bounds_given}, repeats=repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--inputs", type=int, default=1000)
    ap.add_argument("--slq-inputs", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t = hvp_ratios(args.inputs, args.repeats)
    g = t["gradient"]
    print(f"LeNet, {args.inputs} inputs, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, sec in t.items():
        print(f"  {name:30s} {sec * 1e3:8.1f} ms   {sec / g:5.2f} gradients")
    s = slq_vs_curvlinops(args.slq_inputs, repeats=args.repeats)
    print(f"SLQ, 64 Lanczos steps, LeNet, {args.slq_inputs} inputs")
    for name, sec in s.items():
        print(f"  {name:30s} {sec:8.3f} s    curvlinops/this = {s['curvlinops'] / sec:5.2f}")


if __name__ == "__main__":
    main()
