"""Hutchinson traces and the differentiable trace penalty against dense expressions."""
import numpy as np
import pytest
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


@pytest.mark.parametrize("batched", [False, True])
def test_trace_penalty_value_and_gradient_match_dense(batched):
    p = make_problem(seed=2)
    model, x, y = p.model, p.x, p.y
    names = ["conv.weight", "fc1.weight"]
    params = [dict(model.named_parameters())[n] for n in names]
    gen = torch.Generator().manual_seed(0)
    probes = [[torch.randint(0, 2, q.shape, generator=gen).double() * 2 - 1 for q in params] for _ in range(3)]

    model.eval()
    loss = F.cross_entropy(model(x), y)
    pen = trace_penalty(loss, params, probes=probes, batched=batched)
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


def test_batched_penalty_equals_the_loop_and_falls_back(monkeypatch):
    import htr_utils.hutchinson as hu
    from htr_utils.study.models import build_model
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10, width=0.25).double()
    x, y = torch.randn(8, 1, 32, 32, dtype=torch.float64), torch.randint(0, 10, (8,))
    params = list(model.parameters())

    def penalty(**kw):
        loss = F.cross_entropy(model(x), y)
        pen = trace_penalty(loss, params, 3, generator=torch.Generator().manual_seed(1), **kw)
        return pen, torch.autograd.grad(pen, params)

    (a, ga), (b, gb) = penalty(), penalty(batched=True)
    assert abs(float((a - b).detach())) < 1e-10 * abs(float(a.detach())) and all(torch.allclose(u, v, rtol=1e-9) for u, v in zip(ga, gb))
    calls = []

    def no_batching(*args, **kwargs):  # torch without a batching rule: the loop must take over
        if kwargs.get("is_grads_batched"):
            calls.append(1)
            raise RuntimeError("Batching rule not implemented")
        return real_grad(*args, **kwargs)

    real_grad = torch.autograd.grad
    monkeypatch.setattr(hu.torch.autograd, "grad", no_batching)
    c, gc = penalty(batched=True)
    assert calls and float(c.detach()) == float(a.detach()) and all(torch.equal(u, v) for u, v in zip(ga, gc))
