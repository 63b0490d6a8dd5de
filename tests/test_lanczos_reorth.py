"""One Gram-Schmidt pass after the three-term recurrence (a second only where it cancelled) keeps the Lanczos basis
orthonormal to working precision, where plain Lanczos loses orthogonality and repeats Ritz values."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from htr_utils import lanczos_tridiagonal


class TensorOp:
    def __init__(self, A: torch.Tensor) -> None:
        self.A, self.dim, self.dtype, self.device = A, A.shape[0], A.dtype, A.device

    def matvec(self, v):
        return self.A @ v


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_basis_orthonormal_and_ritz_values_exact(dtype, tol):
    rng = np.random.default_rng(0)
    ev = np.concatenate([[100.0, 50.0, 20.0], rng.uniform(0, 1, 297)])  # outliers: plain Lanczos loses orthogonality
    U = np.linalg.qr(rng.standard_normal((300, 300)))[0]
    A = torch.as_tensor((U * ev) @ U.T, dtype=dtype)
    tri = lanczos_tridiagonal(TensorOp(A), 150, keep_basis=True)
    Q = tri.basis.double()
    assert float((Q @ Q.T - torch.eye(len(Q), dtype=torch.float64)).abs().max()) < tol
    theta = tri.eigh()[0]
    # each outlier appears once (no ghost copies) and to working precision
    for lam in (100.0, 50.0, 20.0):
        close = np.abs(theta - lam) < 1e-3 * lam
        assert close.sum() == 1 and abs(theta[close][0] - lam) < 100 * tol * lam
    # T = Qᵀ A Q
    T = np.diag(tri.alpha) + np.diag(tri.beta[:-1], 1) + np.diag(tri.beta[:-1], -1)
    np.testing.assert_allclose((Q @ A.double() @ Q.T).numpy(), T, atol=50 * tol * 100)
