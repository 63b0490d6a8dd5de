"""A short, deterministic run of the model fuzzer (tests/fuzz_models.py; the long run is `make fuzz`).

SHORT_SEEDS are fixed cases that pass, chosen to cover the generator's families cheaply;
FIXED_DEFECTS are cases the fuzzer found wrong in an earlier library and that pass now (regressions);
KNOWN_DEFECTS are cases on which the library is still wrong, each a strict xfail, so that the test
fails (XPASS) once the defect is fixed: then move its seed to FIXED_DEFECTS. Every defect seed also
names the generator tag that makes it that case, so a change of the generator cannot silently turn
it into another case.
"""
from __future__ import annotations

import pytest
import torch

import fuzz_models
from fuzz_models import check_case, make_case, run_seed

# seed: what it covers (the generator's one-line description, abridged). Every one passes.
SHORT_SEEDS = {
    6: "tied Embedding/Linear weights, hand-written cross-entropy, float32, 3 uneven batches",
    8: "reduction='sum' must be rejected with a ValueError naming the sum",
    10: "MLP with PReLU, residual blocks, BatchNorm1d (eval), one layer's parameters, list of batches",
    12: "Huber, softplus MLP, float32, one frozen bias",
    14: "Conv2d + GroupNorm + GELU, Huber, float32, two batches",
    24: "Conv1d + GroupNorm, hand-written quartic loss, float32, batches of one",
    30: "Embedding without padding_idx, BCE with logits, two batches",
    33: "a NaN parameter must be rejected with a ValueError naming NaN",
    34: "Conv1d + BatchNorm1d + max pooling, MSE, float32, a DataLoader of batches of one",
    35: "Conv1d + GroupNorm + ReLU, log-cosh loss, one layer, a DataLoader",
    51: "nn.MultiheadAttention, smooth L1, the last bias only, a DataLoader",
    74: "ResNet basic block (BatchNorm2d eval), Huber, float32, uneven batches",
    81: "RNN, nn.CrossEntropyLoss, a frozen recurrent weight, uneven batches",
    30676: "LayerNorm(2) MLP, NLL of log-softmax, float32, a nearly flat loss: the float32 floor sets the tolerance",
    40375: "MLP, class-weighted nn.CrossEntropyLoss, float32, nearly flat: the floor sets the eigenvalues' tolerance",
}

# Cases on which the committed library was wrong until issue 32's fixes (each failed on the tree of
# 5062fd0 with lanczos.py of 57867e6^, and passes since): kept as regressions.
FIXED_DEFECTS = {
    0: ("embedding_padding_idx", "Embedding(padding_idx): operator was asymmetric (forward mode moved the padding row)"),
    39: ("old_function", "old-style autograd.Function (no setup_context): products crashed instead of falling back"),
    206: ("class_weights", "nn.CrossEntropyLoss(weight) over several class-sorted batches: batches were weighted by size"),
    308: ("class_weights", "class-weighted F.cross_entropy inside a function over several batches: a wrong operator "
                           "with a warning (now refused with a ValueError naming the remedies)"),
    380: ("negative_sum", "mse_loss(reduction='sum') was not rejected when the first batch held one sample"),
    71: ("negative_two_outputs", "kind='ggn' on a model returning a tuple: the loss's own TypeError instead of the "
                                 "promised ValueError"),
    47: ("onehot_linear", "top_eigenvalues missed a copy of a repeated eigenvalue on an axis-aligned eigenspace (GGN)"),
    486: ("onehot_linear", "top_eigenvalues missed a copy of a repeated eigenvalue on an axis-aligned eigenspace "
                           "(Hessian)"),
}

# Cases on which the library is still wrong (found by `make fuzz`): strict xfails, so that each one
# fails the suite (XPASS) once fixed; then move it to FIXED_DEFECTS. None at present.
KNOWN_DEFECTS: dict[int, tuple[str, str]] = {}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("seed", sorted(SHORT_SEEDS) + sorted(FIXED_DEFECTS))
def test_fuzz_case_passes(seed: int) -> None:
    outcome = run_seed(seed)
    assert outcome.status == "PASS", outcome.line()


