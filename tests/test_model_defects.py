"""Issue 32: models and losses where torch.func's answer is wrong or missing, against torch.autograd double backward.

References are dense float64 matrices built here with torch.autograd (create_graph=True), not with
torch.func, and the Hessian is checked against central finite differences of torch's own gradient
(the Hessian of the loss torch differentiates: for nn.Embedding(padding_idx=...) its padding row's
gradient is zero).
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import rel_err
from htr_utils import hvp_operator

TOL = 1e-10
pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------- dense references (torch.autograd only)

def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _flat(tensors, like) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if t is None else t).reshape(-1) for t, p in zip(tensors, like)])


def autograd_gradient(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    params = _params(model)
    return _flat(torch.autograd.grad(loss_fn(model(x), y), params, allow_unused=True), params)


def autograd_hessian(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    params = _params(model)
    g = _flat(torch.autograd.grad(loss_fn(model(x), y), params, create_graph=True), params)
    return torch.stack([_flat(torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True), params)
                        for i in range(len(g))])


def autograd_ggn(model: nn.Module, loss_fn, x, y) -> torch.Tensor:
    """Jᵀ (∇²_f L) J with J's rows and ∇²_f L by torch.autograd."""
    params = _params(model)
    out = model(x)
    flat = out.reshape(-1)
    J = torch.stack([_flat(torch.autograd.grad(flat[k], params, retain_graph=True, allow_unused=True), params)
                     for k in range(flat.numel())])
    z = out.detach().requires_grad_(True)
    gz = torch.autograd.grad(loss_fn(z, y), z, create_graph=True)[0].reshape(-1)
    H_f = torch.stack([torch.autograd.grad(gz[k], z, retain_graph=True)[0].reshape(-1) for k in range(gz.numel())])
    return J.T @ H_f @ J


def padding_rows(model: nn.Module) -> torch.Tensor:
    """Flat mask of the padding rows of every nn.Embedding(padding_idx=...) among the trainable parameters."""
    masks = []
    for p in _params(model):
        mask = torch.zeros_like(p, dtype=torch.bool)
        for m in model.modules():
            if isinstance(m, nn.Embedding) and m.padding_idx is not None and m.weight is p:
                mask[m.padding_idx] = True
        masks.append(mask.reshape(-1))
    return torch.cat(masks)


def check_against_finite_differences(model: nn.Module, loss_fn, x, y, H: torch.Tensor) -> None:
    """H v against the central difference of torch's gradient along v (h = 1e-5).

    torch's gradient of a padding row is zero whatever the parameters, while that row still enters
    the forward pass: the loss torch differentiates treats it as a constant. So the Hessian's padding
    rows and columns must be zero, and the difference runs along directions that keep that row fixed.
    """
    params = _params(model)
    pad = padding_rows(model)
    assert float(H[pad].abs().sum()) == 0.0 and float(H[:, pad].abs().sum()) == 0.0
    v = torch.randn(H.shape[0], dtype=torch.double, generator=torch.Generator().manual_seed(5))
    v[pad] = 0.0
    base = [p.detach().clone() for p in params]
    sides = []
    for sign in (1, -1):
        with torch.no_grad():
            offset = 0
            for p, b in zip(params, base):
                p.copy_(b + sign * 1e-5 * v[offset:offset + p.numel()].view_as(p))
                offset += p.numel()
        sides.append(autograd_gradient(model, loss_fn, x, y))
    with torch.no_grad():
        for p, b in zip(params, base):
            p.copy_(b)
    assert rel_err(H @ v, (sides[0] - sides[1]) / 2e-5) < 1e-6


def reference(model, loss_fn, x, y) -> dict[str, torch.Tensor]:
    H = autograd_hessian(model, loss_fn, x, y)
    check_against_finite_differences(model, loss_fn, x, y, H)
    G = autograd_ggn(model, loss_fn, x, y)
    return {"hessian": H, "ggn": G, "residual": H - G}


# --------------------------------------------------------------------------- 1. Embedding(padding_idx)

class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(6, 3, padding_idx=0)


class Tokens(nn.Module):
    """The issue's model with the embedding one level down, so that its path is 'enc.emb'."""

    def __init__(self) -> None:
        super().__init__()
        self.enc, self.fc = Encoder(), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.enc.emb(x).flatten(1))


def _tokens(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Embedding(6, 3, padding_idx=0), nn.Flatten(), nn.Linear(12, 3)).double()
    with torch.no_grad():
        model[0].weight[0].normal_()  # a non-zero padding row: its forward contribution is not zero
    x, y = torch.randint(0, 6, (8, 4)), torch.randint(0, 3, (8,))
    x[:, 0] = 0  # the padding index occurs
    return model, x, y


