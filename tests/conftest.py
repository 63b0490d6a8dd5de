"""Small float64 models whose Hessian, GGN and residual can be formed densely with torch.func."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian, jacrev


class TinyCNN(nn.Module):
    """Conv -> BatchNorm -> tanh -> Linear -> tanh -> Linear: smooth, with BatchNorm to exercise eval mode."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.bn = nn.BatchNorm2d(2)
        self.fc1 = nn.Linear(2 * 4 * 4, 5)
        self.fc2 = nn.Linear(5, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.bn(self.conv(x))).flatten(1)
        return self.fc2(torch.tanh(self.fc1(h)))


@dataclass
class Problem:
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor

    def names(self, params=None) -> list[str]:
        return [n for n, _ in self.model.named_parameters()] if params is None else list(params)

    def _flat_fn(self, params):
        names = self.names(params)
        every = dict(self.model.named_parameters())
        fixed = {n: p.detach() for n, p in every.items() if n not in names}
        fixed.update(dict(self.model.named_buffers()))
        shapes = [every[n].shape for n in names]
        flat = torch.cat([every[n].detach().reshape(-1) for n in names])

        def logits(theta: torch.Tensor) -> torch.Tensor:
            chunks, i = {}, 0
            for n, s in zip(names, shapes):
                k = int(torch.tensor(s).prod()) if len(s) else 1
                chunks[n] = theta[i:i + k].view(s)
                i += k
            was = self.model.training
            self.model.eval()
            try:
                return functional_call(self.model, {**fixed, **chunks}, (self.x,))
            finally:
                self.model.train(was)
        return logits, flat

    def dense_hessian(self, params=None) -> torch.Tensor:
        logits, flat = self._flat_fn(params)
        return hessian(lambda t: F.cross_entropy(logits(t), self.y))(flat)

    def dense_ggn(self, params=None) -> torch.Tensor:
        """G = (1/N) Σ_i J_iᵀ (diag p_i − p_i p_iᵀ) J_i from the Jacobian and the softmax Hessian."""
        logits, flat = self._flat_fn(params)
        J = jacrev(logits)(flat)                      # (N, C, P)
        p = torch.softmax(logits(flat), dim=1)        # (N, C)
        Hout = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
        return torch.einsum("ncp,ncd,ndq->pq", J, Hout, J) / len(self.x)


def make_problem(seed: int = 0, n: int = 7, classes: int = 3, train_mode: bool = False) -> Problem:
    torch.manual_seed(seed)
    model = TinyCNN(classes).double()
    model.bn.running_mean.normal_()
    model.bn.running_var.uniform_(0.5, 2.0)
    model.bn.weight.data.uniform_(0.5, 1.5)
    model.train(train_mode)
    x = torch.randn(n, 1, 6, 6, dtype=torch.double)
    y = torch.randint(0, classes, (n,))
    return Problem(model, x, y)


@pytest.fixture
def problem() -> Problem:
    return make_problem()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())
