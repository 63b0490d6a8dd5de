"""Hutchinson trace estimates: tr(A) ≈ (1/m) Σ_k z_kᵀ A z_k with Rademacher probes z_k.

For Rademacher z, E[zᵀAz] = tr(A) and Var[zᵀAz] = 2 Σ_{i≠j} A_ij², so the standard error
falls like 1/√m. ``hutchpp_trace`` (Hutch++) spends a third of its products on a sketch whose
span it traces exactly, which pays where a few eigenvalues dominate. ``trace_penalty`` is the same estimator built on the autograd graph, so
that γ·tr(∇²L) can be added to a training loss (Hessian Trace Regularisation).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .lanczos import LinearOperator, positive_int, rademacher


@dataclass
class TraceEstimate:
    """Hutchinson estimate: ``mean`` of the probe values zᵀAz, their ``stderr`` = std/√m, and the values."""
    mean: float
    stderr: float
    samples: np.ndarray

    @classmethod
    def from_samples(cls, samples: np.ndarray) -> "TraceEstimate":
        """Mean of the probe values and its standard error std(ddof=1)/√m (NaN for one probe)."""
        samples = np.asarray(samples, dtype=float)
        m = len(samples)
        stderr = float(samples.std(ddof=1) / math.sqrt(m)) if m > 1 else float("nan")
        return cls(float(samples.mean()), stderr, samples)

    @property
    def num_probes(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"TraceEstimate({self.mean:.6g} ± {self.stderr:.2g}, m={self.num_probes})"


def hutchinson_trace(op: LinearOperator, num_probes: int, seed: int = 0, batch_size: int = 16) -> TraceEstimate:
    """Hutchinson trace of ``op`` with ``num_probes`` Rademacher probes, ``batch_size`` products at a time.

    The probes are drawn from ``seed`` (a fixed seed gives the same probes, hence the same estimate).
    """
    num_probes = positive_int(num_probes, "num_probes")
    batch_size = positive_int(batch_size, "batch_size")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for start in range(0, num_probes, batch_size):
        k = min(batch_size, num_probes - start)
        Z = rademacher(op.dim, gen, op.dtype, op.device, count=k)
        AZ = _matmat(op, Z)
        values.append((Z * AZ).sum(dim=0).double().cpu())
    return TraceEstimate.from_samples(torch.cat(values).numpy())


def hutchpp_trace(op: LinearOperator, num_products: int, seed: int = 0) -> TraceEstimate:
    """Hutch++ trace of ``op`` (Meyer, Musco, Musco & Woodruff 2021) from ``num_products`` products.

    With r = ⌊m/3⌋ and g = m − 2r: Q = orth(A S) for a Gaussian S of r columns, then

        tr(A) ≈ tr(Qᵀ A Q) + (1/g) Σ_k z_kᵀ (I − QQᵀ) A (I − QQᵀ) z_k,

    z_k Rademacher (r + r + g = m products). The low-rank part is exact on span(Q); the
    Hutchinson part only sees what is left, so where a few eigenvalues dominate (|λ| falling
    fast) the error falls like 1/m instead of 1/√m. Unbiased for every m ≥ 3 (given Q, the second
    term is an unbiased estimate of tr((I − QQᵀ) A)).

    ``samples`` holds the g values tr(QᵀAQ) + z_kᵀ(I − QQᵀ)A(I − QQᵀ)z_k, each unbiased given Q;
    ``stderr`` is their std/√g: the standard error of the estimate given Q, which is honest for
    its error because the estimate is unbiased given Q (NaN when g = 1; m ≥ 5 gives g ≥ 2).
    ``num_probes`` is then g, not m.
    """
    m = positive_int(num_products, "num_products", minimum=3)
    r = m // 3
    g = m - 2 * r
    gen = torch.Generator().manual_seed(seed)
    S = torch.randn((r, op.dim), generator=gen, dtype=torch.float64).T.to(op.dtype).to(op.device)
    Q = torch.linalg.qr(_matmat(op, S))[0]
    low_rank = float((Q * _matmat(op, Q)).sum(dtype=torch.float64))
    Z = rademacher(op.dim, gen, op.dtype, op.device, count=g)
    Z = Z - Q @ (Q.T @ Z)
    AZ = _matmat(op, Z)
    rest = (Z * AZ).sum(dim=0, dtype=torch.float64).cpu().numpy()
    return TraceEstimate.from_samples(low_rank + rest)


def _matmat(op: LinearOperator, V: Tensor) -> Tensor:
    return op.matmat(V) if hasattr(op, "matmat") else torch.stack([op.matvec(v) for v in V.T], dim=1)


def trace_penalty(loss: Tensor, params: Sequence[Tensor], num_probes: int = 1,
                  generator: torch.Generator | None = None, probes: Sequence[Sequence[Tensor]] | None = None,
                  batched: bool = False) -> Tensor:
    """Differentiable Hutchinson estimate of tr(∇²_params loss): (1/m) Σ_k z_kᵀ (∇² loss) z_k.

    ``loss`` must be a scalar computed with a graph through ``params`` (tensors, e.g.
    ``list(model.parameters())``). The result keeps a graph (create_graph), so
    ``(loss + γ * trace_penalty(loss, params)).backward()`` trains on it; the cost is one
    double backward per probe.

    Probes: ``num_probes`` fresh Rademacher vectors on every call, drawn from ``generator``
    (reproducible) or, when it is None, from torch's global generator (reproducible after
    ``torch.manual_seed``; the draws advance it). Each call is then an unbiased estimate of
    the trace. ``probes`` instead fixes them (a list, one entry per probe, of tensors shaped
    like ``params``), which makes the penalty a fixed quadratic form Σ zᵀ H z rather than an
    estimate of the trace.

    ``batched``: all probes' products H z_k in one vmapped double backward (``is_grads_batched``)
    instead of one per probe; same value to rounding. On a CPU it was slower for LeNet and
    VGG11_bn (benchmarks/RESULTS.md, section 5), hence off by default. Where torch cannot batch an
    operation's double backward, the per-probe loop is used.
    """
    if not isinstance(loss, Tensor) or loss.numel() != 1:
        raise ValueError("trace_penalty needs the scalar loss tensor (the mean over the batch).")
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params:
        raise ValueError("trace_penalty needs at least one parameter tensor.")
    if not all(isinstance(p, Tensor) for p in params):
        bad = next(p for p in params if not isinstance(p, Tensor))
        raise ValueError(f"params must be tensors (e.g. list(model.parameters())), got {type(bad).__name__} {bad!r}.")
    if not loss.requires_grad or not all(p.requires_grad for p in params):
        raise ValueError("trace_penalty needs a loss computed with gradients enabled from parameters that require "
                         "grad (not under torch.no_grad(), not frozen).")
    if probes is None:
        num_probes = positive_int(num_probes, "num_probes")
        probes = [[rademacher(p.numel(), generator, p.dtype, p.device).view_as(p) for p in params]
                  for _ in range(num_probes)]
    else:
        probes = [list(z) for z in probes]
        if not probes:
            raise ValueError("probes is empty; pass at least one probe or probes=None.")
        for z in probes:
            if len(z) != len(params) or any(zi.shape != p.shape for zi, p in zip(z, params)):
                raise ValueError("each probe must be a list of tensors shaped like params, one per parameter tensor.")
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    if batched and len(probes) > 1:
        value = _batched_quadratic_forms(grads, params, probes)
        if value is not None:
            return value
    total = loss.new_zeros(())
    for z in probes:
        # ∇(gᵀz) = H z; zᵀ H z is then a scalar still differentiable in params.
        gz = sum((g * zi).sum() for g, zi in zip(grads, z))
        hz = torch.autograd.grad(gz, params, create_graph=True, materialize_grads=True)
        total = total + sum((h * zi).sum() for h, zi in zip(hz, z))
    return total / len(probes)


def ggn_trace_penalty(logits: Tensor | Sequence[Tensor], params: Sequence[Tensor], num_probes: int = 1,
                      generator: torch.Generator | None = None, batched: bool = False) -> Tensor:
    """Differentiable unbiased estimate of tr(G), the Gauss-Newton matrix of the mean softmax cross-entropy.

    ``logits``: the (N, C) model outputs, with a graph through ``params``, of the loss
    ``F.cross_entropy(logits, y)`` (mean over the batch; G does not depend on y). With J_i = ∂f(x_i)/∂θ and
    H_i = diag(p_i) − p_i p_iᵀ = S_i S_iᵀ, S_i = diag(√p_i) − p_i √p_iᵀ (since Σ p = 1),

        tr(G) = (1/N) Σ_i tr(J_iᵀ H_i J_i) = (1/N) E_u ‖Σ_i J_iᵀ S_i u_i‖²,

    u_i ∈ {±1}^C independent per example and probe (cross terms between examples vanish in
    expectation). Each probe is one backward pass of the logits (a vector-Jacobian product with
    create_graph) instead of a Hessian-vector product, and no third derivative is needed. The
    probes u do not depend on θ, so the gradient of the estimate is unbiased for ∇tr(G) too.

    Groups: ``logits`` may instead be a list of the (N_k, C) outputs of separate forward passes over a
    partition of the batch (``[model(xk) for xk in x.chunk(K)]``; the loss then reads their ``torch.cat``).
    Each probe is then drawn and back-propagated per group, and the estimate is

        (1/N) Σ_k ‖Σ_{i ∈ B_k} J_iᵀ S_i u_i‖²,

    still unbiased for tr(G) (only the cross terms of examples in different groups are dropped, and
    those vanish in expectation). K groups cost about what one probe costs on the whole batch (each
    backward only runs over its own group), while dropping all but 1/K of the cross terms between
    examples, which carry most of the variance for large N: K groups at one probe are nearly as good
    as K probes on the whole batch, at about 1/K of the cost (measured: benchmarks/RESULTS.md, section
    7). The forward pass must then be run per group, so layers that mix examples (BatchNorm in train
    mode) see smaller batches; use groups only for models without such layers.

    For a network that is piecewise linear in each single parameter (ReLU / max-pooling / Linear /
    Conv, no BatchNorm, no tanh or GELU), the diagonal of each ∇²f_c vanishes, so
    tr(∇² loss) = tr(G) exactly and this is an unbiased estimate of the HTR penalty itself, at a
    lower cost and (measured, benchmarks/RESULTS.md) a lower variance than :func:`trace_penalty`.
    For other networks it estimates tr(G) ≥ 0, a different regulariser.

    ``batched``: all probes in one vmapped backward (``is_grads_batched``; where torch cannot batch, the loop).
    Off by default: on a CPU it was 1.6x slower than the loop for LeNet, batch 256, 10 probes.
    """
    if isinstance(params, Tensor):
        params = [params]
    params = list(params)
    if not params or not all(isinstance(p, Tensor) and p.requires_grad for p in params):
        raise ValueError("ggn_trace_penalty needs a list of parameter tensors that require grad.")
    num_probes = positive_int(num_probes, "num_probes")
    if isinstance(logits, Tensor):
        _check_logits(logits)
        return _ggn_probe_sum(logits, params, num_probes, generator, batched) / (num_probes * logits.shape[0])
    groups = list(logits) if isinstance(logits, (list, tuple)) else None
    if not groups:
        raise ValueError("ggn_trace_penalty needs the (N, C) logits of the batch, or a non-empty list of the "
                         "(N_k, C) logits of separate forward passes over a partition of the batch.")
    for g in groups:
        _check_logits(g)
    if len({g.shape[1] for g in groups}) != 1:
        raise ValueError(f"the groups' logits have different numbers of classes {[g.shape[1] for g in groups]}; "
                         "pass the outputs of one model over a partition of one batch.")
    total = sum(_ggn_probe_sum(g, params, num_probes, generator, batched) for g in groups)
    return total / (num_probes * sum(g.shape[0] for g in groups))


def _check_logits(logits: Tensor) -> None:
    if not isinstance(logits, Tensor) or logits.dim() != 2:
        raise ValueError("ggn_trace_penalty needs the (N, C) logits of the batch, before the softmax (or a list of "
                         "such tensors, one per group).")
    if not logits.requires_grad:
        raise ValueError("ggn_trace_penalty needs logits computed with gradients enabled from params.")


def _ggn_probe_sum(logits: Tensor, params: list[Tensor], num_probes: int, generator: torch.Generator | None,
                   batched: bool) -> Tensor:
    """Σ over ``num_probes`` probes u of ‖Σ_i J_iᵀ S_i u_i‖² over the rows i of ``logits`` (not yet divided)."""
    n, c = logits.shape
    log_p = torch.log_softmax(logits, dim=1)
    p, sqrt_p = log_p.exp(), (0.5 * log_p).exp()   # √p through exp(log p / 2): finite derivative where p underflows
    U = torch.randint(0, 2, (num_probes, n, c), generator=generator, dtype=torch.int8).to(logits.dtype) * 2 - 1
    U = U.to(logits.device)
    V = sqrt_p * U - p * (sqrt_p * U).sum(dim=2, keepdim=True)     # S_i u_i for every probe and example
    if batched and num_probes > 1:
        try:
            g = torch.autograd.grad(logits, params, grad_outputs=V, is_grads_batched=True, create_graph=True,
                                    materialize_grads=True)
            return sum((gi.flatten(1) ** 2).sum(1) for gi in g).sum()
        except RuntimeError:  # an operation without a batching rule for its backward
            pass
    total = logits.new_zeros(())
    for k in range(num_probes):
        g = torch.autograd.grad(logits, params, grad_outputs=V[k], create_graph=True, materialize_grads=True)
        total = total + sum((gi ** 2).sum() for gi in g)
    return total


def _batched_quadratic_forms(grads: Sequence[Tensor], params: Sequence[Tensor],
                             probes: Sequence[Sequence[Tensor]]) -> Tensor | None:
    """(1/m) Σ_k z_kᵀ H z_k with the m products H z_k = ∇(gᵀz_k) from one batched backward; None if torch cannot batch it."""
    m = len(probes)
    Z = [torch.stack([z[i] for z in probes]) for i in range(len(params))]  # per tensor: (m, *shape)
    gz = sum((g.unsqueeze(0) * z).flatten(1).sum(1) for g, z in zip(grads, Z))  # (m,): g·z_k
    eye = torch.eye(m, dtype=gz.dtype, device=gz.device)
    try:
        hz = torch.autograd.grad(gz, params, grad_outputs=eye, is_grads_batched=True, create_graph=True,
                                 materialize_grads=True)
    except RuntimeError:  # an operation without a batching rule for its double backward
        return None
    return sum((h * z).sum() for h, z in zip(hz, Z)) / m
