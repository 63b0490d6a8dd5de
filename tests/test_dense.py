"""The dense reference itself: closed forms for linear models, central finite differences for deep ones.

These tests do not use htr_utils.curvature's products, so a bug there cannot hide on both sides.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils.dense import dense_curvature, dense_ggn, dense_hessian, finite_difference_hessian

from conftest import make_problem, rel_err


def test_softmax_regression_matches_its_textbook_hessian():
    """Linear(d, C) + cross-entropy: H = (1/N) Σ_i A_i ⊗ u_i u_iᵀ, A_i = diag p_i − p_i p_iᵀ, u_i = [x_i; 1].

    With θ = (vec W row-major, b): the W-W block is mean kron(A, x xᵀ), W-b mean kron(A, x), b-b mean A.
    """
    torch.manual_seed(0)
    N, d, C = 9, 4, 3
    model = nn.Linear(d, C).double()
    x, y = torch.randn(N, d, dtype=torch.double), torch.randint(0, C, (N,))
    p = torch.softmax(model(x), dim=1).detach()
    A = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    ww = torch.stack([torch.kron(A[i], torch.outer(x[i], x[i])) for i in range(N)]).mean(0)
    wb = torch.stack([torch.kron(A[i], x[i][:, None]) for i in range(N)]).mean(0)
    expected = torch.cat([torch.cat([ww, wb], 1), torch.cat([wb.T, A.mean(0)], 1)], 0)
    assert rel_err(dense_hessian(model, F.cross_entropy, x, y), expected) < 1e-13
    assert rel_err(dense_ggn(model, F.cross_entropy, x, y), expected) < 1e-13  # linear model: G = Hess
    assert dense_curvature(model, F.cross_entropy, x, y, kind="residual").abs().max() < 1e-14


def test_linear_least_squares_matches_its_closed_form():
    """Linear(d, k, bias=False) + mean squared error over N·k entries: H = (2 / Nk) I_k ⊗ XᵀX."""
    torch.manual_seed(1)
    N, d, k = 8, 3, 3
    model = nn.Linear(d, k, bias=False).double()
    x, y = torch.randn(N, d, dtype=torch.double), torch.randn(N, k, dtype=torch.double)
    expected = 2.0 / (N * k) * torch.kron(torch.eye(k, dtype=torch.double), x.T @ x)
    assert rel_err(dense_hessian(model, F.mse_loss, x, y), expected) < 1e-13
    assert rel_err(dense_ggn(model, F.mse_loss, x, y), expected) < 1e-13


class NormNet(nn.Module):
    """LayerNorm and GELU between two Linear layers: the case where torch.func.hessian has gone wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.norm(self.fc1(x))))


@pytest.mark.parametrize("case", ["tiny_cnn_batchnorm", "layernorm_gelu"])
def test_dense_hessian_agrees_with_central_differences(case):
    if case == "tiny_cnn_batchnorm":
        prob = make_problem(seed=3)
        model, x, y = prob.model, prob.x, prob.y
    else:
        torch.manual_seed(2)
        model, x, y = NormNet().double(), torch.randn(6, 4, dtype=torch.double), torch.randint(0, 3, (6,))
    exact = dense_hessian(model, F.cross_entropy, x, y)
    assert rel_err(finite_difference_hessian(model, F.cross_entropy, x, y), exact) < 1e-7


def test_dense_reference_restores_the_model_mode():
    prob = make_problem(train_mode=True)
    dense_hessian(prob.model, F.cross_entropy, prob.x, prob.y)
    assert prob.model.training and prob.model.bn.training
