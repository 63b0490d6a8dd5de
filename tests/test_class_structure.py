"""Class split of G (htr_utils.class_structure) against dense float64 linear algebra, and the piecewise-linear
identity H_l = 0 of ReLU / max-pool / eval-BatchNorm networks."""
import numpy as np
import pytest
import torch
from torch import nn

from htr_utils import hvp_operator, lanczos
from htr_utils.class_structure import (between_operator, class_structure, outliers_above, restrict, subset_operator,
                                       subspace_overlap, within_operator)
from htr_utils.dense import dense_curvature, dense_jacobian

C = 4


def _mlp(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), act, nn.Linear(6, 5), act, nn.Linear(5, C)).double()


def _data(n: int = 24, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g, dtype=torch.float64)
    y = torch.arange(n) % C
    return x, y


def _dense_parts(model, x, y):
    """G_class, G_cross, G_within from the explicit per-example, per-label gradients g_ic."""
    f, J = dense_jacobian(model, x)
    n = len(x)
    J = J.reshape(n, C, -1)
    p = torch.softmax(f, 1)
    P = J.shape[-1]
    parts = {k: torch.zeros(P, P, dtype=torch.float64) for k in ("class", "cross", "within")}
    for c in range(C):
        rows = (y == c).nonzero().ravel()
        for c2 in range(C):
            w = p[rows, c2] / n
            g = torch.einsum("ik,ikp->ip", p[rows] - torch.eye(C, dtype=torch.float64)[c2], J[rows])
            W = w.sum()
            mu = (w[:, None] * g).sum(0) / W
            parts["class" if c == c2 else "cross"] += W * torch.outer(mu, mu)
            d = g - mu
            parts["within"] += (w[:, None] * d).T @ d
    return parts


def test_split_is_exact_and_matches_dense_ggn():
    model, (x, y) = _mlp(nn.Tanh()), _data()
    parts = _dense_parts(model, x, y)
    G = dense_curvature(model, nn.CrossEntropyLoss(), x, y, kind="ggn")
    assert torch.allclose(parts["class"] + parts["cross"] + parts["within"], G, atol=1e-12, rtol=1e-10)
    assert torch.linalg.eigvalsh(parts["within"]).min() > -1e-12
    cs = class_structure(model, [(x[:10], y[:10]), (x[10:], y[10:])])  # batches
    eye = torch.eye(cs.dim, dtype=torch.float64)
    for part in ("class", "cross"):
        dense = between_operator(cs, part) @ eye
        assert torch.allclose(dense, parts[part], atol=1e-12, rtol=1e-9), part
    ggn = hvp_operator(model, nn.CrossEntropyLoss(), (x, y), kind="ggn")
    within = within_operator(ggn, cs) @ eye
    assert torch.allclose(within, parts["within"], atol=1e-12, rtol=1e-9)
    top, _ = lanczos(within_operator(ggn, cs), cs.dim)
    assert abs(max(top) - torch.linalg.eigvalsh(parts["within"]).max().item()) < 1e-9



def test_split_with_batchnorm_uses_eval_statistics_per_class():
    """Each class's rows get their own pullback: with BatchNorm this is exact only in eval mode, which the split
    uses whatever mode the model is in (a model in train mode keeps its mode afterwards)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, C)).double()
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2.0)
    x, y = _data(n=20, seed=3)
    model.eval()
    parts = _dense_parts(model, x, y)
    model.train()
    cs = class_structure(model, [(x[:7], y[:7]), (x[7:], y[7:])])
    assert model.training
    eye = torch.eye(cs.dim, dtype=torch.float64)
    for part in ("class", "cross"):
        assert torch.allclose(between_operator(cs, part) @ eye, parts[part], atol=1e-12, rtol=1e-9), part


def test_split_refuses_bad_labels_and_class_counts():
    model, (x, y) = _mlp(nn.Tanh()), _data(n=8)
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        class_structure(model, (x, torch.where(y == 1, C, y)))
    with pytest.raises(ValueError, match="labels must lie in 0..3"):
        class_structure(model, (x, y - 1))
    with pytest.raises(ValueError, match="4 logits but num_classes = 5"):
        class_structure(model, (x, y), num_classes=5)

def test_class_means_and_overlap():
    model, (x, y) = _mlp(nn.Tanh()), _data()
    cs = class_structure(model, (x, y))
    M = cs.class_means()
    assert M.shape == (cs.dim, C)
    assert subspace_overlap(M @ torch.randn(C, 3, dtype=torch.float64), M) == pytest.approx(1.0, abs=1e-12)
    Q, _ = torch.linalg.qr(torch.cat([M, torch.randn(cs.dim, 2, dtype=torch.float64)], 1))
    assert subspace_overlap(Q[:, C:], M) == pytest.approx(0.0, abs=1e-12)
    assert outliers_above([5.0, 3.0, 1.0, 0.5], 0.9) == 3


def test_restrict_and_subset_equal_dense_blocks():
    model, (x, y) = _mlp(nn.Tanh()), _data()
    names = [n for n, _ in model.named_parameters()]
    cs = class_structure(model, (x, y))
    layer = ["2.weight"]
    sub = restrict(cs, layer)
    cs_layer = class_structure(model, (x, y), params=layer)
    assert torch.allclose(sub.means, cs_layer.means, atol=1e-14) and np.allclose(sub.weights, cs_layer.weights)
    H = dense_curvature(model, nn.CrossEntropyLoss(), x, y, kind="hessian")
    op = hvp_operator(model, nn.CrossEntropyLoss(), (x, y))
    idx = np.random.default_rng(0).choice(op.dim, 7, replace=False)
    sub_op = subset_operator(op, idx)
    dense = sub_op @ torch.eye(7, dtype=torch.float64)
    assert torch.allclose(dense, H[np.ix_(idx, idx)], atol=1e-12)
    with pytest.raises(ValueError, match="distinct"):
        subset_operator(op, [0, 0])
    assert names  # parameters exist


class _TinyConv(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.act = act
        self.fc1 = nn.Linear(2 * 3 * 3, 5)
        self.fc2 = nn.Linear(5, C)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.act(self.bn(self.conv(x))), 2)
        return self.fc2(self.act(self.fc1(x.flatten(1))))


@pytest.mark.parametrize("act,zero", [(nn.ReLU(), True), (nn.GELU(), False)])
def test_piecewise_linear_identity(act, zero):
    """ReLU + max-pool + eval BatchNorm: the logits are piecewise linear in one layer's weights, so each layer's
    residual block H_l vanishes; with GELU it does not. The full network's H is non-zero either way."""
    torch.manual_seed(0)
    model = _TinyConv(act).double()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 1.5)
    model.eval()
    x = torch.randn(12, 1, 8, 8, dtype=torch.float64)
    y = torch.arange(12) % C
    loss = nn.CrossEntropyLoss()
    for layer in ("conv.weight", "fc1.weight"):
        Hl = dense_curvature(model, loss, x, y, params=[layer], kind="residual")
        Hess = dense_curvature(model, loss, x, y, params=[layer], kind="hessian")
        rel = Hl.abs().max() / Hess.abs().max()
        assert (rel < 1e-10) if zero else (rel > 1e-4), (layer, float(rel))
    H = dense_curvature(model, loss, x, y, kind="residual")
    assert H.abs().max() > 1e-4
