"""Smoke tests of `python -m benchmarks --quick` (every case's table; a missing peer is a column, not a crash) and of
`python -m benchmarks.hvp_allocator` (the kernels each product dispatches)."""
from __future__ import annotations

import sys

import pytest

from benchmarks.__main__ import HEADINGS, main
from benchmarks.hvp_allocator import REGIMES
from benchmarks.hvp_allocator import main as allocator_main

pytestmark = pytest.mark.slow  # runs the benchmark harness


def test_quick_benchmark_writes_every_case(tmp_path, monkeypatch):
    # PyHessian made unimportable: its rows must read "not installed" instead of failing the run.
    monkeypatch.setitem(sys.modules, "pyhessian", None)
    monkeypatch.setitem(sys.modules, "pyhessian.utils", None)
    out = main(["--quick", "--out", str(tmp_path / "R.md")])
    text = out.read_text()
    for heading in ["## Machine", "## Targets", *HEADINGS]:
        assert heading in text
    assert "PyHessian hessian_vector_product (stored graph) | not installed" in text
    assert "| pyhessian | not installed |" in text


def test_hvp_allocator_counts_kernels_in_both_regimes(tmp_path):
    # The linearised HVP must dispatch the product rule's 8 convolution kernels and no more (the zero-tangent
    # terms dropped); the gradient's 4 are torch's. Each regime runs in its own interpreter.
    out = tmp_path / "alloc.json"
    results = allocator_main(["--repeats", "1", "--inputs", "8", "--out", str(out)])
    assert set(results) == set(REGIMES) and out.exists()
    for res in results.values():
        assert set(res.pop("kernels")) >= {"conv2 backward data", "conv2 backward weight", "conv1 forward"}
        assert res["HVP (matvec)"]["conv_kernels"] == {"backward data": 2, "backward weight": 3, "forward": 3}
        assert res["gradient"]["conv_kernels"] == {"backward data+weight": 1, "backward weight": 1, "forward": 2}
        assert all(r["ms"] > 0 for r in res.values())
