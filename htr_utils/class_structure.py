"""Class structure of the Gauss–Newton matrix of softmax cross-entropy (after Papyan, 2020).

For the mean cross-entropy over n examples, G = (1/n) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i, and since
diag p − p pᵀ = Σ_c p_c (e_c − p)(e_c − p)ᵀ,

    G = Σ_i Σ_c w_ic g_ic g_icᵀ,   g_ic = J_iᵀ (p_i − e_c),   w_ic = p_ic / n,

g_ic being the loss gradient as if example i had label c. Grouping the terms by (true class y_i = c,
label c'): W_cc' = Σ_{i∈c} w_ic', δ_cc' = Σ_{i∈c} w_ic' g_ic' / W_cc', and exactly

    G = G_class + G_cross + G_within,
    G_class = Σ_c W_cc δ_cc δ_ccᵀ,  G_cross = Σ_{c≠c'} W_cc' δ_cc' δ_cc'ᵀ,
    G_within = Σ_{c,c'} Σ_{i∈c} w_ic' (g_ic' − δ_cc')(g_ic' − δ_cc')ᵀ  (positive semi-definite).

The largest eigenvalue of G_within is the edge of the bulk that the class and cross-class means
lift outliers out of. Products with G_within need only G's products (:func:`htr_utils.hvp_operator`,
kind "ggn") minus the C² rank-one terms.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp

from .curvature import CurvatureOperator, batch_source, eval_mode, select_parameters


@dataclass(frozen=True)
class ClassStructure:
    """Weights W (C × C: true class, label) and means δ (C, C, dim) of the class split of G on a parameter subset."""
    weights: np.ndarray
    means: Tensor
    params: tuple[str, ...]
    sizes: tuple[int, ...]

    @property
    def num_classes(self) -> int:
        return int(self.weights.shape[0])

    @property
    def dim(self) -> int:
        return int(self.means.shape[-1])

    def class_means(self) -> Tensor:
        """The C class means δ_cc as the columns of a (dim, C) matrix."""
        idx = torch.arange(self.num_classes)
        return self.means[idx, idx].T

    def part_matrix(self, part: str) -> tuple[Tensor, Tensor]:
        """(D, w): rows of D are the means of ``part`` ("class", "cross" or "both"), w their weights."""
        C = self.num_classes
        mask = {"class": np.eye(C, dtype=bool), "cross": ~np.eye(C, dtype=bool),
                "both": np.ones((C, C), dtype=bool)}.get(part)
        if mask is None:
            raise ValueError(f"part must be 'class', 'cross' or 'both', got {part!r}")
        flat = torch.from_numpy(mask.ravel())
        D = self.means.reshape(C * C, -1)[flat]
        w = torch.as_tensor(self.weights.ravel()[mask.ravel()], dtype=D.dtype, device=D.device)
        keep = w > 0  # a group with no weight has no mean (δ set to 0): it adds nothing
        return D[keep], w[keep]


def class_structure(model: nn.Module, data: object, params: Iterable[str] | None = None,
                    num_classes: int | None = None) -> ClassStructure:
    """:class:`ClassStructure` of G for the mean softmax cross-entropy over ``data`` (an (x, y) pair or batches).

    Computed with one vmapped VJP of the logits per batch (C cotangents), model in eval mode, in the
    parameters' dtype. ``num_classes``: the number of logits (default: read from the first batch).
    """
    names = select_parameters(model, params)
    named = dict(model.named_parameters())
    selected = {n: named[n].detach() for n in names}
    sums: Tensor | None = None
    weights: np.ndarray | None = None
    total = 0
    with eval_mode(model):
        for batch in batch_source(data):
            x, y = batch
            dev = next(iter(selected.values())).device
            x, y = x.to(dev), y.to(dev)
            for c in torch.unique(y).tolist():
                xc = x[y == c]  # eval mode: each example's logits do not depend on the others in the batch

                def logits(p: dict[str, Tensor]) -> Tensor:
                    return functional_call(model, p, (xc,))

                # one pullback per true class, over that class's rows only: a pullback over the whole batch
                # with zero cotangents elsewhere costs C times the work and memory
                f, pullback = vjp(logits, selected)
                C = num_classes or f.shape[1]
                if f.shape[1] != C:
                    raise ValueError(f"the model has {f.shape[1]} logits but num_classes = {C}")
                if c < 0 or c >= C:
                    raise ValueError(f"labels must lie in 0..{C - 1}, got {int(y.min())}..{int(y.max())}")
                if sums is None:
                    dim = sum(t.numel() for t in selected.values())
                    sums = torch.zeros(C, C, dim, dtype=f.dtype, device=f.device)
                    weights = np.zeros((C, C))
                pc = torch.softmax(f.detach(), dim=1)                           # (m, C)
                eye = torch.eye(C, dtype=f.dtype, device=f.device)
                cot = pc.T[:, :, None] * (pc[None, :, :] - eye[:, None, :])     # label c': row i -> p_ic' (p_i − e_c')
                grads = torch.vmap(lambda u: pullback(u)[0])(cot)
                flat = torch.cat([grads[n].reshape(C, -1) for n in names], dim=1)  # (C, dim): Σ_i p_ic' g_ic'
                sums[c] += flat
                weights[c] += pc.sum(0).double().cpu().numpy()
            total += len(y)
    if sums is None:
        raise ValueError("data is empty: pass at least one (x, y) batch")
    W = weights / total
    denom = torch.as_tensor(np.where(weights > 0, weights, 1.0), dtype=sums.dtype, device=sums.device)
    means = (sums / denom[:, :, None]).detach()
    return ClassStructure(W, means, tuple(names), tuple(selected[n].numel() for n in names))


def restrict(cs: ClassStructure, names_or_indices: Sequence[str] | Tensor | np.ndarray) -> ClassStructure:
    """The class structure of a parameter subset: parameter names (in ``cs.params`` order) or flat indices."""
    if len(names_or_indices) and isinstance(names_or_indices[0], str):
        unknown = [n for n in names_or_indices if n not in cs.params]
        if unknown:
            raise ValueError(f"restrict: {unknown} are not among the structure's parameters {list(cs.params)}")
        offsets = np.concatenate([[0], np.cumsum(cs.sizes)])
        keep = [i for i, n in enumerate(cs.params) if n in names_or_indices]
        idx = torch.cat([torch.arange(offsets[i], offsets[i + 1]) for i in keep])
        params, sizes = tuple(cs.params[i] for i in keep), tuple(cs.sizes[i] for i in keep)
    else:
        idx = torch.as_tensor(np.asarray(names_or_indices), dtype=torch.long)
        params, sizes = ("<subset>",), (len(idx),)
    return ClassStructure(cs.weights, cs.means[..., idx.to(cs.means.device)], params, sizes)


class _Operator:
    """A symmetric linear operator given by its matvec, in the protocol of :mod:`htr_utils.lanczos`."""

    def __init__(self, matvec, dim: int, dtype: torch.dtype, device: torch.device, matmat=None) -> None:
        self._matvec, self._matmat, self.dim, self.dtype, self.device = matvec, matmat, dim, dtype, device

    def matvec(self, v: Tensor) -> Tensor:
        return self._matvec(torch.as_tensor(v, dtype=self.dtype, device=self.device))

    def matmat(self, V: Tensor) -> Tensor:
        V = torch.as_tensor(V, dtype=self.dtype, device=self.device)
        if self._matmat is not None:
            return self._matmat(V)
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], dim=1)

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v) if v.ndim == 1 else self.matmat(v)


def between_operator(cs: ClassStructure, part: str = "both") -> _Operator:
    """G_class ("class"), G_cross ("cross") or their sum ("both") as an operator: v ↦ Dᵀ (w ⊙ D v)."""
    D, w = cs.part_matrix(part)
    return _Operator(lambda v: D.T @ (w * (D @ v.to(D.dtype))), cs.dim, D.dtype, D.device,
                     matmat=lambda V: D.T @ (w[:, None] * (D @ V.to(D.dtype))))


def within_operator(ggn_op: CurvatureOperator, cs: ClassStructure) -> _Operator:
    """G_within = G − G_class − G_cross, with G's products from ``ggn_op`` (kind "ggn", same data and parameters)."""
    if ggn_op.kind != "ggn":
        raise ValueError(f"within_operator needs a 'ggn' operator, got kind {ggn_op.kind!r}")
    if ggn_op.dim != cs.dim:
        raise ValueError(f"the GGN operator has dim {ggn_op.dim} but the class structure {cs.dim}: build both on the "
                         "same parameters")
    between = between_operator(cs, "both")
    return _Operator(lambda v: ggn_op.matvec(v) - between.matvec(v).to(ggn_op.dtype), cs.dim, ggn_op.dtype,
                     ggn_op.device, matmat=lambda V: ggn_op.matmat(V) - between.matmat(V).to(ggn_op.dtype))


