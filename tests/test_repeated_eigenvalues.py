"""top_eigenvalues finds every copy of a repeated eigenvalue, also when its eigenspace lies along coordinate axes.

Issue 32: with a ±1 starting block, the block restricted to an axis-aligned eigenspace is a small ±1
matrix, often singular, and the search returned [3, 3, 3, 2] for diag(3, 3, 3, 3, 2, …) with tiny
residuals. References are numpy.linalg.eigh in float64.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils import hvp_operator, top_eigenvalues
from htr_utils.dense import MatrixOperator, dense_hessian, finite_difference_hessian

pytestmark = pytest.mark.usefixtures("one_thread")

LAMBDA = np.array([3, 3, 3, 3, 2, 2, 1, 1, .5, .5, .2, .2])


@pytest.fixture(scope="module")
def diag_problem():
    """Bias-free Linear(12, 1), MSE over 12 inputs diag(√(6λ)): H = (2/12) XᵀX = diag(λ)."""
    model = nn.Linear(12, 1, bias=False).double()
    x = torch.diag(torch.sqrt(torch.tensor(6 * LAMBDA)))
    y = torch.zeros(12, 1, dtype=torch.float64)
    return model, x, y


def test_the_construction_gives_the_diagonal_hessian(diag_problem):
    model, x, y = diag_problem
    H = dense_hessian(model, F.mse_loss, x, y)
    assert float((H - finite_difference_hessian(model, F.mse_loss, x, y)).abs().max()) < 1e-6
    np.testing.assert_allclose(H.numpy(), np.diag(LAMBDA), atol=1e-13)
    op = hvp_operator(model, F.mse_loss, (x, y))
    np.testing.assert_allclose(op.matmat(torch.eye(12, dtype=torch.float64)).numpy(), np.diag(LAMBDA), atol=1e-13)


@pytest.mark.parametrize("k", range(1, 9))
def test_axis_aligned_repeated_eigenvalues_every_seed(diag_problem, k):
    model, x, y = diag_problem
    op = hvp_operator(model, F.mse_loss, (x, y))
    exact = np.linalg.eigh(np.diag(LAMBDA))[0][::-1][:k]
    for seed in range(25):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the default block size must not need a warning
            values, res, Y = top_eigenvalues(op, k, seed=seed, return_residuals=True, return_vectors=True)
        np.testing.assert_allclose(values, exact, atol=1e-10, err_msg=f"k={k}, seed={seed}")
        assert np.all(res < 1e-8)
        np.testing.assert_allclose((Y.T @ Y).numpy(), np.eye(k), atol=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_random_eigenvectors_with_repeated_eigenvalues(seed):
    rng = np.random.default_rng(seed)
    ev = np.concatenate([[5.0] * 3, [4.0] * 2, [3.5] * 4, rng.uniform(-1, 3, 51)])
    U = np.linalg.qr(rng.standard_normal((60, 60)))[0]
    A = (U * ev) @ U.T
    A = (A + A.T) / 2
    exact = np.linalg.eigh(A)[0][::-1]
    op = MatrixOperator(torch.as_tensor(A))
    for k in (1, 3, 4, 5, 7, 9, 10):
        values, Y = top_eigenvalues(op, k, seed=seed, return_vectors=True)
        np.testing.assert_allclose(values, exact[:k], atol=1e-9, err_msg=f"k={k}")
        R = torch.as_tensor(A) @ Y - Y * torch.as_tensor(values.copy())
        assert float(R.norm(dim=0).max()) < 1e-5 * 5


def test_axis_aligned_identity_block_in_a_larger_operator():
    """diag with a 6-fold top eigenvalue on the first axes and 200 other ones; k = 6 and 8."""
    d = np.concatenate([[2.0] * 6, [1.5], np.linspace(-1, 1, 200)])
    op = MatrixOperator(torch.diag(torch.as_tensor(d)))
    exact = np.sort(d)[::-1]
    for seed in range(5):
        for k in (6, 8):
            np.testing.assert_allclose(top_eigenvalues(op, k, seed=seed), exact[:k], atol=1e-9)


def test_converging_single_vector_lanczos_is_not_blind_to_e1_minus_e2():
    """Top eigenvector (e₁ − e₂)/√2: a ±1 start is orthogonal to it with probability 1/2, a Gaussian one never."""
    n = 30
    u = np.zeros(n)
    u[0], u[1] = 1 / np.sqrt(2), -1 / np.sqrt(2)
    A = np.diag(np.concatenate([[0.0, 0.0], np.linspace(0.1, 1, n - 2)])) + 5 * np.outer(u, u)
    op = MatrixOperator(torch.as_tensor(A))
    for seed in range(8):
        values = top_eigenvalues(op, 1, method="lanczos", seed=seed)
        assert values[0] == pytest.approx(5.0, rel=1e-9)


@pytest.mark.parametrize("copies", [2, 3, 4])
def test_small_block_is_right_or_warns_where_copies_may_be_missing(copies):
    """block_size=1 below the multiplicity: the fresh directions of the confirmation steps may find every copy;
    where the result is short of copies, a warning must say so (never silently wrong)."""
    values = np.array([3.0] * copies + [1.0, 0.5, 0.2, 0.1])
    want = values[: copies + 1]
    for seed in range(6):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = top_eigenvalues(MatrixOperator(torch.diag(torch.as_tensor(values))), copies + 1, block_size=1, seed=seed)
        right = np.allclose(got, want, rtol=1e-8)
        assert right or any("block_size >= k" in str(w.message) for w in caught), (seed, got)
