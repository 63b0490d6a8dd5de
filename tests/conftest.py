"""Small float64 models whose Hessian, GGN and residual are formed densely by htr_utils.dense (see test_dense.py)."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils.dense import dense_ggn, dense_hessian


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

    def dense_hessian(self, params=None) -> torch.Tensor:
        return dense_hessian(self.model, F.cross_entropy, self.x, self.y, params)

    def dense_ggn(self, params=None) -> torch.Tensor:
        """G = Jᵀ (∇²_f L) J from the Jacobian of the logits and the loss's Hessian in the logits."""
        return dense_ggn(self.model, F.cross_entropy, self.x, self.y, params)


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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models: a second thread only adds synchronisation (and stalls on a loaded machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def problem() -> Problem:
    return make_problem()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# Conformance results by table ("fast", "full") and row (model, loss), filled by test_conformance.py.
CONFORMANCE: dict = {}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print the conformance table(s): one line per row, its largest error, and what failed."""
    for table, rows in CONFORMANCE.items():
        passed = sum(not r.failures for r in rows.values())
        terminalreporter.section(f"conformance table ({table}): {passed}/{len(rows)} rows pass")
        for (model, loss), r in rows.items():
            cells = {k: v for k, v in r.cells.items() if not k.startswith("reference")}
            worst = max(cells.items(), key=lambda kv: kv[1]) if cells else ("-", float("nan"))
            fd = max((v for k, v in r.cells.items() if k.startswith("reference")), default=float("nan"))
            status = "pass" if not r.failures else "FAIL: " + "; ".join(r.failures)
            note = f"  [{'; '.join(sorted(r.warnings))}]" if r.warnings else ""
            terminalreporter.write_line(f"{model:28s} {loss:16s} {len(cells):2d} cells  worst {worst[1]:.1e} "
                                        f"({worst[0]})  reference vs FD {fd:.1e}  {status}{note}")


@pytest.fixture(autouse=True)
def default_dtype_is_left_alone():
    """torch's default dtype is process-wide: a test file that sets it (at import, say) changes every test that
    runs after it in the same worker. Each test must find float32 and leave it."""
    assert torch.get_default_dtype() == torch.float32, (
        f"torch's default dtype is {torch.get_default_dtype()} before this test: a test file imported or run "
        "earlier in this process set it (torch.set_default_dtype) and did not restore it")
    yield
    assert torch.get_default_dtype() == torch.float32, "this test changed torch's default dtype and did not restore it"
