"""Curvature records survive the trip to JSON and back exactly (the run cache relies on it)."""
import json
import math

import numpy as np
import pytest
import torch

from htr_utils.lanczos import slq_density
from htr_utils.study.records import (BlockCurvature, CurvatureRecord, KindCurvature, TraceRecord, density_from_json,
                                     density_to_json)


class Diag:
    dim, dtype, device = 50, torch.float64, "cpu"

    def matvec(self, v):
        return torch.linspace(-1, 3, 50, dtype=torch.float64) * v


def test_density_json_round_trip_is_exact():
    dens = slq_density(Diag(), num_iters=12, num_probes=2)
    back = density_from_json(json.loads(json.dumps(density_to_json(dens))))
    for attr in ("grid", "density", "nodes", "weights"):
        assert np.array_equal(getattr(back, attr), getattr(dens, attr))
    assert back.sigma == dens.sigma and back.meta == dens.meta


def test_record_json_round_trip_keeps_every_field():
    dens = slq_density(Diag(), num_iters=12)
    full = BlockCurvature(dens, (3.0, 2.5), 50, TraceRecord(50.0, float("nan"), 1))
    layer = BlockCurvature(dens, (3.0,), 50, None)
    rec = CurvatureRecord(4, 20, ("a.weight",), ("a",), {"hessian": KindCurvature(full, {"a": layer}, 0.5)}, 1.5)
    back = CurvatureRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert (back.epoch, back.num_examples, back.params, back.layers, back.seconds) == (4, 20, ("a.weight",), ("a",), 1.5)
    hess = back.kinds["hessian"]
    assert hess.full.top == (3.0, 2.5) and hess.full.dim == 50 and hess.full.lambda_max == 3.0
    assert hess.full.trace.mean == 50.0 and math.isnan(hess.full.trace.stderr) and hess.layers["a"].trace is None
    assert np.array_equal(hess.block("a").density.density, dens.density)
    with pytest.raises(KeyError, match="no layer 'b'"):
        hess.block("b")
