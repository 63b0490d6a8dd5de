"""All-layers-at-once routines against per-layer dense blocks and per-layer runs."""
import numpy as np
import torch
import torch.nn.functional as F

from htr_utils import hvp_operator, layer_groups, lanczos
from htr_utils.layerwise import block_indices, layerwise_spectra, layerwise_trace, lockstep_lanczos


def _union_op(problem, kind="hessian"):
    groups = layer_groups(problem.model, include_bias=True)
    names = [n for g in groups.values() for n in g]
    return hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), params=names, kind=kind), groups


def test_lockstep_lanczos_equals_separate_runs_per_block(problem):
    op, groups = _union_op(problem)
    H = problem.dense_hessian(op.param_names)
    idx = block_indices(op, groups)
    tris = lockstep_lanczos(op, groups, num_iters=500, num_probes=2, seed=0)
    for layer, rows in idx.items():
        exact = torch.linalg.eigvalsh(H[rows][:, rows]).numpy()
        for tri in tris[layer]:
            ritz, _ = tri.eigh()
            # Run to exhaustion: every Ritz value is an exact eigenvalue of the block, extremes found.
            assert np.abs(ritz[:, None] - exact[None, :]).min(axis=1).max() < 1e-8 * abs(exact).max()
            assert abs(ritz.max() - exact.max()) < 1e-9 and abs(ritz.min() - exact.min()) < 1e-9


def test_layerwise_spectra_match_block_operator(problem):
    op, groups = _union_op(problem, kind="ggn")
    dens = layerwise_spectra(op, groups, num_iters=8, num_probes=1, seed=0)
    # Same start vector on the block operator alone gives the same quadrature.
    gen = torch.Generator().manual_seed(0)
    from htr_utils.lanczos import rademacher
    for layer, names in groups.items():
        block = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), params=names, kind="ggn")
        start = rademacher(block.dim, gen, block.dtype)
        ritz, w = lanczos(block, 8, start=start)
        got = dens[layer]
        assert np.allclose(np.sort(got.nodes[0][: len(ritz)]), ritz, atol=1e-9)
        assert np.isclose(got.meta["top"][0], ritz.max())
        assert abs(np.trapezoid(got.density, got.grid) - 1) < 1e-8


def test_layerwise_trace_unbiased_and_sums(problem):
    op, groups = _union_op(problem)
    H = problem.dense_hessian(op.param_names)
    idx = block_indices(op, groups)
    est = layerwise_trace(op, groups, num_probes=600, seed=1)
    for layer, rows in idx.items():
        exact = float(H[rows][:, rows].trace())
        assert abs(est[layer].mean - exact) < 4 * est[layer].stderr + 1e-12, layer
    assert abs(est["__all__"].mean - float(H.trace())) < 4 * est["__all__"].stderr
    # Block-masked probes: each layer sample is z_lᵀ H_ll z_l, whose variance is 2 Σ_{i≠j} (H_ll)_ij²,
    # not inflated by the other layers' blocks.
    for layer, rows in idx.items():
        B = H[rows][:, rows]
        sd = float(torch.sqrt(2 * ((B ** 2).sum() - (B.diagonal() ** 2).sum())))
        assert est[layer].samples.std(ddof=1) < 1.3 * sd + 1e-12, layer
