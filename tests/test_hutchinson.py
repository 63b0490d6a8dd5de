"""Hutchinson traces and the differentiable trace penalty against dense expressions."""
import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jacrev

from htr_utils import hutchinson_trace, hvp_operator, trace_penalty
from conftest import make_problem


def test_hutchinson_within_four_standard_errors(problem):
    exact = float(problem.dense_hessian().trace())
    for kind, dense in (("hessian", problem.dense_hessian()), ("ggn", problem.dense_ggn())):
        op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), kind=kind)
        est = hutchinson_trace(op, 400, seed=0)
        assert abs(est.mean - float(dense.trace())) < 4 * est.stderr, (kind, est)
    assert exact != 0


def test_hutchinson_stderr_shrinks_like_inverse_sqrt(problem):
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    small, large = hutchinson_trace(op, 100, seed=1), hutchinson_trace(op, 1600, seed=2)
    assert 2.5 < small.stderr / large.stderr < 6.5  # √16 = 4
    # The standard error estimates the true one: Var[zᵀAz] = 2 Σ_{i≠j} A_ij².
    A = problem.dense_hessian()
    true_sd = float(torch.sqrt(2 * ((A ** 2).sum() - (A.diagonal() ** 2).sum())))
    assert 0.7 < large.stderr * np.sqrt(1600) / true_sd < 1.3


def test_hutchinson_probe_batches_do_not_change_result(problem):
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    a, b = hutchinson_trace(op, 20, seed=4, batch_size=1), hutchinson_trace(op, 20, seed=4, batch_size=7)
    assert np.allclose(a.samples, b.samples, rtol=1e-10)


def test_trace_penalty_value_and_gradient_match_dense():
    p = make_problem(seed=2)
    model, x, y = p.model, p.x, p.y
    names = ["conv.weight", "fc1.weight"]
    params = [dict(model.named_parameters())[n] for n in names]
    gen = torch.Generator().manual_seed(0)
    probes = [[torch.randint(0, 2, q.shape, generator=gen).double() * 2 - 1 for q in params] for _ in range(3)]

    model.eval()
    loss = F.cross_entropy(model(x), y)
    pen = trace_penalty(loss, params, probes=probes)
    got_grad = torch.autograd.grad(pen, params)

    fixed = {n: q.detach() for n, q in model.named_parameters() if n not in names}
    fixed.update(dict(model.named_buffers()))

    def loss_of(theta):
        return F.cross_entropy(functional_call(model, {**fixed, **theta}, (x,)), y)

    def dense_penalty(theta):
        H = jacrev(jacrev(loss_of))(theta)  # reverse-over-reverse: torch.func.hessian is wrong through LayerNorm
        total = 0.0
        for z in probes:
            zd = dict(zip(names, z))
            total = total + sum((zd[a] * (H[a][b] * zd[b].reshape(*([1] * zd[a].ndim), *zd[b].shape))
                                 .sum(dim=tuple(range(zd[a].ndim, zd[a].ndim + zd[b].ndim)))).sum()
                                for a in names for b in names)
        return total / len(probes)

    theta = {n: q.detach() for n, q in zip(names, params)}
    want = dense_penalty(theta)
    want_grad = grad(dense_penalty)(theta)
    assert abs(float(pen.detach()) - float(want)) < 1e-10 * max(1.0, abs(float(want)))
    for n, g in zip(names, got_grad):
        assert float((g - want_grad[n]).norm() / want_grad[n].norm()) < 1e-9


def test_trace_penalty_is_unbiased(problem):
    model, x, y = problem.model, problem.x, problem.y
    model.eval()
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    vals = [float(trace_penalty(loss, params, 1, generator=torch.Generator().manual_seed(s)).detach())
            for s in range(300)]
    exact = float(problem.dense_hessian().trace())
    assert abs(np.mean(vals) - exact) < 4 * np.std(vals) / np.sqrt(len(vals))
