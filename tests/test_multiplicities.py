"""top_eigenvalues finds repeated eigenvalues (block Lanczos) and returns eigenvectors, on operators with known spectra."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils import hvp_operator, lanczos, top_eigenvalues
from htr_utils.dense import MatrixOperator, dense_hessian, finite_difference_hessian


pytestmark = pytest.mark.usefixtures("one_thread")


def with_spectrum(eigenvalues, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n = len(eigenvalues)
    U = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))[0]
    ev = torch.as_tensor(eigenvalues, dtype=torch.float64)
    return ((U * ev) @ U.T).to(dtype), U, ev


def spectrum(top, rest, seed=1):
    gen = np.random.default_rng(seed)
    return np.concatenate([top, gen.uniform(-0.5, 0.5, rest)])


def assert_eigenpairs(A, values, Y, atol):
    """A y = λ y for each returned pair, and the vectors are orthonormal."""
    A, Y = A.double(), Y.double()
    assert torch.allclose(Y.T @ Y, torch.eye(Y.shape[1], dtype=torch.float64), atol=atol)
    R = A @ Y - Y * torch.as_tensor(values.copy())
    assert float(R.norm(dim=0).max()) < atol * float(torch.linalg.matrix_norm(A, 2))


def test_threefold_and_twofold_eigenvalues_are_found():
    ev = spectrum([5.0, 5.0, 5.0, 4.0, 4.0, 3.0], 194)
    A, U, _ = with_spectrum(ev)
    values, res, Y = top_eigenvalues(MatrixOperator(A), 6, return_residuals=True, return_vectors=True)
    np.testing.assert_allclose(values, [5, 5, 5, 4, 4, 3], rtol=1e-9)
    assert np.all(res <= 1e-6 * 5 * 1.0001)
    assert_eigenpairs(A, values, Y, 1e-6)
    # The three vectors for λ = 5 span the exact eigenspace: same orthogonal projector.
    order = np.argsort(-ev)
    E = U[:, torch.as_tensor(order[:3].copy())]
    assert torch.allclose(Y[:, :3] @ Y[:, :3].T, E @ E.T, atol=1e-6)


def test_multiplicity_larger_than_k_and_negative_spectrum():
    # λ = 2 four times; ask for 2: both copies are 2. Most of the spectrum negative.
    ev = np.concatenate([[2.0] * 4, [1.0], -np.linspace(0.1, 3.0, 95)])
    A, _, _ = with_spectrum(ev, seed=3)
    np.testing.assert_allclose(top_eigenvalues(MatrixOperator(A), 2), [2, 2], rtol=1e-9)
    np.testing.assert_allclose(top_eigenvalues(MatrixOperator(A), 5), [2, 2, 2, 2, 1], rtol=1e-9)


def test_block_size_one_is_single_vector_and_misses_copies():
    """Multiplicities are guaranteed up to block_size (documented); block_size=1 cannot see a second copy."""
    ev = spectrum([3.0, 3.0, 1.0], 47)
    A, _, _ = with_spectrum(ev, seed=4)
    values = top_eigenvalues(MatrixOperator(A), 2, block_size=1)
    assert values[0] == pytest.approx(3.0, rel=1e-9) and values[1] < 2.5
    np.testing.assert_allclose(top_eigenvalues(MatrixOperator(A), 2, block_size=2), [3, 3], rtol=1e-9)


def test_converges_without_the_whole_space_and_uses_matmat():
    ev = spectrum([50.0, 40.0, 40.0, 30.0], 396, seed=2)
    A, _, _ = with_spectrum(ev, seed=5)
    op = MatrixOperator(A)
    values, res = top_eigenvalues(op, 4, return_residuals=True)
    np.testing.assert_allclose(values, [50, 40, 40, 30], rtol=1e-9)
    assert np.all(res < 1e-4) and op.products < 200  # far fewer products than the dimension (400)


def test_restarts_keep_accuracy():
    """A small max_basis forces thick restarts; the answer is the same."""
    ev = np.concatenate([[10.0, 9.0, 9.0, 8.5], np.linspace(0, 8, 296)])
    A, _, _ = with_spectrum(ev, seed=6)
    op = MatrixOperator(A)
    values, Y = top_eigenvalues(op, 4, max_basis=12, return_vectors=True)
    np.testing.assert_allclose(values, [10, 9, 9, 8.5], rtol=1e-8)
    assert_eigenpairs(A, values, Y, 1e-5)


def test_float32_operator():
    ev = spectrum([4.0, 4.0, 2.0], 147)
    A, _, _ = with_spectrum(ev, dtype=torch.float32, seed=7)
    values, Y = top_eigenvalues(MatrixOperator(A), 3, return_vectors=True)
    np.testing.assert_allclose(values, [4, 4, 2], rtol=1e-5)
    assert Y.dtype == torch.float32
    assert_eigenpairs(A, values, Y, 1e-3)


def test_k_equal_to_dim_is_the_whole_spectrum():
    ev = np.array([3.0, 3.0, 1.0, -1.0, -1.0])
    A, _, _ = with_spectrum(ev, seed=8)
    np.testing.assert_allclose(top_eigenvalues(MatrixOperator(A), 5), [3, 3, 1, -1, -1], atol=1e-12)


def test_max_products_warns_and_returns_what_it_has():
    ev = np.linspace(0, 1, 300)  # no gap: slow convergence
    A, _, _ = with_spectrum(ev, seed=9)
    with pytest.warns(UserWarning, match="max_products"):
        values, res = top_eigenvalues(MatrixOperator(A), 3, max_products=9, tol=1e-12, return_residuals=True)
    assert len(values) == 3 and np.all(values <= 1 + 1e-12)


def test_linear_regression_with_three_outputs_has_threefold_eigenvalues():
    """Linear(d, 3, bias=False) with MSE: H = (2 / 3N) I₃ ⊗ XᵀX, every eigenvalue three times (the issue's case)."""
    torch.manual_seed(0)
    N, d = 20, 5
    model = nn.Linear(d, 3, bias=False).double()
    x, y = torch.randn(N, d, dtype=torch.float64), torch.randn(N, 3, dtype=torch.float64)
    H = dense_hessian(model, F.mse_loss, x, y)
    assert float((finite_difference_hessian(model, F.mse_loss, x, y) - H).norm() / H.norm()) < 1e-7
    closed = 2.0 / (3 * N) * torch.kron(torch.eye(3, dtype=torch.float64), x.T @ x)
    assert float((H - closed).norm() / closed.norm()) < 1e-13
    exact = np.sort(torch.linalg.eigvalsh(x.T @ x).numpy())[::-1] * 2.0 / (3 * N)
    op = hvp_operator(model, F.mse_loss, (x, y))
    values, Y = top_eigenvalues(op, 6, return_vectors=True)
    np.testing.assert_allclose(values, np.repeat(exact[:2], 3), rtol=1e-9)
    assert_eigenpairs(H, values, Y, 1e-6)


def test_lanczos_method_with_num_iters_is_the_slq_run(problem):
    """num_iters (without method) is one fixed single-vector run, whose Ritz values slq_density reports."""
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    ritz, _ = lanczos(op, 8, seed=2)
    np.testing.assert_array_equal(top_eigenvalues(op, 3, num_iters=8, seed=2), ritz[::-1][:3])
    values, Y = top_eigenvalues(op, 2, method="lanczos", return_vectors=True)
    H = problem.dense_hessian()
    exact = torch.linalg.eigvalsh(H).numpy()[::-1]
    np.testing.assert_allclose(values, exact[:2], rtol=1e-8)
    assert_eigenpairs(H, values, Y, 1e-6)


@pytest.mark.parametrize("k,match", [(0, "at least 1"), (2.0, "must be an integer"), (True, "must be an integer"),
                                     (10**6, "between 1 and op.dim")])
def test_bad_k(k, match):
    op = MatrixOperator(torch.eye(4, dtype=torch.float64))
    with pytest.raises(ValueError, match=match):
        top_eigenvalues(op, k)


def test_bad_options():
    op = MatrixOperator(torch.eye(40, dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown method"):
        top_eigenvalues(op, 2, method="arnoldi")
    with pytest.raises(ValueError, match="max_products"):
        top_eigenvalues(op, 2, method="block", num_iters=5)
    with pytest.raises(ValueError, match="max_basis"):
        top_eigenvalues(op, 4, max_basis=5)
    with pytest.raises(ValueError, match="tol"):
        top_eigenvalues(op, 2, tol=0)
