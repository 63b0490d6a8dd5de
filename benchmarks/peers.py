"""Thin adapters that call the peer libraries (curvlinops, PyHessian, hessian-eigenthings) on one problem.

Each ``make_*`` returns a zero-argument callable, or raises ``PeerMissing`` when the library is
not installed. Peers are only imported and called here; nothing is patched.
"""
from __future__ import annotations

import importlib
from importlib import metadata

import torch
from torch import nn

PEERS = {"curvlinops": "curvlinops-for-pytorch", "pyhessian": "pyhessian",
         "hessian_eigenthings": "hessian-eigenthings"}


class PeerMissing(Exception):
    """The peer library cannot be imported."""


def require(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise PeerMissing(f"{module} not installed") from err


def version(module: str) -> str:
    try:
        require(module)
        return metadata.version(PEERS[module])
    except (PeerMissing, metadata.PackageNotFoundError):
        return "not installed"


def _flat_to_list(v: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out, start = [], 0
    for p in params:
        out.append(v[start:start + p.numel()].view_as(p))
        start += p.numel()
    return out


# --- curvlinops ---------------------------------------------------------------------------------

def curvlinops_operator(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    cl = require("curvlinops")
    params = [p for p in model.parameters() if p.requires_grad]
    return cl.HessianLinearOperator(model, nn.CrossEntropyLoss(), params, [(x, y)], check_deterministic=False)


def curvlinops_hvp(model, x, y, v: torch.Tensor):
    A = curvlinops_operator(model, x, y)
    return lambda: A @ v


def curvlinops_slq(model, x, y, num_iters: int, kappa: float = 3.0, range_given: bool = False):
    """curvlinops' SLQ; ``range_given``: its spectral-range estimate is computed once, outside the timed call."""
    cl = require("curvlinops")
    A = curvlinops_operator(model, x, y)
    bounds = None
    if range_given:
        from curvlinops.papyan2020traces.spectrum import approximate_boundaries
        bounds = approximate_boundaries(A)
    return lambda: cl.lanczos_approximate_spectrum(A, num_iters, num_points=1024, num_repeats=1, kappa=kappa,
                                                   boundaries=bounds)


def curvlinops_trace(model, x, y, num_probes: int):
    trace = require("curvlinops")
    A = curvlinops_operator(model, x, y)
    return lambda: float(trace.hutchinson_trace(A, num_probes))


# --- PyHessian ----------------------------------------------------------------------------------

def pyhessian_object(model, x, y):
    ph = require("pyhessian")
    return ph.hessian(model, nn.CrossEntropyLoss(), data=(x, y), cuda=False)


def pyhessian_hvp(model, x, y, v: torch.Tensor):
    """One product on the stored gradient graph (PyHessian's single-batch path: marginal cost)."""
    utils = require("pyhessian.utils")
    h = pyhessian_object(model, x, y)
    vs = _flat_to_list(v, h.params)
    return lambda: utils.hessian_vector_product(h.gradsH, h.params, vs)


def pyhessian_slq(model, x, y, num_iters: int):
    h = pyhessian_object(model, x, y)
    return lambda: h.density(iter=num_iters, n_v=1)


# --- hessian-eigenthings ------------------------------------------------------------------------

def eigenthings_hvp(model, x, y, v: torch.Tensor):
    he = require("hessian_eigenthings")
    op = he.HessianOperator(model, [(x, y)], he.supervised_loss(nn.functional.cross_entropy))
    return lambda: op.matvec(v)


def release_grads(model: nn.Module) -> None:
    """PyHessian leaves .grad with a graph on the parameters; drop it."""
    for p in model.parameters():
        p.grad = None
