"""Lanczos with full reorthogonalisation, stochastic Lanczos quadrature and top eigenvalues.

m steps of Lanczos on a symmetric operator A from a unit start vector q₁ build an
orthonormal basis Q of the Krylov space and a tridiagonal T = Qᵀ A Q. The eigenvalues θ_j
of T (Ritz values) approximate A's extreme eigenvalues, and with τ_j = (first component of
T's j-th eigenvector)² the pairs (θ_j, τ_j) are the Gauss quadrature of the spectral measure
seen from q₁: q₁ᵀ g(A) q₁ ≈ Σ_j τ_j g(θ_j) (Golub & Meurant; Ubaru, Chen & Saad 2017).
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from torch import Tensor


CONFIRM_STEPS = 3  # block steps a converged top-k must survive before top_eigenvalues stops (see _top_block)
MIN_BLOCK = 3      # random directions per block step of top_eigenvalues' block method by default (see _top_block)

class LinearOperator(Protocol):
    dim: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, v: Tensor) -> Tensor: ...


@dataclass
class Tridiagonal:
    """Result of a Lanczos run: T's diagonal ``alpha``, off-diagonal ``beta`` and (optionally) the basis Q."""
    alpha: np.ndarray
    beta: np.ndarray
    basis: Tensor | None = None
    breakdown: bool = False

    def eigh(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues of T, ascending, and its eigenvectors (columns), in float64."""
        m = len(self.alpha)
        T = np.diag(self.alpha) + np.diag(self.beta[: m - 1], 1) + np.diag(self.beta[: m - 1], -1)
        return np.linalg.eigh(T)


def positive_int(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``name`` (floats and bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}.")
    return int(value)


def rademacher(dim: int, generator: torch.Generator | None, dtype: torch.dtype = torch.float64,
               device: torch.device | str = "cpu", count: int | None = None) -> Tensor:
    """Random ±1 entries, shape (dim,) or (dim, count), drawn on the CPU from ``generator`` (None: torch's global one).

    Probes are drawn one after another, so k probes at once equal k single draws.
    """
    shape = (1 if count is None else count, dim)
    z = torch.randint(0, 2, shape, generator=generator, dtype=torch.int8).to(dtype) * 2 - 1
    z = z.T.contiguous()
    return (z[:, 0] if count is None else z).to(device)


def gaussian(dim: int, generator: torch.Generator | None, dtype: torch.dtype = torch.float64,
             device: torch.device | str = "cpu", count: int = 1) -> Tensor:
    """Standard normal entries, shape (dim, count), drawn in float64 on the CPU from ``generator``.

    Starting blocks for eigenvectors are Gaussian, not ±1: a ±1 block restricted to an eigenspace
    spanned by coordinate axes is a small ±1 matrix, singular with high probability (a 4×4 one
    in 10 of 12 seeds), and a block Krylov space never sees more copies of an eigenvalue than
    that restriction's rank. A Gaussian restriction is nonsingular with probability 1.
    """
    Z = torch.randn((count, dim), generator=generator, dtype=torch.float64).T.contiguous()
    return Z.to(dtype).to(device)


def breakdown_tolerance(dtype: torch.dtype) -> float:
    """Relative residual norm below which the Krylov space counts as exhausted.

    It must sit above the rounding noise of the products: a residual made of noise,
    normalised, is no longer orthogonal to the basis, and the recurrence would go on
    producing spurious Ritz values (seen as a λ_max of 1496 for a GGN whose true λ_max is 4.4
    in float32). 50 machine epsilons, and at least 1e-10.
    """
    return max(1e-10, 50 * torch.finfo(dtype).eps)


class LanczosChain:
    """One Lanczos recurrence with full reorthogonalisation, fed one product A q at a time.

    Each step: α = qᵀw, the three-term recurrence w − αq − β q_prev, one classical Gram-Schmidt
    pass against the whole basis, and a second pass only where the first removed more than 30 %
    of w's norm (Kahan-Parlett).

    ``q`` is the vector whose product the chain needs next; :meth:`step` takes w = A q.
    The chain stops after ``num_iters`` steps or on breakdown: when the new residual's norm
    falls below ``tol`` times the largest |α| or |β| seen, the Krylov space is invariant.
    """

    def __init__(self, start: Tensor, num_iters: int, tol: float) -> None:
        self.q = start / start.norm()
        self.basis = torch.empty((num_iters, len(start)), dtype=start.dtype, device=start.device)
        self.alpha, self.beta = np.zeros(num_iters), np.zeros(num_iters)
        self.m, self.tol, self.scale = 0, tol, 0.0
        self.done = self.breakdown = False

    def step(self, w: Tensor) -> None:
        j = self.m
        self.basis[j] = self.q
        a = torch.dot(self.q, w)
        self.alpha[j] = float(a)
        # The three-term recurrence first (two axpys), so that the full Gram-Schmidt pass after it only
        # removes rounding-sized components: then one pass keeps Q orthonormal to working precision, and
        # the second pass (Kahan-Parlett, "twice is enough") is needed only where the pass cancelled
        # much of w. A second pass on every step read Q twice more and cost about as much as the product
        # on LeNet (two reads of a 128 x 61,706 basis per pass).
        w = w - a * self.q
        if j:
            w = w - self.beta[j - 1] * self.basis[j - 1]
        Q = self.basis[: j + 1]
        before = w.norm()
        w = w - Q.T @ (Q @ w)
        after = w.norm()
        if float(after) < 0.7 * float(before):
            w = w - Q.T @ (Q @ w)
            after = w.norm()
        self.beta[j] = float(after)
        self.scale = max(self.scale, abs(self.alpha[j]), self.beta[j])
        self.m = j + 1
        if self.m == len(self.alpha):
            self.done = True
        elif self.beta[j] <= self.tol * max(self.scale, 1e-300):
            self.done = self.breakdown = True
        else:
            self.q = w / self.beta[j]

    def result(self, keep_basis: bool = False) -> Tridiagonal:
        m = self.m
        return Tridiagonal(self.alpha[:m], self.beta[:m], self.basis[:m] if keep_basis else None, self.breakdown)


def lanczos_tridiagonal(op: LinearOperator, num_iters: int, start: Tensor | None = None, seed: int = 0,
                        keep_basis: bool = False, tol: float | None = None) -> Tridiagonal:
    """Run ``num_iters`` Lanczos steps with full reorthogonalisation (Gram-Schmidt applied twice).

    Stops early, cleanly, on breakdown (see :class:`LanczosChain`; ``tol`` defaults to
    :func:`breakdown_tolerance` of the operator's dtype), where T is exact.
    """
    num_iters = min(positive_int(num_iters, "num_iters"), op.dim)
    if start is None:
        start = rademacher(op.dim, torch.Generator().manual_seed(seed), op.dtype, op.device)
    elif not isinstance(start, Tensor) or start.shape != (op.dim,) or not bool(torch.isfinite(start).all()) \
            or not bool((start != 0).any()):
        raise ValueError(f"start must be a finite, nonzero tensor of shape ({op.dim},).")
    chain = LanczosChain(start.to(op.dtype).to(op.device), num_iters,
                         breakdown_tolerance(op.dtype) if tol is None else tol)
    while not chain.done:
        chain.step(op.matvec(chain.q))
    return chain.result(keep_basis)


def lanczos(op: LinearOperator, num_iters: int, seed: int = 0, start: Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ritz values (ascending) and their quadrature weights τ_j (summing to 1), from a Rademacher start.

    With ``num_iters >= dim`` (or on breakdown) the Ritz values are exact eigenvalues of ``op``.
    """
    tri = lanczos_tridiagonal(op, num_iters, start=start, seed=seed)
    evals, evecs = tri.eigh()
    return evals, evecs[0] ** 2


@dataclass
class SpectralDensity:
    """A smoothed spectral density φ(λ) on a grid, with the quadrature nodes/weights it came from.

    ``nodes`` and ``weights`` have one row per probe; each row's weights sum to 1, so the
    discrete measure (1/P) Σ_p Σ_j τ_pj δ(λ − θ_pj) estimates (1/n) Σ_i δ(λ − λ_i).
    """
    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float
    meta: dict = field(default_factory=dict)

    @property
    def atoms(self) -> tuple[np.ndarray, np.ndarray]:
        """All probes' nodes and weights as one discrete measure (weights sum to 1)."""
        return self.nodes.ravel(), self.weights.ravel() / self.weights.sum()

    def to_dict(self) -> dict:
        return {"grid": self.grid.tolist(), "density": self.density.tolist(), "nodes": self.nodes.tolist(),
                "weights": self.weights.tolist(), "sigma": self.sigma, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict) -> "SpectralDensity":
        return cls(np.asarray(d["grid"]), np.asarray(d["density"]), np.asarray(d["nodes"]),
                   np.asarray(d["weights"]), float(d["sigma"]), dict(d.get("meta", {})))


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """Σ_j τ_j N(λ; θ_j, σ²) on ``grid``, averaged over probes (rows), renormalised to integrate to 1."""
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    diff = grid[None, None, :] - nodes[:, :, None]
    dens = (weights[:, :, None] * np.exp(-0.5 * (diff / sigma) ** 2)).sum(axis=1).mean(axis=0)
    dens /= sigma * math.sqrt(2 * math.pi)
    area = np.trapezoid(dens, grid)
    return dens / area if area > 0 else dens


def slq_density(op: LinearOperator, num_iters: int = 128, num_probes: int = 1, seed: int = 0,
                grid_points: int = 1024, margin: float = 0.05, kappa: float = 1.25,
                sigma: float | None = None, bounds: tuple[float, float] | None = None) -> SpectralDensity:
    """Spectral density by stochastic Lanczos quadrature, smoothed with Gaussians.

    For each of ``num_probes`` Rademacher probes, ``num_iters`` Lanczos steps give nodes and
    weights; φ(λ) = (1/P) Σ_p Σ_j τ_pj N(λ; θ_pj, σ²) on ``grid_points`` points spanning the
    nodes' range (or ``bounds``) widened by ``margin`` on each side. Following the paper's
    settings, σ is set on the axis rescaled to [−1, 1] (margin included) from the node spacing
    h = 2/(m−1) of m Lanczos steps: σ = h / √(8 ln kappa), i.e. on the eigenvalue axis
    σ = range / ((m − 1) √(8 ln kappa)), unless ``sigma`` is given.
    """
    num_probes = positive_int(num_probes, "num_probes")
    positive_int(num_iters, "num_iters")
    positive_int(grid_points, "grid_points", minimum=2)
    gen = torch.Generator().manual_seed(seed)
    runs = [lanczos(op, num_iters, start=rademacher(op.dim, gen, op.dtype, op.device)) for _ in range(num_probes)]
    return density_from_runs(runs, grid_points=grid_points, margin=margin, kappa=kappa, sigma=sigma, bounds=bounds,
                             meta={"num_iters": num_iters, "num_probes": num_probes, "seed": seed, "dim": op.dim})


def density_from_runs(runs: list[tuple[np.ndarray, np.ndarray]], meta: dict | None = None,
                      **density_kw) -> SpectralDensity:
    """Density from several probes' (Ritz values, weights); ``meta["top"]``: the first probe's Ritz values, descending.

    Runs that stopped early (breakdown) are padded with zero-weight copies of their largest
    node, which leaves the measure unchanged.
    """
    width = max(len(theta) for theta, _ in runs)
    nodes, weights = np.zeros((len(runs), width)), np.zeros((len(runs), width))
    for p, (theta, tau) in enumerate(runs):
        nodes[p, : len(theta)], weights[p, : len(tau)] = theta, tau
        nodes[p, len(theta):] = theta[-1]
    meta = {**(meta or {}), "top": np.sort(runs[0][0])[::-1].tolist()}
    return density_from_quadrature(nodes, weights, meta=meta, **density_kw)


def density_from_quadrature(nodes: np.ndarray, weights: np.ndarray, grid_points: int = 1024, margin: float = 0.05,
                            kappa: float = 1.25, sigma: float | None = None,
                            bounds: tuple[float, float] | None = None, meta: dict | None = None) -> SpectralDensity:
    """Build a :class:`SpectralDensity` from Lanczos quadrature nodes/weights (one row per probe)."""
    lo, hi = bounds if bounds is not None else (float(nodes.min()), float(nodes.max()))
    span = max(hi - lo, 1e-12 * max(abs(lo), abs(hi), 1.0))
    lo, hi = lo - margin * span, hi + margin * span
    grid = np.linspace(lo, hi, grid_points)
    if sigma is None:
        m = max(nodes.shape[-1] if np.ndim(nodes) else 1, 2)
        sigma = (hi - lo) / ((m - 1) * math.sqrt(8 * math.log(kappa)))
    return SpectralDensity(grid, gaussian_density(nodes, weights, grid, sigma), np.atleast_2d(nodes),
                           np.atleast_2d(weights), float(sigma), dict(meta or {}))


def top_eigenvalues(op: LinearOperator, k: int, num_iters: int | None = None, seed: int = 0,
                    tol: float = 1e-6, return_residuals: bool = False, return_vectors: bool = False,
                    method: str | None = None, block_size: int | None = None, max_basis: int | None = None,
                    max_products: int | None = None):
    """The ``k`` largest eigenvalues of ``op`` (algebraically, descending), with their multiplicities.

    ``method="block"`` (the default): block Lanczos with full reorthogonalisation and thick
    restarts (block Rayleigh-Ritz): a Gaussian random block of ``block_size`` vectors (default ``max(k, 3)``)
    is extended by the residuals of the unconverged Ritz pairs, topped up with fresh Gaussian
    vectors to ``block_size`` columns as pairs converge, one ``op.matmat`` per step, until each of the top-k Ritz pairs has ‖A y − θ y‖ ≤ tol · max|θ| (tol is raised to at
    least 1000 machine epsilons of the operator's dtype, 1.2e-4 in float32: the products'
    rounding floor; the eigenvalue error is then about residual² / gap, or the residual within
    a cluster) and have stayed so for ``CONFIRM_STEPS`` more steps (a converged pair need not be
    the top one: a start that barely touches the top eigenvector converges to the next first; the
    extra steps and the default of at least 3 random directions make that rare, not impossible,
    as for every Krylov method). A random block of b vectors sees every
    eigenvalue of multiplicity up to b, so with the default every repeated eigenvalue among the
    k largest appears as often as it is repeated (single-vector Lanczos sees each distinct
    eigenvalue once); with a smaller ``block_size`` a warning says where a cluster may be short. The basis holds at most ``max_basis`` vectors (default max(6k, 2(k + b), 32)),
    after which it is restarted from the best Ritz vectors; ``max_products`` (default
    max(1000, 50k)) caps the work; reaching it, or ten steps without the largest residual
    falling by 10 %, stops with a warning. Memory: two ``(dim, max_basis)`` matrices.

    ``method="lanczos"``: single-vector Lanczos from a Gaussian start (seeded), ``max(4k, 32)``
    steps doubled until the top-k residual estimates β_m |e_mᵀ s| ≤ tol · max|θ| — or exactly
    ``num_iters`` steps from a Rademacher start when given, returning that run's Ritz values (the
    values ``slq_density`` reports in ``meta["top"]`` for the same seed; a ±1 start can be
    orthogonal to an eigenvector such as e₁ − e₂, and that run then misses its eigenvalue). Giving ``num_iters`` without
    ``method`` selects this method. It does not resolve multiplicities.

    Returns the eigenvalues (numpy, descending); with ``return_residuals`` and/or
    ``return_vectors`` a tuple ``(values, [residual norms], [eigenvectors])``, the eigenvectors
    as a ``(dim, k)`` tensor of orthonormal columns in the operator's dtype and device.
    """
    k = positive_int(k, "k")
    if k > op.dim:
        raise ValueError(f"k must be between 1 and op.dim = {op.dim}, got {k}.")
    if not (isinstance(tol, (int, float, np.floating)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}.")
    if method is None:
        method = "lanczos" if num_iters is not None else "block"
    if method == "lanczos":
        values, residuals, vectors = _top_lanczos(op, k, num_iters, seed, tol, return_vectors)
    elif method == "block":
        if num_iters is not None:
            raise ValueError("num_iters is a step count of method='lanczos'; for method='block' use max_products.")
        values, residuals, vectors = _top_block(op, k, seed, tol, block_size, max_basis, max_products)
    else:
        raise ValueError(f"unknown method {method!r}; choose 'block' (finds multiplicities) or 'lanczos'.")
    out = (values,) + ((residuals,) if return_residuals else ()) + ((vectors,) if return_vectors else ())
    return out[0] if len(out) == 1 else out


def _top_lanczos(op: LinearOperator, k: int, num_iters: int | None, seed: int, tol: float, vectors: bool):
    """Single-vector Lanczos: the top-k Ritz values, their residual estimates and (optionally) Ritz vectors."""
    if num_iters is not None:
        num_iters = positive_int(num_iters, "num_iters")
    m = num_iters if num_iters is not None else max(4 * k, 32)
    # A fixed num_iters is the SLQ run of the same seed (Rademacher start); the converging search starts
    # from a Gaussian vector, which (unlike ±1) is orthogonal to no eigenvector, e.g. e₁ − e₂, with probability 1.
    start = None if num_iters is not None else gaussian(op.dim, torch.Generator().manual_seed(seed), op.dtype,
                                                         op.device)[:, 0]
    while True:
        tri = lanczos_tridiagonal(op, m, start=start, seed=seed, keep_basis=vectors)
        evals, evecs = tri.eigh()
        residuals = abs(tri.beta[-1] * evecs[-1]) if not tri.breakdown else np.zeros_like(evals)
        converged = np.all(residuals[-k:] <= tol * max(abs(evals).max(), 1e-30))
        if num_iters is not None or converged or tri.breakdown or m >= op.dim:
            break
        m = min(2 * m, op.dim)
    if len(evals) < k:
        raise ValueError(f"Lanczos found only {len(evals)} distinct eigenvalues (the start vector's Krylov space "
                         f"is exhausted); ask for k <= {len(evals)}, or use method='block', which finds repeated ones.")
    Y = None
    if vectors:
        S = torch.as_tensor(evecs[:, ::-1][:, :k].copy(), dtype=op.dtype, device=op.device)
        Y = tri.basis.T @ S
    return evals[::-1][:k].copy(), residuals[::-1][:k].copy(), Y


def _extend_orthonormal(Q: Tensor, block: Tensor, drop: float) -> Tensor:
    """An orthonormal basis of the part of span(``block``) orthogonal to ``Q``, directions below ``drop`` discarded.

    Block classical Gram-Schmidt against Q (repeated where a column lost more than 30 % of its
    norm), then an orthonormalisation within the block from the eigendecomposition of its scaled
    Gram matrix (SVQB); the whole repeated when the block was ill-conditioned.
    A direction is discarded when less than ``drop`` of the block's (column-scaled) norm
    survives the projection. All matrix-matrix products.
    """
    norms = block.norm(dim=0)
    B = block[:, torch.isfinite(norms) & (norms > 0)]
    if B.shape[1] == 0:
        return block[:, :0]
    B = B / B.norm(dim=0)
    for _ in range(2):
        if Q.shape[1]:
            B = B - Q @ (Q.T @ B)
            if not bool((B.norm(dim=0) > 0.7).all()):   # lost much of its norm: project again (Kahan-Parlett)
                B = B - Q @ (Q.T @ B)
        scale = B.norm(dim=0)
        keep = scale > drop
        if not bool(keep.any()):
            return block[:, :0]
        B = B[:, keep] / scale[keep]
        gram = (B.T @ B).double()
        evals, evecs = torch.linalg.eigh((gram + gram.T) / 2)
        big = evals > drop ** 2 * float(evals.max())
        if not bool(big.any()):
            return block[:, :0]
        B = B @ (evecs[:, big] / evals[big].sqrt()).to(B.dtype)
        if float(evals[big].min()) > 0.25 * float(evals.max()):
            break  # well conditioned: the SVQB step amplified rounding by at most 2, no second pass needed
    return B


def _top_block(op: LinearOperator, k: int, seed: int, tol: float, block_size: int | None, max_basis: int | None,
               max_products: int | None):
    """Thick-restart block Lanczos (block Rayleigh-Ritz on an explicitly stored basis Q and its image A Q)."""
    n = op.dim
    # at least MIN_BLOCK random directions: one Gaussian start that barely touches the top eigenvector
    # lets the next one converge first (k = 1, float32, a 0.3 % gap: 5 of 300 seeds missed it with one
    # direction, 0 of 300 with three and CONFIRM_STEPS)
    b = min(positive_int(block_size, "block_size") if block_size is not None else max(k, MIN_BLOCK), n)
    cap = positive_int(max_basis, "max_basis") if max_basis is not None else max(6 * k, 2 * (k + b), 32)
    cap = min(cap, n)
    if cap < min(k + b, n):
        raise ValueError(f"max_basis must hold at least k + block_size = {k + b} vectors, got {cap}.")
    budget = positive_int(max_products, "max_products") if max_products is not None else max(1000, 50 * k)
    eps = torch.finfo(op.dtype).eps
    tol = max(float(tol), 1000 * eps)   # the products' rounding: residuals cannot go much lower
    drop = math.sqrt(eps)
    best, since = math.inf, 0           # stagnation: no 10 % gain in the largest residual for 10 steps
    confirmed, confirm = None, 0        # converged values, and the steps since that left them in place
    gen = torch.Generator().manual_seed(seed)
    Q = torch.zeros((n, 0), dtype=op.dtype, device=op.device)
    AQ, T = Q.clone(), np.zeros((0, 0))
    block = gaussian(n, gen, op.dtype, op.device, count=b)
    products, fresh = 0, b              # fresh: random directions injected so far (start block and refills)
    while True:
        new = _extend_orthonormal(Q, block, drop)
        if new.shape[1] < min(b, n - Q.shape[1]):  # directions fell into span(Q): top up from random ones
            more = _extend_orthonormal(torch.cat([Q, new], dim=1), gaussian(n, gen, op.dtype, op.device, count=b),
                                       drop)
            fresh += more.shape[1]
            new = torch.cat([new, more], dim=1)
        new = new[:, : min(b, n - Q.shape[1])]
        if new.shape[1] == 0:
            break
        W = _matmat(op, new)
        products += new.shape[1]
        cross = (Q.T @ W).double().cpu().numpy()       # Qᵀ A Q_new
        inner = (new.T @ W).double().cpu().numpy()     # Q_newᵀ A Q_new
        inner = (inner + inner.T) / 2
        T = np.block([[T, cross], [cross.T, inner]]) if T.size else inner
        Q, AQ = torch.cat([Q, new], dim=1), torch.cat([AQ, W], dim=1)
        theta, S = np.linalg.eigh(T)
        m = Q.shape[1]
        top = min(k, m)
        S_top = torch.as_tensor(S[:, m - top:][:, ::-1].copy(), dtype=op.dtype, device=op.device)
        values = theta[m - top:][::-1].copy()
        Y, AY = Q @ S_top, AQ @ S_top
        R = AY - Y * torch.as_tensor(values, dtype=op.dtype, device=op.device)
        residuals = R.norm(dim=0).double().cpu().numpy()
        scale = max(float(np.abs(theta).max()), 1e-300)
        converged = residuals <= tol * scale
        if m >= n:
            break
        if top == k and converged.all():
            # A converged pair need not be the top one: a start with little weight on the top
            # eigenvector converges to the next first (seen in float32 on a cluster 0.2552, 0.2544,
            # 0.2537). Stop only once CONFIRM_STEPS more steps have left the converged values in place.
            if confirmed is not None and np.abs(values - confirmed).max() <= tol * scale:
                confirm += 1
                if confirm >= CONFIRM_STEPS:
                    break
            else:
                confirmed, confirm = values.copy(), 0
        else:
            confirmed, confirm = None, 0
        worst = float(residuals.max()) / scale
        best, since = (worst, 0) if worst < 0.9 * best else (best, since + 1)
        if products >= budget or since >= 10:
            why = "max_products reached" if products >= budget else "the residuals stopped decreasing (rounding?)"
            warnings.warn(f"top_eigenvalues: {why} after {products} products; largest relative residual {worst:.1e} "
                          f"> tol {tol:.1e}. Returning the current Ritz pairs.", stacklevel=3)
            break
        # Next block: the residuals of the unconverged top Ritz pairs, largest first (soft locking), topped
        # up to b columns with fresh Gaussian vectors when pairs have converged: a block that shrank as
        # pairs locked would stop adding directions, and a copy of a repeated eigenvalue that the
        # starting block barely saw would never be found (its residual is not among the unconverged).
        todo = [j for j in range(top) if not converged[j]][:b]
        block = R[:, todo]
        if len(todo) < b:
            block = torch.cat([block, gaussian(n, gen, op.dtype, op.device, count=b - len(todo))], dim=1)
            fresh += b - len(todo)
        width = min(b, n - m)           # the next step adds at most this many vectors
        if m + width > cap:  # thick restart: keep the best Ritz vectors and their images (no products)
            keep = min(k + b, m, cap - width)
            S_keep = torch.as_tensor(S[:, m - keep:].copy(), dtype=op.dtype, device=op.device)
            Q, AQ, T = Q @ S_keep, AQ @ S_keep, np.diag(theta[m - keep:])
    if top < k:
        raise ValueError(f"op has only {Q.shape[1]} dimensions reachable; ask for k <= {Q.shape[1]}.")
    if Q.shape[1] < n:
        _warn_unseen_copies(values, fresh, max(tol * scale, 10 * eps * scale))
    return values, residuals, Y


def _warn_unseen_copies(values: np.ndarray, fresh: int, width: float) -> None:
    """Warn where a repeated eigenvalue may have more copies than the search could have seen.

    The basis is spanned by A's powers applied to ``fresh`` random directions; in exact arithmetic
    it holds at most ``fresh`` independent vectors of any one eigenspace. A cluster of c ≥ fresh
    returned copies (values within ``width``) followed by a smaller returned value may therefore
    be short of copies, and the smaller values wrong. With block_size ≥ k this cannot happen.
    """
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[i] - values[j + 1] <= width:
            j += 1
        c = j - i + 1
        if c >= fresh and j + 1 < len(values):
            warnings.warn(f"top_eigenvalues: λ ≈ {values[i]:.6g} was found {c} time(s), as many as the {fresh} random "
                          f"starting direction(s) can show; it may be repeated more often, and the smaller values "
                          f"be wrong. Use block_size >= k (the default).", stacklevel=4)
            return
        i = j + 1


def _matmat(op: LinearOperator, V: Tensor) -> Tensor:
    if hasattr(op, "matmat"):
        return op.matmat(V)
    return torch.stack([op.matvec(v) for v in V.T], dim=1)
