"""The conformance table (tests/conformance.py): every model of the table with every loss, every cell against dense float64.

Fast (CI): every model with cross-entropy and every loss on two models, each row on the
FAST_CELLS (every kind, full and layer blocks, one and several batches, float64 and float32).
Slow (``-m slow``): the whole table, every model × every loss × all 24 cells.
A row passes when its reference agrees with central finite differences and every cell's
products agree with it (1e-10 relative in float64, 1e-4 in float32). The terminal summary prints
the table.
"""
from __future__ import annotations

import pytest

from conformance import CELLS, FAST_CELLS, LOSSES, MODELS, run_row
from conftest import CONFORMANCE

FAST_ROWS = [(m, "cross_entropy") for m in MODELS] + [(m, loss) for m in ("gelu_silu_tanh", "conv2d_batchnorm_maxpool")
                                                       for loss in LOSSES if loss != "cross_entropy"]
ALL_ROWS = [(m, loss) for m in MODELS for loss in LOSSES]


pytestmark = pytest.mark.usefixtures("one_thread")


def _check(model: str, loss: str, cells, table: str) -> None:
    result = run_row(model, loss, cells)
    CONFORMANCE.setdefault(table, {})[(model, loss)] = result
    assert not result.failures, f"{model} × {loss}: " + "; ".join(result.failures)


@pytest.mark.parametrize("model,loss", FAST_ROWS, ids=[f"{m}-{loss}" for m, loss in FAST_ROWS])
def test_conformance_fast(model, loss):
    _check(model, loss, FAST_CELLS, "fast")


@pytest.mark.slow
@pytest.mark.parametrize("model,loss", ALL_ROWS, ids=[f"{m}-{loss}" for m, loss in ALL_ROWS])
def test_conformance_full_table(model, loss):
    _check(model, loss, CELLS, "full")
