"""All layer blocks at once: block-diagonal products, Lanczos in lockstep, layerwise traces.

For layer blocks S_1..S_L of one operator A on their union, the block products
A_ll v_l (l = 1..L) come out of a single batched product: put each v_l into its own
column, zero outside S_l, apply A to all L columns at once (vmap over the tangents,
sharing the primal pass) and keep block l of column l. Lanczos then runs L independent
recurrences side by side, one batched product per step, instead of L runs one after another.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .curvature import CurvatureOperator
from .hutchinson import TraceEstimate
from .lanczos import (LanczosChain, SpectralDensity, Tridiagonal, breakdown_tolerance, density_from_runs, positive_int,
                      rademacher)


def block_indices(op: CurvatureOperator, groups: Mapping[str, Sequence[str]]) -> dict[str, Tensor]:
    """Positions, within ``op``'s flat vector, of each group's parameters (aliases of tied parameters accepted)."""
    if not isinstance(groups, Mapping) or not groups:
        raise ValueError("groups must be a non-empty {layer name: [parameter names]} dict, e.g. layer_groups(model).")
    offsets, start = {}, 0
    for name, size in zip(op.param_names, op._sizes):
        offsets[name] = (start, size)
        start += size
    out = {}
    for layer, names in groups.items():
        if isinstance(names, str) or not isinstance(names, Sequence) or not names:
            raise ValueError(f"layer {layer!r}: expected a non-empty list of parameter names, got {names!r}.")
        canonical = [getattr(op, "_aliases", {}).get(n, n) if isinstance(n, str) else n for n in names]
        missing = [n for n, c in zip(names, canonical) if c not in offsets]
        if missing:
            raise ValueError(f"layer {layer!r}: parameters {missing} are not in the operator (it has {op.param_names}); "
                             "build it with params covering every group.")
        if len(set(canonical)) != len(canonical):
            raise ValueError(f"layer {layer!r} lists a parameter twice: {names}.")
        out[layer] = torch.cat([torch.arange(offsets[n][0], offsets[n][0] + offsets[n][1]) for n in canonical]).to(op.device)
    return out


def lockstep_lanczos(op: CurvatureOperator, groups: Mapping[str, Sequence[str]], num_iters: int,
                     num_probes: int = 1, seed: int = 0, tol: float | None = None) -> dict[str, list[Tridiagonal]]:
    """Lanczos (full reorthogonalisation) on every diagonal block A_ll, all blocks and probes in lockstep.

    Returns, per layer, one :class:`Tridiagonal` per probe. Probe p of layer l starts from a
    Rademacher vector drawn from ``seed`` (layers in order, then probes). A recurrence that
    breaks down or reaches its block's dimension stops; the others go on.
    """
    idx = block_indices(op, groups)
    num_iters, num_probes = positive_int(num_iters, "num_iters"), positive_int(num_probes, "num_probes")
    tol = breakdown_tolerance(op.dtype) if tol is None else tol
    gen = torch.Generator().manual_seed(seed)
    chains = [(layer, LanczosChain(rademacher(len(rows), gen, op.dtype, op.device), min(num_iters, len(rows)), tol))
              for layer, rows in idx.items() for _ in range(num_probes)]
    while live := [(layer, c) for layer, c in chains if not c.done]:
        V = torch.zeros((op.dim, len(live)), dtype=op.dtype, device=op.device)
        for j, (layer, c) in enumerate(live):
            V[idx[layer], j] = c.q
        W = op.matmat(V)
        for j, (layer, c) in enumerate(live):
            c.step(W[idx[layer], j])
    out: dict[str, list[Tridiagonal]] = {layer: [] for layer in idx}
    for layer, c in chains:
        out[layer].append(c.result())
    return out


def layerwise_spectra(op: CurvatureOperator, groups: Mapping[str, Sequence[str]], num_iters: int = 128,
                      num_probes: int = 1, seed: int = 0, **density_kw) -> dict[str, SpectralDensity]:
    """SLQ density of every layer block (same smoothing rule as :func:`slq_density`), computed in lockstep.

    Each density's ``meta['top']`` holds that block's largest Ritz values (descending), which
    for well-separated outliers are converged top eigenvalues.
    """
    dims = {layer: len(rows) for layer, rows in block_indices(op, groups).items()}
    out = {}
    for layer, tris in lockstep_lanczos(op, groups, num_iters, num_probes, seed).items():
        runs = [(ev, vecs[0] ** 2) for ev, vecs in (t.eigh() for t in tris)]
        out[layer] = density_from_runs(runs, meta={"num_iters": num_iters, "num_probes": num_probes, "seed": seed,
                                                   "dim": dims[layer]}, **density_kw)
    return out


def layerwise_trace(op: CurvatureOperator, groups: Mapping[str, Sequence[str]], num_probes: int, seed: int = 0,
                    batch_size: int = 16) -> dict[str, TraceEstimate]:
    """Hutchinson trace of every layer block, and of the union of the blocks, from block-masked probes.

    Each Rademacher probe z (drawn on all of ``op``'s rows, zero outside the groups) is cut
    into its layer pieces z_l (zero outside block l); one batched product gives A z_l for every
    l. Then z_lᵀ (A z_l)_l estimates
    tr(A_ll) with no cross-layer variance, and since A z = Σ_l A z_l, zᵀ A z estimates
    (entry ``"__all__"``) the trace of A restricted to the union of the groups, i.e.
    Σ_l tr(A_ll) — the trace of the whole operator when the groups cover all of its
    parameters (as when ``op`` is built with ``params`` = the union of ``groups``), of that
    sub-block otherwise. Groups must be disjoint. Cost: L products per probe, batched.
    """
    idx = block_indices(op, groups)
    num_probes, batch_size = positive_int(num_probes, "num_probes"), positive_int(batch_size, "batch_size")
    rows = torch.cat(list(idx.values()))
    if len(torch.unique(rows)) != len(rows):
        raise ValueError("groups overlap (a parameter is in two groups); layerwise_trace needs disjoint groups.")
    layers = list(idx)
    outside = torch.ones(op.dim, dtype=torch.bool, device=op.device)
    outside[rows] = False   # rows of op not in any group: the probe is zero there
    gen = torch.Generator().manual_seed(seed)
    per_layer: dict[str, list[float]] = {layer: [] for layer in layers}
    whole: list[float] = []
    per_batch = max(1, batch_size // len(layers))
    for start in range(0, num_probes, per_batch):
        k = min(per_batch, num_probes - start)
        Z = rademacher(op.dim, gen, op.dtype, op.device, count=k)
        if bool(outside.any()):
            Z[outside] = 0
        V = torch.zeros((op.dim, k * len(layers)), dtype=op.dtype, device=op.device)
        for j, layer in enumerate(layers):
            V[idx[layer], j * k:(j + 1) * k] = Z[idx[layer]]
        W = op.matmat(V)
        full = torch.zeros_like(Z)
        for j, layer in enumerate(layers):
            Wl = W[:, j * k:(j + 1) * k]
            full += Wl
            per_layer[layer].extend((Z[idx[layer]] * Wl[idx[layer]]).sum(0).double().cpu().tolist())
        whole.extend((Z * full).sum(0).double().cpu().tolist())
    out = {layer: TraceEstimate.from_samples(np.array(v)) for layer, v in per_layer.items()}
    out["__all__"] = TraceEstimate.from_samples(np.array(whole))
    return out
