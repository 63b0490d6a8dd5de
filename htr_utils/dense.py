"""Dense float64 references for small models: Hessian, Gauss-Newton and residual as full matrices.

The reference against which the operators are tested (tests/, notebook 00). It deliberately
avoids the code paths of :mod:`htr_utils.curvature`:

    Hessian   ∇²L, column by column, by reverse-over-reverse (the pullback of ∇L);
    GGN       G = Jᵀ (∇²_f L) J with J the Jacobian of all logits (jacrev) and ∇²_f L the
              Hessian of the loss in the logits (reverse-over-reverse), for any loss;
    residual  ∇²L − G.

``torch.func.hessian`` (forward-over-reverse) is not used: in some torch versions it is wrong
through LayerNorm. :func:`finite_difference_hessian` (central differences of the gradient) is
an independent check of the reference itself. Like the operators, everything here runs in
eval mode with differentiable attention kernels (:func:`htr_utils.curvature.exact_kernels`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jacrev, vjp

from .curvature import eval_mode, exact_kernels, select_parameters


class MatrixOperator:
    """A dense symmetric matrix behind the operator protocol (``dim``, ``dtype``, ``device``, ``matvec``,
    ``matmat``), for routines tested on known spectra; ``products`` counts the vectors it was applied to."""

    def __init__(self, A: Tensor) -> None:
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"MatrixOperator needs a square matrix, got shape {tuple(A.shape)}.")
        self.A, self.dim, self.dtype, self.device = A, A.shape[0], A.dtype, A.device
        self.products = 0

    def matvec(self, v: Tensor) -> Tensor:
        self.products += 1
        return self.A @ v

    def matmat(self, V: Tensor) -> Tensor:
        self.products += V.shape[1]
        return self.A @ V


def flat_functions(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor,
                   params: Iterable[str] | None = None) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor],
                                                                 Tensor, list[str]]:
    """Closures of the flat parameter vector θ_S: θ_S -> outputs and θ_S -> loss, the current θ_S, and the names.

    Parameters outside ``params`` (default: all trainable) and buffers are held fixed. Call the
    closures inside :func:`htr_utils.curvature.eval_mode` to get the curvature the operators compute.
    """
    names = select_parameters(model, params)
    every = dict(model.named_parameters())
    fixed = {n: p.detach() for n, p in every.items() if n not in names}
    fixed.update(dict(model.named_buffers()))
    shapes = [every[n].shape for n in names]
    sizes = [every[n].numel() for n in names]
    flat = torch.cat([every[n].detach().reshape(-1) for n in names])

    def outputs(theta: Tensor) -> Tensor:
        chunks = {n: c.view(s) for n, c, s in zip(names, torch.split(theta, sizes), shapes)}
        return functional_call(model, {**fixed, **chunks}, (x,))

    def loss(theta: Tensor) -> Tensor:
        return loss_fn(outputs(theta), y)

    return outputs, loss, flat, names


def _symmetric(matrix: Tensor) -> Tensor:
    return (matrix + matrix.T) / 2


def _jacobian_of_gradient(fn: Callable[[Tensor], Tensor], at: Tensor) -> Tensor:
    """∇²fn(at) by reverse-over-reverse: row i is the pullback of ∇fn applied to e_i."""
    _, pullback = vjp(grad(fn), at)
    eye = torch.eye(at.numel(), dtype=at.dtype, device=at.device)
    return torch.stack([pullback(e)[0] for e in eye])


def dense_hessian(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor,
                  params: Iterable[str] | None = None) -> Tensor:
    """The (P, P) Hessian of ``loss_fn(model(x), y)`` in the selected parameters (model in eval mode)."""
    _, loss, flat, _ = flat_functions(model, loss_fn, x, y, params)
    with eval_mode(model), exact_kernels():
        return _symmetric(_jacobian_of_gradient(loss, flat))


def dense_jacobian(model: nn.Module, x: Tensor, params: Iterable[str] | None = None) -> tuple[Tensor, Tensor]:
    """The model's outputs f (detached) and their Jacobian J = ∂ vec(f) / ∂θ_S, shape (f.numel(), P), by jacrev."""
    outputs, _, flat, _ = flat_functions(model, lambda f, y: f.sum(), x, x, params)
    with eval_mode(model), exact_kernels():
        f = outputs(flat).detach()
        return f, jacrev(outputs)(flat).reshape(f.numel(), -1)