@pytest.mark.parametrize("kind", ["hessian", "ggn", "residual"])
@pytest.mark.parametrize("batches", ["one", "several"])
def test_embedding_padding_idx_is_double_backward(kind, batches):
    model, x, y = _tokens()
    want = reference(model, F.cross_entropy, x, y)[kind]
    data = (x, y) if batches == "one" else [(x[:3], y[:3]), (x[3:], y[3:])]
    with pytest.warns(UserWarning, match=r"Embedding with padding_idx at '0'"):
        op = hvp_operator(model, F.cross_entropy, data, kind=kind)
    A = op.to_dense()
    assert rel_err(A, want) < TOL
    assert float((A - A.T).abs().max()) < 1e-12
    V = torch.randn(op.dim, 3, dtype=torch.double)
    assert rel_err(op.matmat(V), want @ V) < TOL


def test_frozen_padding_embedding_keeps_forward_mode():
    """Only a selected padding embedding weight is a problem: the linear layer's block runs as usual."""
    model, x, y = _tokens()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = hvp_operator(model, F.cross_entropy, (x, y), params=["2.weight", "2.bias"])
        op.matvec(torch.randn(op.dim, dtype=torch.double))
    assert not op._autograd


def test_symmetry_check_catches_and_names_the_embedding():
    """Defence in depth: with the known-defect list bypassed, the build-time symmetry check finds the embedding."""
    torch.manual_seed(1)
    model = Tokens().double()
    x, y = torch.randint(0, 6, (8, 4)), torch.randint(0, 3, (8,))
    x[:, 1] = 0
    want = reference(model, F.cross_entropy, x, y)
    for kind in ("hessian", "ggn"):
        with pytest.warns(UserWarning, match="padding_idx at 'enc.emb'"):
            op = hvp_operator(model, F.cross_entropy, (x, y), kind=kind)
        op._autograd, op._warned = False, set()   # as if the defect were unknown: forward mode is tried
        with pytest.warns(UserWarning, match=r"not symmetric.*Embedding with padding_idx at 'enc.emb'"):
            A = op.to_dense()
        assert rel_err(A, want[kind]) < TOL


class WrongTangentCube(torch.autograd.Function):
    """x³ with a right backward (3x² g) and a deliberately wrong forward-mode rule (2x² t)."""

    @staticmethod
    def forward(x):
        return x ** 3

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])
        ctx.save_for_forward(inputs[0])

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 3 * x ** 2 * g

    @staticmethod
    def jvp(ctx, t):
        x, = ctx.saved_tensors
        return 2 * x ** 2 * t


class CubeNet(nn.Module):
    def __init__(self, cube) -> None:
        super().__init__()
        self.a, self.b, self.cube = nn.Linear(4, 5), nn.Linear(5, 3), cube

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.cube.apply(torch.tanh(self.a(x))))


def cube_problem(cube: type, seed: int, n: int, split: int, kind: str, batches: str):
    """CubeNet(cube) in float64 on n random samples: (operator over one batch or two split at ``split``, the
    dense float64 reference of ``kind``)."""
    torch.manual_seed(seed)
    model = CubeNet(cube).double()
    x, y = torch.randn(n, 4, dtype=torch.double), torch.randint(0, 3, (n,))
    data = (x, y) if batches == "one" else [(x[:split], y[:split]), (x[split:], y[split:])]
    return hvp_operator(model, F.cross_entropy, data, kind=kind), reference(model, F.cross_entropy, x, y)[kind]


@pytest.mark.parametrize("kind", ["hessian", "ggn"])
@pytest.mark.parametrize("batches", ["one", "several"])
def test_symmetry_check_catches_a_wrong_forward_rule(kind, batches):
    op, want = cube_problem(WrongTangentCube, 2, 8, 5, kind, batches)
    with pytest.warns(UserWarning, match=r"not symmetric.*the model \(CubeNet\)"):
        A = op.to_dense()
    assert rel_err(A, want) < TOL


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetry_check_is_quiet_on_right_models(dtype):
    """No false alarm from rounding: a smooth model in both dtypes keeps its forward-mode products."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 8), nn.GELU(), nn.Linear(8, 4)).to(dtype)
    x, y = torch.randn(32, 6, dtype=dtype), torch.randint(0, 4, (32,))
    for kind in ("hessian", "ggn", "residual"):
        for data in ((x, y), [(x[:20], y[:20]), (x[20:], y[20:])]):
            with warnings.catch_warnings():
                warnings.simplefilter("error", UserWarning)
                op = hvp_operator(model, F.cross_entropy, data, kind=kind)
                op.matvec(torch.randn(op.dim, dtype=dtype))
            assert op._symmetry_checked and not op._autograd


# --------------------------------------------------------------------------- 3. old-style autograd.Function

class OldCube(torch.autograd.Function):
    """x³ in the old style (forward(ctx, ...), no setup_context): torch.func cannot transform it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        x, = ctx.saved_tensors
        return 3 * x ** 2 * g  # differentiable: double backward works


