"""ggn_trace_penalty: unbiased for tr(G) (value and gradient), equal to tr(∇² loss) for piecewise-linear networks,
against dense float64 references; not equal to tr(H) for tanh."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils import ggn_trace_penalty, trace_penalty
from htr_utils.dense import dense_ggn, dense_hessian

pytestmark = pytest.mark.usefixtures("one_thread")


def problem(act: type[nn.Module], seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 7), act(), nn.Linear(7, 6), act(), nn.Linear(6, 4)).double()
    x, y = torch.randn(30, 5, dtype=torch.float64), torch.randint(0, 4, (30,))
    return model, x, y


def exact_ggn_trace(model, x) -> torch.Tensor:
    """tr(G) = (1/N) Σ_i Σ_c ‖J_iᵀ S_i e_c‖², per example and class (differentiable, no sampling)."""
    params = list(model.parameters())
    total = 0.0
    for i in range(len(x)):
        f = model(x[i:i + 1])[0]
        p = torch.softmax(f, 0)
        S = torch.diag(p.sqrt()) - torch.outer(p, p.sqrt())
        for c in range(len(f)):
            g = torch.autograd.grad(f, params, grad_outputs=S[:, c], create_graph=True)
            total = total + sum((gi ** 2).sum() for gi in g)
    return total / len(x)


def test_relu_network_hessian_trace_equals_ggn_trace_and_the_estimate_is_unbiased():
    model, x, y = problem(nn.ReLU)
    H = dense_hessian(model, F.cross_entropy, x, y)
    G = dense_ggn(model, F.cross_entropy, x, y)
    assert float(torch.trace(H)) == pytest.approx(float(torch.trace(G)), rel=1e-10)  # diagonal of ∇²f is zero
    assert float(torch.trace(H)) == pytest.approx(float(exact_ggn_trace(model, x)), rel=1e-10)
    est = ggn_trace_penalty(model(x), list(model.parameters()), num_probes=4000,
                            generator=torch.Generator().manual_seed(0), batched=True)
    single = np.array([float(ggn_trace_penalty(model(x), list(model.parameters()),
                                               generator=torch.Generator().manual_seed(s))) for s in range(300)])
    se = single.std(ddof=1) / np.sqrt(4000)
    assert abs(float(est) - float(torch.trace(H))) < 4 * se
    assert abs(single.mean() - float(torch.trace(H))) < 4 * single.std(ddof=1) / np.sqrt(300)


def test_gradient_is_unbiased_for_the_gradient_of_the_trace():
    model, x, _ = problem(nn.ReLU, seed=1)
    params = list(model.parameters())
    exact = torch.autograd.grad(exact_ggn_trace(model, x), params)
    exact = torch.cat([g.flatten() for g in exact])
    samples = []
    for s in range(400):
        g = torch.autograd.grad(ggn_trace_penalty(model(x), params, generator=torch.Generator().manual_seed(s)), params)
        samples.append(torch.cat([gi.flatten() for gi in g]))
    S = torch.stack(samples)
    z = (S.mean(0) - exact) / (S.std(0) / np.sqrt(len(S)) + 1e-12)
    assert float(z.abs().max()) < 5  # every coordinate within 5 standard errors (64 coordinates)
    assert float((S.mean(0) - exact).norm() / exact.norm()) < 0.1


def test_tanh_network_estimates_ggn_not_hessian():
    model, x, y = problem(nn.Tanh)
    trG = float(torch.trace(dense_ggn(model, F.cross_entropy, x, y)))
    trH = float(torch.trace(dense_hessian(model, F.cross_entropy, x, y)))
    ests = np.array([float(ggn_trace_penalty(model(x), list(model.parameters()), num_probes=20,
                                             generator=torch.Generator().manual_seed(s))) for s in range(100)])
    se = ests.std(ddof=1) / np.sqrt(len(ests))
    assert abs(ests.mean() - trG) < 4 * se and abs(trH - trG) > 10 * se


def test_batched_equals_loop_and_hutchinson_agrees_in_expectation():
    model, x, y = problem(nn.ReLU, seed=2)
    params = list(model.parameters())
    a = ggn_trace_penalty(model(x), params, 5, generator=torch.Generator().manual_seed(3), batched=True)
    b = ggn_trace_penalty(model(x), params, 5, generator=torch.Generator().manual_seed(3), batched=False)
    assert float(a) == pytest.approx(float(b), rel=1e-12)
    hut = np.array([float(trace_penalty(F.cross_entropy(model(x), y), params, 20,
                                        generator=torch.Generator().manual_seed(s))) for s in range(100)])
    trH = float(torch.trace(dense_hessian(model, F.cross_entropy, x, y)))
    assert abs(hut.mean() - trH) < 4 * hut.std(ddof=1) / 10


def test_bad_input():
    model, x, _ = problem(nn.ReLU)
    with pytest.raises(ValueError, match="logits"):
        ggn_trace_penalty(model(x)[:, 0], list(model.parameters()))
    with pytest.raises(ValueError, match="num_probes"):
        ggn_trace_penalty(model(x), list(model.parameters()), 0)


def grouped(model, x, groups: int) -> list[torch.Tensor]:
    return [model(c) for c in x.chunk(groups)]


def test_groups_are_unbiased_for_the_trace_and_cut_the_variance():
    model, x, y = problem(nn.ReLU, seed=3)
    params = list(model.parameters())
    trH = float(torch.trace(dense_hessian(model, F.cross_entropy, x, y)))
    trG = float(torch.trace(dense_ggn(model, F.cross_entropy, x, y)))
    assert trH == pytest.approx(trG, rel=1e-10)
    gen = torch.Generator().manual_seed(0)
    g5 = np.array([float(ggn_trace_penalty(grouped(model, x, 5), params, generator=gen)) for _ in range(400)])
    whole = np.array([float(ggn_trace_penalty(model(x), params, generator=gen)) for _ in range(400)])
    assert abs(g5.mean() - trH) < 4 * g5.std(ddof=1) / np.sqrt(len(g5))
    # per example (30 groups of one): only the within-example terms are left, and they are still unbiased
    g30 = np.array([float(ggn_trace_penalty(grouped(model, x, 30), params, generator=gen)) for _ in range(200)])
    assert abs(g30.mean() - trH) < 4 * g30.std(ddof=1) / np.sqrt(len(g30))
    assert g30.std() < g5.std() < whole.std()  # fewer cross terms between examples, less spread


def test_groups_gradient_is_unbiased_for_the_gradient_of_the_trace():
    model, x, _ = problem(nn.ReLU, seed=1)
    params = list(model.parameters())
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(exact_ggn_trace(model, x), params)])
    gen = torch.Generator().manual_seed(5)
    S = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
        ggn_trace_penalty(grouped(model, x, 3), params, generator=gen), params)]) for _ in range(400)])
    z = (S.mean(0) - exact) / (S.std(0) / np.sqrt(len(S)) + 1e-12)
    assert float(z.abs().max()) < 5
    assert float((S.mean(0) - exact).norm() / exact.norm()) < 0.1


def test_one_group_is_the_whole_batch_and_groups_follow_the_formula():
    model, x, _ = problem(nn.ReLU, seed=4)
    params = list(model.parameters())
    a = ggn_trace_penalty(model(x), params, 3, generator=torch.Generator().manual_seed(7))
    b = ggn_trace_penalty([model(x)], params, 3, generator=torch.Generator().manual_seed(7))
    assert float(a) == float(b)
    # two groups = (1/N) Σ_k Σ_probes ‖J_kᵀ S_k u‖² / m, each group's probes drawn in turn from the generator
    parts = grouped(model, x, 2)
    c = ggn_trace_penalty(parts, params, 3, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    n_k = [len(p) for p in parts]
    sums = [float(ggn_trace_penalty(p, params, 3, generator=gen)) * 3 * k for p, k in zip(grouped(model, x, 2), n_k)]
    assert float(c) == pytest.approx(sum(sums) / (3 * len(x)), rel=1e-12)


def test_groups_bad_input():
    model, x, _ = problem(nn.ReLU)
    params = list(model.parameters())
    with pytest.raises(ValueError, match="non-empty list"):
        ggn_trace_penalty([], params)
    with pytest.raises(ValueError, match="classes"):
        ggn_trace_penalty([model(x[:10]), model(x[10:])[:, :3]], params)
    with pytest.raises(ValueError, match="logits"):
        ggn_trace_penalty([model(x)[:, 0]], params)
