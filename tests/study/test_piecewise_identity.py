"""PROTOCOL.md, C2 (issue-30 amendment): for a network whose only nonlinearities are ReLU, max-pooling and eval
BatchNorm, every layer block H_l of the residual H = Hess − G vanishes, so tr(H) = Σ_l tr(H_l) = 0 exactly while
H ≠ 0 (its off-diagonal blocks); with GELU neither holds. Checked on a tiny model in dense float64 (double
backward, itself checked against central finite differences), not against the library's own operators."""
import pytest
import torch
from torch import nn
from torch.func import functional_call


def _net(act: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), act, nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(8, 4, bias=False), type(act)(), nn.Linear(4, 3, bias=False)).double()
    bn = net[1]
    bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.uniform_(0.5, 1.5), bn.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def _dense(act: nn.Module) -> tuple[torch.Tensor, torch.Tensor, list[slice], torch.Tensor, callable]:
    """(Hess, G, layer slices, θ, loss(θ)) over the Conv/Linear weights of the tiny net, in float64."""
    net = _net(act)
    names = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    params = {f"{n}.weight": p.detach() for n, p in ((n, dict(net.named_modules())[n].weight) for n in names)}
    shapes = [(k, v.shape) for k, v in params.items()]
    sizes = [v.numel() for v in params.values()]
    theta = torch.cat([v.flatten() for v in params.values()])
    torch.manual_seed(1)
    x, y = torch.randn(6, 1, 6, 6, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])

    def logits(t: torch.Tensor) -> torch.Tensor:
        chunks, out = torch.split(t, sizes), {}
        for (k, shape), c in zip(shapes, chunks):
            out[k] = c.view(shape)
        return functional_call(net, out, (x,), strict=False)

    loss = lambda t: nn.functional.cross_entropy(logits(t), y)  # noqa: E731
    t = theta.clone().requires_grad_(True)
    g = torch.autograd.grad(loss(t), t, create_graph=True)[0]
    hess = torch.stack([torch.autograd.grad(g[i], t, retain_graph=True)[0] for i in range(len(t))])
    z = logits(t)
    J = torch.stack([torch.stack([torch.autograd.grad(z[n, k], t, retain_graph=True)[0] for k in range(3)])
                     for n in range(len(y))])                                      # (n, classes, params)
    p = torch.softmax(z.detach(), 1)
    h_out = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    ggn = torch.einsum("nkp,nkl,nlq->pq", J, h_out, J) / len(y)
    bounds = torch.cumsum(torch.tensor([0] + sizes), 0).tolist()
    return hess.detach(), ggn.detach(), [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])], theta, loss


@pytest.mark.parametrize("act", [nn.ReLU(), nn.GELU()])
def test_dense_hessian_matches_central_differences(act):
    hess, _, _, theta, loss = _dense(act)

    def grad(t):
        t = t.clone().requires_grad_(True)
        return torch.autograd.grad(loss(t), t)[0]

    h = 1e-5
    for i in (0, 20, len(theta) - 1):
        e = torch.zeros_like(theta)
        e[i] = h
        assert torch.allclose((grad(theta + e) - grad(theta - e)) / (2 * h), hess[i], atol=1e-7, rtol=1e-5)


def test_relu_network_residual_is_traceless_with_zero_layer_blocks():
    hess, ggn, blocks, _, _ = _dense(nn.ReLU())
    H = hess - ggn
    scale = torch.linalg.norm(hess)
    assert torch.linalg.norm(H) > 1e-2 * scale                        # H itself is not zero ...
    for b in blocks:
        assert torch.linalg.norm(H[b, b]) <= 1e-12 * scale            # ... but every layer block is
    assert abs(torch.trace(H)) <= 1e-12 * scale                        # so tr(H) = Σ_l tr(H_l) = 0
    assert float(torch.trace(H)) == pytest.approx(float(sum(torch.trace(H[b, b]) for b in blocks)), abs=1e-12 * float(scale))


def test_gelu_network_residual_has_a_trace():
    hess, ggn, blocks, _, _ = _dense(nn.GELU())
    H = hess - ggn
    scale = torch.linalg.norm(hess)
    assert torch.linalg.norm(H[blocks[0], blocks[0]]) > 1e-4 * scale   # a hidden layer's block is not zero
    assert abs(torch.trace(H)) > 1e-4 * scale
