"""Curvature matrices of a loss as linear operators: Hessian, Gauss-Newton (GGN) and residual.

For a loss L(θ) = (1/N) Σ_i ℓ(f(x_i; θ), y_i) over a data set and a subset θ_S of the
parameters (the others held fixed), the operator applies to a flat vector v one of

    hessian:   ∇²_S L · v
    ggn:       G v = (1/N) Σ_i J_iᵀ (∇²_f ℓ_i) J_i v         (J_i = ∂f(x_i)/∂θ_S)
    residual:  (∇²_S L − G) v

Hessian products are forward-over-reverse (``jvp`` of ``grad``). When the data is one
batch, ``torch.func.linearize`` traces the tangent map once and every later product
reuses it (about 1.2 gradients per product instead of 2.3); data given as several
batches is processed one batch at a time, so memory stays that of one batch. Where an
operation has no forward-mode rule, the operator falls back to reverse-over-reverse
(double backward) and warns once.

The model is always evaluated in eval mode (BatchNorm uses its running statistics,
Dropout is off): a curvature matrix of a random function is not what the paper studies.
The model's own mode is restored after every product.
"""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, linearize, vjp, vmap

KINDS = ("hessian", "ggn", "residual")
VMAP_BUDGET = 1024  # vectors x samples per vmapped call; see _vmapped