@pytest.mark.parametrize("kind", ["hessian", "ggn", "residual"])
@pytest.mark.parametrize("batches", ["one", "several"])
def test_old_style_function_falls_back_to_autograd(kind, batches):
    op, want = cube_problem(OldCube, 4, 9, 4, kind, batches)
    V = torch.randn(op.dim, 3, dtype=torch.double)
    with pytest.warns(UserWarning, match="torch.func cannot differentiate.*setup_context"):
        got = op.matmat(V)
    assert rel_err(got, want @ V) < TOL
    assert rel_err(op.matvec(V[:, 0]), want @ V[:, 0]) < TOL   # again, on the kept (or rebuilt) maps
    with torch.no_grad():   # products do not depend on the caller's grad mode
        assert rel_err(op.matvec(V[:, 1]), want @ V[:, 1]) < TOL


# --------------------------------------------------------------------------- 2. weighted and ignoring losses

def _sorted_by_class(seed: int = 6, n: int = 24, classes: int = 3):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, classes)).double()
    x = torch.randn(n, 5, dtype=torch.double)
    y = torch.arange(classes).repeat_interleave(n // classes)   # sorted: one class per batch below
    return model, x, y


WEIGHTED_LOSSES = {
    "weight": lambda w: nn.CrossEntropyLoss(weight=w),
    "weight+ignore": lambda w: nn.CrossEntropyLoss(weight=w, ignore_index=1),
    "weight+smoothing": lambda w: nn.CrossEntropyLoss(weight=w, label_smoothing=0.2),
    "ignore+smoothing": lambda w: nn.CrossEntropyLoss(ignore_index=2, label_smoothing=0.1),
}


@pytest.mark.parametrize("loss_name", ["weight", "weight+ignore", "weight+smoothing", "ignore+smoothing"])
@pytest.mark.parametrize("kind", ["hessian", "ggn"])
def test_weighted_cross_entropy_over_sorted_batches_is_exact(loss_name, kind):
    model, x, y = _sorted_by_class()
    loss = WEIGHTED_LOSSES[loss_name](torch.tensor([1.0, 4.0, 0.25], dtype=torch.double))
    want = reference(model, loss, x, y)[kind]
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = hvp_operator(model, loss, batches, kind=kind)
        assert rel_err(op.to_dense(), want) < TOL


def test_weighted_nll_module_uneven_batches():
    model, x, y = _sorted_by_class()
    w = torch.tensor([0.5, 2.0, 3.0], dtype=torch.double)
    model_lp = nn.Sequential(model, nn.LogSoftmax(dim=1))
    loss = nn.NLLLoss(weight=w)
    want = reference(model_lp, loss, x, y)["hessian"]
    op = hvp_operator(model_lp, loss, [(x[:3], y[:3]), (x[3:13], y[3:13]), (x[13:], y[13:])])
    assert rel_err(op.to_dense(), want) < TOL


def test_every_target_ignored_in_a_batch():
    model, x, y = _sorted_by_class()
    loss = nn.CrossEntropyLoss(ignore_index=0)
    want = reference(model, loss, x, y)["hessian"]
    op = hvp_operator(model, loss, [(x[:8], y[:8]), (x[8:], y[8:])])   # batch 0: only class 0, all ignored
    assert rel_err(op.to_dense(), want) < TOL
    with pytest.raises(ValueError, match="ignore_index"):
        hvp_operator(model, loss, [(x[:4], y[:4]), (x[4:8], y[4:8])]).matvec(torch.zeros(op.dim, dtype=torch.double))


def test_probability_targets_are_weighted_by_size():
    model, x, y = _sorted_by_class()
    w = torch.tensor([1.0, 4.0, 0.25], dtype=torch.double)
    p = torch.softmax(torch.randn(len(x), 3, dtype=torch.double), 1)
    loss = nn.CrossEntropyLoss(weight=w)
    want = reference(model, loss, x, p)["hessian"]
    op = hvp_operator(model, loss, [(x[:5], p[:5]), (x[5:], p[5:])])
    assert rel_err(op.to_dense(), want) < TOL


def test_weighted_lambda_on_sorted_batches_is_refused_on_first_product():
    """A class-weighted lambda on data sorted by class: every batch is a plain mean, only their union shows it.

    The operator cannot read a function's weights, so over several batches it refuses (a ValueError naming
    the remedies) instead of weighting the batches by size, and loses nothing: the same lambda as one batch
    is exact.
    """
    model, x, y = _sorted_by_class()
    w = torch.tensor([1.0, 4.0, 0.25], dtype=torch.double)

    def loss(f, t):
        return F.cross_entropy(f, t, weight=w)
    batches = [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = hvp_operator(model, loss, batches)   # the first batch holds one class: nothing to see yet
    v = torch.randn(op.dim, dtype=torch.double)
    for _ in range(2):   # refused on every product, not only the first
        with pytest.raises(ValueError, match=r"across batches 0 and 1.*one batch.*nn.CrossEntropyLoss"):
            op.matvec(v)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        whole = hvp_operator(model, loss, (x, y))
        assert rel_err(whole.to_dense(), reference(model, loss, x, y)["hessian"]) < TOL


def test_ignore_index_in_a_function_over_batches_is_refused():
    """ignore_index through a function: the batches' denominators are their kept targets, not their sizes."""
    model, x, y = _sorted_by_class()
    y = y.clone()
    y[:5] = -100   # five of the first batch's eight targets ignored, none of the others

    def loss(f, t):
        return F.cross_entropy(f, t, ignore_index=-100)
    with pytest.raises(ValueError, match="not the mean of per-sample losses on the first batch"):
        hvp_operator(model, loss, [(x[:8], y[:8]), (x[8:], y[8:])])   # its halves keep 0 of 4 and 3 of 4
    y[:5] = y[8:13]   # now no target is ignored in the first batch: seen only across batches, on the first product
    y[8:10] = -100
    op = hvp_operator(model, loss, [(x[:8], y[:8]), (x[8:], y[8:])])
    with pytest.raises(ValueError, match="not the mean of per-sample losses (on batch 1|across batches 0 and 1)"):
        op.matvec(torch.randn(op.dim, dtype=torch.double))


def test_summed_loss_is_refused_when_the_first_batch_holds_one_sample():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2)).double()
    x, t = torch.randn(5, 3, dtype=torch.double), torch.randn(5, 2, dtype=torch.double)

    def summed(f, target):
        return F.mse_loss(f, target, reduction="sum")
    op = hvp_operator(model, summed, [(x[:1], t[:1]), (x[1:3], t[1:3]), (x[3:], t[3:])])  # one sample: sum = mean
    with pytest.raises(ValueError, match="sums over the batch.*reduction='sum'"):
        op.matvec(torch.randn(op.dim, dtype=torch.double))


