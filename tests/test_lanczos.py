"""Lanczos, top eigenvalues and SLQ against the exact eigenvalues of dense Hessians."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from htr_utils import (atoms_wasserstein, exact_spectrum_density, hvp_operator, lanczos, lanczos_tridiagonal,
                       slq_density, top_eigenvalues)
from htr_utils.dense import MatrixOperator
from conftest import make_problem


def test_lanczos_to_exhaustion_gives_exact_eigenvalues(problem):
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    exact = torch.linalg.eigvalsh(problem.dense_hessian()).numpy()
    ritz, weights = lanczos(op, op.dim, seed=3)
    # Every Ritz value is an exact eigenvalue ...
    assert np.abs(ritz[:, None] - exact[None, :]).min(axis=1).max() < 1e-8 * abs(exact).max()
    # ... and the extremes are found.
    assert abs(ritz[0] - exact[0]) < 1e-9 and abs(ritz[-1] - exact[-1]) < 1e-9
    assert np.all(np.diff(ritz) >= 0) and abs(weights.sum() - 1) < 1e-10 and np.all(weights >= 0)


def test_lanczos_breakdown_on_low_rank_operator():
    torch.manual_seed(0)
    U = torch.linalg.qr(torch.randn(50, 4, dtype=torch.double))[0]
    A = U @ torch.diag(torch.tensor([5.0, 2.0, -1.0, 0.5], dtype=torch.double)) @ U.T
    tri = lanczos_tridiagonal(MatrixOperator(A), 50)
    assert tri.breakdown and len(tri.alpha) <= 5  # 4 nonzero eigenvalues + the null space
    ritz, _ = lanczos(MatrixOperator(A), 50)
    assert np.allclose(sorted(ritz[np.abs(ritz) > 1e-8]), [-1.0, 0.5, 2.0, 5.0], atol=1e-10)


def test_lanczos_keeps_basis_orthonormal_in_float32():
    torch.manual_seed(0)
    M = torch.randn(300, 300)
    A = (M + M.T) / 2
    tri = lanczos_tridiagonal(MatrixOperator(A), 120, keep_basis=True)
    Q = tri.basis.double()
    assert (Q @ Q.T - torch.eye(len(Q), dtype=torch.double)).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_top_eigenvalues_equal_k_largest(problem, kind):
    dense = problem.dense_hessian() if kind == "hessian" else problem.dense_ggn()
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), kind=kind)
    exact = torch.linalg.eigvalsh(dense).numpy()[::-1]
    top = top_eigenvalues(op, 3)
    assert np.allclose(top, exact[:3], rtol=1e-8, atol=1e-10)


def test_top_eigenvalues_converge_without_full_space():
    torch.manual_seed(1)
    U = torch.linalg.qr(torch.randn(400, 400, dtype=torch.double))[0]
    ev = torch.cat([torch.tensor([50.0, 40.0, 30.0], dtype=torch.double), torch.rand(397, dtype=torch.double)])
    A = U @ torch.diag(ev) @ U.T
    top, res = top_eigenvalues(MatrixOperator(A), 3, return_residuals=True)
    assert np.allclose(top, [50, 40, 30], rtol=1e-9) and np.all(res < 1e-4)


def test_slq_density_close_to_exact_spectrum():
    """SLQ's quadrature measure is within W1 < 0.05 * spectral range of the exact one (stated bound)."""
    p = make_problem(seed=1, n=20)
    op = hvp_operator(p.model, F.cross_entropy, (p.x, p.y))
    exact = torch.linalg.eigvalsh(p.dense_hessian()).numpy()
    dens = slq_density(op, num_iters=30, num_probes=8, seed=0)
    truth = exact_spectrum_density(exact)
    span = exact.max() - exact.min()
    assert atoms_wasserstein(dens, truth) < 0.05 * span
    assert abs(np.trapezoid(dens.density, dens.grid) - 1) < 1e-8
    assert dens.grid.shape == (1024,) and dens.nodes.shape[0] == 8
    # The smoothed density puts its mass where the eigenvalues are.
    mean_slq = np.trapezoid(dens.grid * dens.density, dens.grid)
    assert abs(mean_slq - exact.mean()) < 0.05 * span


def test_slq_is_reproducible_with_seed(problem):
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    a, b = slq_density(op, 20, 2, seed=5), slq_density(op, 20, 2, seed=5)
    assert np.array_equal(a.density, b.density)
    c = slq_density(op, 20, 2, seed=6)
    assert not np.array_equal(a.nodes, c.nodes) or not np.array_equal(a.weights, c.weights)


def test_bad_k(problem):
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y))
    with pytest.raises(ValueError, match="k must be"):
        top_eigenvalues(op, 0)


def test_float32_lanczos_past_exhaustion_invents_no_eigenvalues():
    """float32 GGN of rank <= N(C-1) = 90 with 128 steps: stop at exhaustion like float64 does.

    With a breakdown threshold below float32's rounding noise, the recurrence went on with
    noise and produced spurious Ritz values (here 104 instead of 92).
    """
    import copy
    from htr_utils.study.data import class_balanced_subset, load_dataset
    from htr_utils.study.models import build_model
    torch.manual_seed(0)
    model = build_model("lenet", 1, 10, width=0.5).eval()
    x, y = class_balanced_subset(load_dataset("digits"), 1, seed=0)
    r32, _ = lanczos(hvp_operator(model, F.cross_entropy, (x, y), kind="ggn"), 128)
    r64, _ = lanczos(hvp_operator(copy.deepcopy(model).double(), F.cross_entropy, (x.double(), y), kind="ggn"), 128)
    assert len(r64) < 100 and len(r32) <= len(r64) + 3
    assert abs(r32.max() - r64.max()) < 1e-4 * r64.max()