Batch = tuple[Tensor, Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put every submodule in eval mode for the block, then restore each one's own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def batch_source(data: Any) -> Iterable[Batch]:
    """A re-iterable source of ``(x, y)`` batches from one pair or an iterable of pairs.

    Lists and DataLoaders are iterated anew for every product (memory of one batch); a
    one-shot iterator is materialised so that every product sees the same data.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, Tensor) for t in data):
        data = [tuple(data)]
    elif isinstance(data, Iterator):
        data = list(data)
    elif not isinstance(data, Iterable):
        raise ValueError(f"data must be an (x, y) pair of tensors or an iterable of such pairs, got {type(data).__name__}.")
    if isinstance(data, list):
        data = [tuple(b) for b in data if len(b[0]) > 0]
    if hasattr(data, "__len__") and len(data) == 0:
        raise ValueError("data is empty: pass at least one (x, y) batch with one or more samples.")
    return data


def select_parameters(model: nn.Module, params: Iterable[str] | None) -> list[str]:
    """Names of the parameters the operator acts on (default: all trainable ones), in model order."""
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        if not trainable:
            raise ValueError("the model has no trainable parameters; pass params=[...] names explicitly.")
        return trainable
    if isinstance(params, str):
        params = [params]
    params = list(params)
    every = dict(model.named_parameters())
    unknown = [n for n in params if n not in every]
    if unknown:
        raise ValueError(f"unknown parameter name(s) {unknown}; valid names are: {list(every)}")
    if not params:
        raise ValueError("params is an empty list; pass None for all parameters or at least one name.")
    if len(set(params)) != len(params):
        raise ValueError(f"params lists a name twice: {params}")
    order = {n: i for i, n in enumerate(every)}
    return sorted(params, key=order.__getitem__)


class CurvatureOperator:
    """A symmetric curvature matrix of ``loss_fn(model(x), y)`` on a parameter subset, as a linear operator.

    ``dim`` is the number of selected scalars; ``matvec(v)`` takes and returns a flat vector
    of that length (the parameters' dtype and device), ``matmat(V)`` a ``(dim, k)`` matrix.
    ``loss_fn`` must return the mean over its batch (as ``nn.CrossEntropyLoss()`` does).
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Any, params: Iterable[str] | None = None,
                 kind: str = "hessian", cache: bool | None = None, vmap_chunk: int | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; choose one of {KINDS} (residual = hessian - ggn).")
        self.model, self.loss_fn, self.kind = model, loss_fn, kind
        self.param_names = select_parameters(model, params)
        named = dict(model.named_parameters())
        self._shapes = [named[n].shape for n in self.param_names]
        self._sizes = [named[n].numel() for n in self.param_names]
        self.dim = int(sum(self._sizes))
        self.dtype, self.device = named[self.param_names[0]].dtype, named[self.param_names[0]].device
        self._source = batch_source(data)
        # Linearised tangent maps are cached per batch only when asked or when there is one batch.
        single = isinstance(self._source, list) and len(self._source) == 1
        self.cache = single if cache is None else cache
        self._cached: list[dict[str, Any]] | None = None
        self._double_backward = False
        self.vmap_chunk = vmap_chunk  # vectors per vmapped call; None: VMAP_BUDGET // batch size

    # -- data -------------------------------------------------------------------------------
    def batches(self) -> Iterator[Batch]:
        """Iterate the data batch by batch, moved to the parameters' device."""
        for x, y in self._source:
            if len(x) > 0:
                yield x.to(self.device), y.to(self.device)

    # -- parameters -------------------------------------------------------------------------
    def split(self, v: Tensor) -> tuple[Tensor, ...]:
        """Cut a flat vector into tensors shaped like the selected parameters."""
        return tuple(c.view(s) for c, s in zip(torch.split(v, self._sizes), self._shapes))

    def flatten(self, tensors: Iterable[Tensor]) -> Tensor:
        """Concatenate parameter-shaped tensors into one flat vector."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def parameters_vector(self) -> Tensor:
        named = dict(self.model.named_parameters())
        return self.flatten(named[n].detach() for n in self.param_names)

    def _functions(self, x: Tensor, y: Tensor) -> tuple[Callable, Callable, tuple[Tensor, ...]]:
        """Closures theta_S -> logits and theta_S -> batch loss, with everything else fixed."""
        named = dict(self.model.named_parameters())
        fixed = {n: p.detach() for n, p in named.items() if n not in self.param_names}
        fixed.update({n: b for n, b in self.model.named_buffers()})
        primals = tuple(named[n].detach() for n in self.param_names)

        def logits_fn(theta: tuple[Tensor, ...]) -> Tensor:
            return functional_call(self.model, {**fixed, **dict(zip(self.param_names, theta))}, (x,))

        def loss_fn(theta: tuple[Tensor, ...]) -> Tensor:
            return self.loss_fn(logits_fn(theta), y)

        return logits_fn, loss_fn, primals

    # -- products ---------------------------------------------------------------------------
    def matvec(self, v: Tensor) -> Tensor:
        """Apply the operator to a flat vector of length ``dim``."""
        v = self._check_vector(v)
        return self._apply(v.unsqueeze(1)).squeeze(1)

    def matmat(self, V: Tensor) -> Tensor:
        """Apply the operator to every column of a ``(dim, k)`` matrix (products batched with vmap)."""
        if V.ndim != 2 or V.shape[0] != self.dim:
            raise ValueError(f"expected a matrix of shape ({self.dim}, k), got {tuple(V.shape)}.")
        return self._apply(V.to(self.dtype))

    def __matmul__(self, v: Tensor) -> Tensor:
        return self.matvec(v) if v.ndim == 1 else self.matmat(v)

    def _check_vector(self, v: Tensor) -> Tensor:
        if not isinstance(v, Tensor):
            v = torch.as_tensor(v)
        if v.ndim != 1 or v.numel() != self.dim:
            raise ValueError(f"expected a flat vector of length {self.dim} (op.dim), got shape {tuple(v.shape)}.")
        return v.to(self.dtype)

    def _apply(self, V: Tensor) -> Tensor:
        """Sum over batches of n_b/N times the batch operator applied to the columns of V."""
        V = V.to(self.device)
        tangents = tuple(t.movedim(-1, 0) for t in (c.view(*s, -1) for c, s in
                                                      zip(torch.split(V, self._sizes), self._shapes)))
        total, count = None, 0
        with eval_mode(self.model):
            for index, (x, y) in enumerate(self.batches()):
                out = self._batch_products(index, x, y, tangents)
                out = torch.cat([o.reshape(o.shape[0], -1) for o in out], dim=1) * len(x)
                total = out if total is None else total + out
                count += len(x)
        if count == 0:
            raise ValueError("data is empty: pass at least one (x, y) batch with one or more samples.")
        return (total / count).T.contiguous()

    def _batch_products(self, index: int, x: Tensor, y: Tensor, tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        """Products of one batch's mean-loss curvature with k tangents (leading dim k)."""
        maps = self._maps(index, x, y)
        if self.kind == "hessian":
            return maps["hvp"](tangents)
        ggn = maps["ggn"](tangents)
        if self.kind == "ggn":
            return ggn
        return tuple(h - g for h, g in zip(maps["hvp"](tangents), ggn))

    def _maps(self, index: int, x: Tensor, y: Tensor) -> dict[str, Callable]:
        if self.cache:
            if self._cached is None:
                self._cached = []
            if index < len(self._cached):
                return self._cached[index]
            maps = self._build_maps(x, y, linearized=True)
            self._cached.append(maps)
            return maps
        return self._build_maps(x, y, linearized=False)

    def _build_maps(self, x: Tensor, y: Tensor, linearized: bool) -> dict[str, Callable]:
        logits_fn, loss_fn, primals = self._functions(x, y)
        maps: dict[str, Callable] = {}
        if self.kind in ("hessian", "residual"):
            maps["hvp"] = self._hvp_map(loss_fn, primals, linearized)
        if self.kind in ("ggn", "residual"):
            maps["ggn"] = self._ggn_map(logits_fn, primals, y, linearized)
        chunk = self.vmap_chunk or max(1, VMAP_BUDGET // len(x))
        maps = {name: _vmapped(single, chunk) for name, single in maps.items()}
        return maps

    def _hvp_map(self, loss_fn: Callable, primals: tuple[Tensor, ...], linearized: bool) -> Callable:
        grad_fn = grad(loss_fn)
        if not self._double_backward:
            try:
                if linearized:
                    _, tangent_map = _quiet_linearize(grad_fn, primals)
                else:
                    def tangent_map(t): return jvp(grad_fn, (primals,), (t,))[1]
                tangent_map(tuple(torch.zeros_like(p) for p in primals))
                return tangent_map
            except (RuntimeError, NotImplementedError) as err:
                warnings.warn(f"forward-mode AD failed ({type(err).__name__}: {str(err)[:200]}); "
                              "falling back to double-backward Hessian-vector products.", stacklevel=3)
                self._double_backward = True
        _, pullback = vjp(grad_fn, primals)
        return lambda t: pullback(t)[0]

    def _ggn_map(self, logits_fn: Callable, primals: tuple[Tensor, ...], y: Tensor, linearized: bool) -> Callable:
        logits, pullback = vjp(logits_fn, primals)
        logits = logits.detach()
        out_grad = grad(lambda z: self.loss_fn(z, y))
        if not self._double_backward:
            try:
                push = (_quiet_linearize(logits_fn, primals)[1] if linearized
                        else (lambda t: jvp(logits_fn, (primals,), (t,))[1]))

                def out_hvp(u: Tensor) -> Tensor:  # ∇²_f ℓ u at the current logits: output-sized, cheap
                    return jvp(out_grad, (logits,), (u,))[1]
                out_hvp(push(tuple(torch.zeros_like(p) for p in primals)))
            except (RuntimeError, NotImplementedError) as err:
                warnings.warn(f"forward-mode AD failed ({type(err).__name__}: {str(err)[:200]}); "
                              "falling back to double-backward Gauss-Newton products.", stacklevel=3)
                self._double_backward = True
        if self._double_backward:
            # Reverse mode only: u -> Jᵀu is linear, so its own pullback is t -> J t; likewise
            # the pullback of ∇_f ℓ is ∇²_f ℓ (symmetric).
            _, pullback_of_pullback = vjp(lambda u: pullback(u)[0], torch.zeros_like(logits))
            _, out_pullback = vjp(out_grad, logits)

            def push(t): return pullback_of_pullback(t)[0]
            def out_hvp(u): return out_pullback(u)[0]

        def ggn(t: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            return pullback(out_hvp(push(t)))[0]
        return ggn

    # -- conveniences -----------------------------------------------------------------------
    def to_dense(self) -> Tensor:
        """The full ``(dim, dim)`` matrix, column by column (small operators only)."""
        return self.matmat(torch.eye(self.dim, dtype=self.dtype, device=self.device))

    def to_scipy(self) -> "scipy.sparse.linalg.LinearOperator":  # noqa: F821
        """A scipy LinearOperator view (float64 numpy in, float64 numpy out), e.g. for ``eigsh``."""
        from scipy.sparse.linalg import LinearOperator

        def mv(v: np.ndarray) -> np.ndarray:
            out = self.matvec(torch.as_tensor(np.ravel(v), dtype=self.dtype, device=self.device))
            return out.detach().cpu().double().numpy()

        def mm(V: np.ndarray) -> np.ndarray:
            out = self.matmat(torch.as_tensor(V, dtype=self.dtype, device=self.device))
            return out.detach().cpu().double().numpy()

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, matmat=mm, dtype=np.float64)

    def __repr__(self) -> str:
        return f"CurvatureOperator(kind={self.kind!r}, dim={self.dim}, params={len(self.param_names)} tensors)"


def _quiet_linearize(fn: Callable, primals: tuple[Tensor, ...]) -> tuple[Any, Callable]:
    """torch.func.linearize without the deprecation chatter of its internal tracing."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*get_attr Node.*")
        return linearize(fn, primals)


def _vmapped(single: Callable, chunk: int) -> Callable:
    """Map a product over a leading batch dimension of tangents: vmap over ``chunk`` at a time.

    vmap shares one pass over the data between several vectors, but its intermediates grow
    with vectors × samples; past about a thousand of those, a plain loop is faster on CPU.
    Falls back to the loop if vmap fails.
    """
    batched = vmap(single)
    state = {"vmap": chunk > 1}

    def loop(tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        outs = [single(tuple(t[i] for t in tangents)) for i in range(tangents[0].shape[0])]
        return tuple(torch.stack(o) for o in zip(*outs))

    def apply(tangents: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        k = tangents[0].shape[0]
        if k == 1 or not state["vmap"]:
            return loop(tangents)
        try:
            parts = [batched(tuple(t[i:i + chunk] for t in tangents)) for i in range(0, k, chunk)]
        except (RuntimeError, NotImplementedError):
            state["vmap"] = False
            return loop(tangents)
        return tuple(torch.cat(p) for p in zip(*parts))

    return apply


def hvp_operator(model: nn.Module, loss_fn: LossFn, data: Any, params: Iterable[str] | None = None,
                 kind: str = "hessian", cache: bool | None = None, vmap_chunk: int | None = None) -> CurvatureOperator:
    """Curvature operator of the mean loss over ``data`` w.r.t. ``params`` (names; None = all trainable).

    ``data``: an ``(x, y)`` pair or an iterable of ``(x, y)`` batches (the loss is the mean over
    all samples, batches weighted by size). ``kind``: "hessian", "ggn" or "residual".
    ``cache``: keep each batch's linearised tangent map between products (default: only
    for a single batch, whose memory is then that of one forward-and-backward pass).
    ``vmap_chunk``: how many vectors ``matmat`` pushes through one vmapped product
    (default: about 1024 / batch size; 1 = a plain loop).
    """
    return CurvatureOperator(model, loss_fn, data, params=params, kind=kind, cache=cache, vmap_chunk=vmap_chunk)