def dense_output_hessian(loss_fn: Callable, f: Tensor, y: Tensor) -> Tensor:
    """∇²_f loss_fn(f, y) in the flattened outputs, shape (f.numel(), f.numel()), by reverse-over-reverse."""
    with exact_kernels():
        return _symmetric(_jacobian_of_gradient(lambda z: loss_fn(z.view_as(f), y), f.reshape(-1)))


def dense_ggn(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor,
              params: Iterable[str] | None = None) -> Tensor:
    """The (P, P) Gauss-Newton matrix Jᵀ (∇²_f L) J for any loss that is a function of the outputs f."""
    f, J = dense_jacobian(model, x, params)
    return _symmetric(J.T @ dense_output_hessian(loss_fn, f, y) @ J)


def dense_curvature(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor,
                    params: Iterable[str] | None = None, kind: str = "hessian") -> Tensor:
    """Dense matrix of ``kind``: "hessian", "ggn" or "residual" (= hessian − ggn)."""
    if kind == "hessian":
        return dense_hessian(model, loss_fn, x, y, params)
    if kind == "ggn":
        return dense_ggn(model, loss_fn, x, y, params)
    if kind == "residual":
        return dense_hessian(model, loss_fn, x, y, params) - dense_ggn(model, loss_fn, x, y, params)
    raise ValueError(f"unknown kind {kind!r}; choose 'hessian', 'ggn' or 'residual'.")


def finite_difference_hessian(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor,
                              params: Iterable[str] | None = None, eps: float = 1e-5) -> Tensor:
    """Central differences of the gradient, (∇L(θ + ε e_i) − ∇L(θ − ε e_i)) / 2ε: error O(ε²), float64 advised."""
    _, loss, flat, _ = flat_functions(model, loss_fn, x, y, params)
    gradient = grad(loss)
    with eval_mode(model), exact_kernels():
        cols = []
        for i in range(flat.numel()):
            step = torch.zeros_like(flat)
            step[i] = eps
            cols.append((gradient(flat + step) - gradient(flat - step)) / (2 * eps))
    return _symmetric(torch.stack(cols, dim=1))


def finite_difference_hvp(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor, V: Tensor,
                          params: Iterable[str] | None = None, eps: float = 1e-5) -> Tensor:
    """Central differences of the gradient along each column v of V: (∇L(θ + εv) − ∇L(θ − εv)) / 2ε ≈ H v.

    Two gradients per column instead of two per parameter: a cheap independent check of a dense
    Hessian along a few directions (columns of unit scale advised; float64).
    """
    _, loss, flat, _ = flat_functions(model, loss_fn, x, y, params)
    gradient = grad(loss)
    with eval_mode(model), exact_kernels():
        return torch.stack([(gradient(flat + eps * v) - gradient(flat - eps * v)) / (2 * eps) for v in V.T], dim=1)


def finite_difference_jvp(model: nn.Module, x: Tensor, V: Tensor, params: Iterable[str] | None = None,
                          eps: float = 1e-5) -> Tensor:
    """Central differences of the outputs along each column v of V: (f(θ + εv) − f(θ − εv)) / 2ε ≈ J v, flattened."""
    outputs, _, flat, _ = flat_functions(model, lambda f, y: f.sum(), x, x, params)
    with eval_mode(model), exact_kernels():
        return torch.stack([((outputs(flat + eps * v) - outputs(flat - eps * v)) / (2 * eps)).reshape(-1)
                            for v in V.T], dim=1)


def finite_difference_output_hvp(loss_fn: Callable, f: Tensor, y: Tensor, U: Tensor, eps: float = 1e-5) -> Tensor:
    """Central differences of ∇_f loss along each column u of U (flattened outputs) ≈ ∇²_f loss · u."""
    g = grad(lambda z: loss_fn(z.view_as(f), y))
    flat = f.reshape(-1)
    return torch.stack([(g(flat + eps * u) - g(flat - eps * u)) / (2 * eps) for u in U.T], dim=1)