@pytest.mark.parametrize("seed", [pytest.param(s, marks=pytest.mark.xfail(strict=True, reason=r))
                                  for s, (_, r) in sorted(KNOWN_DEFECTS.items())] or
                         [pytest.param(None, marks=pytest.mark.skip(reason="no known defect left"))])
def test_fuzz_known_defect(seed: int) -> None:
    outcome = run_seed(seed)
    assert outcome.status == "PASS", outcome.line()


@pytest.mark.parametrize("seed", sorted({**FIXED_DEFECTS, **KNOWN_DEFECTS}))
def test_defect_seeds_still_make_their_case(seed: int) -> None:
    tag = {**FIXED_DEFECTS, **KNOWN_DEFECTS}[seed][0]
    assert tag in make_case(seed).families, "the generator changed: find the defect's seed again with make fuzz"


def test_generator_is_deterministic() -> None:
    a, b = make_case(12345), make_case(12345)
    assert a.desc == b.desc
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    for (na, pa), (nb, pb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


@pytest.mark.parametrize(("seed", "dtype", "off"), [(10, torch.float64, 1e-6), (12, torch.float32, 1e-3)])
def test_checker_catches_a_slightly_wrong_operator(monkeypatch: pytest.MonkeyPatch, seed: int, dtype: torch.dtype,
                                                   off: float) -> None:
    """An operator off by a relative 100x / 10x the float64 / float32 tolerance must be reported, with its seed
    (in float32 the float32 floor must not absorb it)."""
    case = make_case(seed)
    assert case.dtype == dtype
    real = fuzz_models.hvp_operator

    class Scaled:
        def __init__(self, op):
            self.op, self.dim = op, op.dim

        def matvec(self, v):
            return self.op.matvec(v) * (1 + off)

        def matmat(self, V):
            return self.op.matmat(V) * (1 + off)

    monkeypatch.setattr(fuzz_models, "hvp_operator", lambda *a, **k: Scaled(real(*a, **k)))
    outcome = check_case(case)
    assert outcome.status == "FAIL" and f"seed={seed}" in outcome.line()
    assert any("matvec: relative error" in f for f in outcome.failures)


def test_reference_agrees_with_finite_differences() -> None:
    ref = fuzz_models.build_reference(make_case(10))
    assert all(e <= fuzz_models.FD_TOL for e in ref.fd_errors.values()), ref.fd_errors


def test_float32_floor_relaxes_only_nearly_flat_cases() -> None:
    """The float32 tolerance stays TOL on ordinary float32 cases (torch's own float32 double backward misses by
    far less than TOL / FLOOR_FACTOR) and rises only where float32 itself cannot do better (seeds 30676, 40375);
    likewise for the eigenvalues' tolerance."""
    for seed in (6, 12, 14, 24, 34, 74, 30676, 40375):
        case = make_case(seed)
        assert case.dtype == torch.float32
        ref = fuzz_models.build_reference(case)
        V = torch.randn(ref.dense["hessian"].shape[0], 3, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
        wants = {kind: A @ V for kind, A in ref.dense.items()}
        scale = max(float(wants["hessian"].norm()), float(wants["ggn"].norm()))
        dense32 = fuzz_models.float32_dense(case)
        worst = max(fuzz_models.product_floor(dense32, V, wants, scale).values())
        limit = fuzz_models.TOL[torch.float32] / fuzz_models.FLOOR_FACTOR
        assert (worst > limit) == (seed in (30676, 40375)), (seed, worst)
        if seed not in (30676, 40375):  # the eigenvalues' floor also stays under EIG_TOL / FLOOR_FACTOR
            A = ref.dense[case.eig_kind]
            size = max(float(torch.linalg.matrix_norm(ref.dense[kind], 2)) for kind in ("hessian", "ggn"))
            err = fuzz_models.eigen_floor(A, dense32[case.eig_kind], min(case.eig_k, A.shape[0]), size)
            assert err <= fuzz_models.EIG_TOL[torch.float32] / fuzz_models.FLOOR_FACTOR, (seed, err)


def test_a_batching_the_model_itself_refuses_is_skipped_not_blamed() -> None:
    """Seed 40293: GroupNorm over one value in a batch of one; torch's own forward raises, so the case is a SKIP."""
    outcome = run_seed(40293)
    assert outcome.status == "SKIP" and any("the model itself cannot evaluate batch 1" in n for n in outcome.notes)