def subset_operator(op: object, indices: Sequence[int] | Tensor | np.ndarray) -> _Operator:
    """Pᵀ A P: the operator ``op`` restricted to the coordinates ``indices`` (distinct) of its flat vector."""
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
    if len(torch.unique(idx)) != len(idx) or len(idx) == 0 or idx.min() < 0 or idx.max() >= op.dim:
        raise ValueError(f"indices must be distinct coordinates in 0..{op.dim - 1}")
    idx = idx.to(op.device)

    def matvec(v: Tensor) -> Tensor:
        full = torch.zeros(op.dim, dtype=op.dtype, device=op.device)
        full[idx] = v.to(op.dtype)
        return op.matvec(full)[idx]

    return _Operator(matvec, len(idx), op.dtype, op.device)


def subspace_overlap(vectors: Tensor | np.ndarray, basis: Tensor | np.ndarray) -> float:
    """Mean over the columns u_k of ``vectors`` of ‖proj_span(basis) u_k‖² / ‖u_k‖², in [0, 1]."""
    U = torch.as_tensor(np.asarray(vectors) if not isinstance(vectors, Tensor) else vectors).double()
    B = torch.as_tensor(np.asarray(basis) if not isinstance(basis, Tensor) else basis).double()
    Q, R = torch.linalg.qr(B)
    keep = R.diagonal().abs() > 1e-12 * max(R.diagonal().abs().max().item(), 1e-300)
    Q = Q[:, keep]
    U = U / U.norm(dim=0, keepdim=True)
    return float(((Q.T @ U) ** 2).sum(0).mean())


def outliers_above(eigenvalues: Sequence[float] | np.ndarray, edge: float) -> int:
    """Number of eigenvalues strictly above ``edge``."""
    return int(np.sum(np.asarray(eigenvalues, dtype=float) > edge))