def test_batch_independent_term_passes_the_mean_check_and_is_exact():
    """loss = mean + a constant: weighting batches by size is right for it, so no error, and the answer is exact."""
    model, x, y = _sorted_by_class()

    def loss(f, t):
        return F.cross_entropy(f, t) + 0.7
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = hvp_operator(model, loss, [(x[:8], y[:8]), (x[8:16], y[8:16]), (x[16:], y[16:])])
        got = op.to_dense()
    assert rel_err(got, reference(model, loss, x, y)["hessian"]) < TOL


@pytest.mark.parametrize("kind", ["ggn", "residual"])
def test_ggn_of_a_tuple_output_names_the_cause_before_the_loss_sees_it(kind):
    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            return self.lin(x), x

    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    with pytest.raises(ValueError, match=f"kind='{kind}' needs the model to return one tensor"):
        hvp_operator(TwoOutputs(), lambda out, t: F.cross_entropy(out, t), (x, y), kind=kind)


def test_mean_loss_over_batches_stays_quiet():
    model, x, y = _sorted_by_class()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = hvp_operator(model, F.cross_entropy, [(x[:7], y[:7]), (x[7:16], y[7:16]), (x[16:], y[16:])])
        assert rel_err(op.to_dense(), reference(model, F.cross_entropy, x, y)["hessian"]) < TOL


class FunctionalPadding(nn.Module):
    """F.embedding(padding_idx=0) on a bare parameter: not recognisable by module type."""

    def __init__(self) -> None:
        super().__init__()
        self.table, self.fc = nn.Parameter(torch.randn(6, 3)), nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.embedding(x, self.table, padding_idx=0).flatten(1))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_symmetry_check_catches_functional_padding_embedding(dtype):
    torch.manual_seed(7)
    model = FunctionalPadding().double()
    x, y = torch.randint(0, 6, (8, 4)), torch.randint(0, 3, (8,))
    x[:, 0] = 0
    H = autograd_hessian(model, F.cross_entropy, x, y)
    op = hvp_operator(model.to(dtype), F.cross_entropy, (x, y))
    with pytest.warns(UserWarning, match=r"not symmetric.*FunctionalPadding"):
        A = op.to_dense()
    assert rel_err(A.double(), H) < (TOL if dtype == torch.float64 else 1e-5)
