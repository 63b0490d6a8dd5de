"""Hutch++ against exact traces (dense float64): unbiased, exact on low rank, more accurate than Hutchinson at equal
products where the spectrum decays, and right on a small network's Hessian."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils import hutchinson_trace, hutchpp_trace, hvp_operator
from htr_utils.dense import MatrixOperator, dense_hessian

pytestmark = pytest.mark.usefixtures("one_thread")


def with_spectrum(ev: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    U = np.linalg.qr(rng.standard_normal((len(ev), len(ev))))[0]
    A = (U * ev) @ U.T
    return (A + A.T) / 2


def test_exact_on_a_matrix_of_rank_below_a_third_of_the_products():
    ev = np.zeros(200)
    ev[:5] = [9.0, 4.0, -3.0, 2.0, 1.0]
    A = with_spectrum(ev)
    est = hutchpp_trace(MatrixOperator(torch.as_tensor(A)), 18, seed=3)  # r = 6 ≥ rank 5
    assert est.mean == pytest.approx(np.trace(A), abs=1e-10)
    assert est.stderr < 1e-10 and est.num_probes == 6


@pytest.mark.parametrize("decay", [0.5, 1.0, 2.0])
def test_unbiased_and_more_accurate_than_hutchinson_on_decaying_spectra(decay):
    """λ_i = i^(−decay), 150 of them, 30 products. With a slow decay (0.5) the top third holds too little of the
    trace for the sketch to pay for its 20 products, and Hutch++ is less accurate (measured); it is only unbiased."""
    ev = np.arange(1, 151, dtype=float) ** -decay
    A = with_spectrum(ev, seed=1)
    op, exact = MatrixOperator(torch.as_tensor(A)), float(np.trace(A))
    pp = np.array([hutchpp_trace(op, 30, seed=s).mean for s in range(300)])
    hu = np.array([hutchinson_trace(op, 30, seed=s).mean for s in range(300)])
    # unbiased: the mean of 300 independent estimates within 4 of its standard errors
    assert abs(pp.mean() - exact) < 4 * pp.std(ddof=1) / np.sqrt(len(pp))
    rms_pp, rms_hu = np.sqrt(np.mean((pp - exact) ** 2)), np.sqrt(np.mean((hu - exact) ** 2))
    assert (rms_pp < 0.7 * rms_hu) if decay >= 1 else (rms_pp > rms_hu)


def test_reported_stderr_matches_the_spread_of_estimates():
    A = with_spectrum(np.arange(1, 101, dtype=float) ** -1.0, seed=2)
    op, exact = MatrixOperator(torch.as_tensor(A)), float(np.trace(A))
    ests = [hutchpp_trace(op, 60, seed=s) for s in range(300)]
    z = np.array([(e.mean - exact) / e.stderr for e in ests])
    assert 0.7 < z.std() < 1.4  # the stderr given Q describes the actual error


def test_on_a_small_network_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x, y = torch.randn(40, 6, dtype=torch.float64), torch.randint(0, 3, (40,))
    H = dense_hessian(model, F.cross_entropy, x, y)
    exact = float(torch.trace(H))
    op = hvp_operator(model, F.cross_entropy, (x, y))
    full = hutchpp_trace(op, 3 * op.dim, seed=0)  # r = dim: Q spans everything, exact
    assert full.mean == pytest.approx(exact, rel=1e-9)
    ests = np.array([hutchpp_trace(op, 21, seed=s).mean for s in range(200)])
    assert abs(ests.mean() - exact) < 4 * ests.std(ddof=1) / np.sqrt(len(ests))


def test_bad_num_products():
    op = MatrixOperator(torch.eye(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_products"):
        hutchpp_trace(op, 2)
