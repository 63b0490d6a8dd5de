"""Readings of C1-C4 from a run's kept weights: cached, repeatable, and equal to dense float64 linear algebra."""
import numpy as np
import pytest
import torch
from torch import nn

from htr_utils.class_structure import class_structure
from htr_utils.dense import dense_curvature
from htr_utils.study.profiles import SpectraReading
from htr_utils.study.runs import train_run
from htr_utils.study.spectra_readings import (ClassReading, DistanceReading, _blocks, _examples, class_reading,
                                              distance_reading, planned_readings, read_run)
from htr_utils.study.training import TrainConfig

CFG = TrainConfig(dataset="digits", model="lenet", width=0.1, train_size=200, test_size=80, batch_size=25, lr=0.05,
                  epochs=2, curvature_every=1, examples_per_class=2, lanczos_iters=8, trace_probes=4,
                  keep_checkpoints=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(CFG, root=tmp_path_factory.mktemp("runs"), progress=False)


def test_class_reading_matches_dense(run):
    iters = 120  # the top Ritz values converge first
    r = class_reading(run, 2, 2, lanczos_iters=iters)
    model = run.load_model(2).double()
    names, idx = _blocks(model)
    x = torch.cat([b[0] for b in _examples(run, 2, None)]).double()
    y = torch.cat([b[1] for b in _examples(run, 2, None)])
    H = dense_curvature(model, nn.CrossEntropyLoss(), x, y, params=names, kind="hessian")
    exact = np.sort(np.linalg.eigvalsh(H.numpy()))[::-1]
    full = r.blocks["full"]
    assert full.dim == len(H) and len(full.hess_top) == 30
    assert full.hess_top_restart and np.allclose(full.hess_top_restart[:3], exact[:3], rtol=1e-3)
    # float32 products: agreement to float32 rounding relative to the spectral radius
    assert np.allclose(full.hess_top[:3], exact[:3], rtol=1e-3, atol=2e-4 * exact[0])
    # the edge is the top eigenvalue of the within-class part: it lies below G's top eigenvalue
    G = dense_curvature(model, nn.CrossEntropyLoss(), x, y, params=names, kind="ggn").numpy()
    assert 0 < full.bulk_edge <= np.linalg.eigvalsh(G).max() * (1 + 1e-4)
    assert full.outliers == int(np.sum(np.asarray(full.hess_top) > full.bulk_edge)) or full.outliers >= 30
    assert 0 <= full.overlap <= 1 + 1e-9 and set(r.blocks) == {"full", *idx}
    for layer, ix in idx.items():
        block = H[np.ix_(ix.numpy(), ix.numpy())].numpy()
        top = np.sort(np.linalg.eigvalsh(block))[::-1]
        assert abs(r.blocks[layer].hess_top[0] - top[0]) <= 2e-4 * abs(exact[0]), layer


def test_readings_are_cached_and_repeat(run, tmp_path):
    a = class_reading(run, 1, 2, lanczos_iters=8)
    files = sorted((run.path / "readings").glob("class_e001_*"))
    assert files
    mtime = files[0].stat().st_mtime_ns
    b = class_reading(run, 1, 2, lanczos_iters=8)
    assert a == b and files[0].stat().st_mtime_ns == mtime
    assert ClassReading.from_json(a.to_json()) == a
    files[0].unlink()
    c = class_reading(run, 1, 2, lanczos_iters=8)   # recomputed from the same seeds
    assert c.blocks["full"].hess_top == a.blocks["full"].hess_top


def test_distance_reading_atoms(run):
    d = distance_reading(run, 2, probes=2, lanczos_iters=6, null_subsets=2)
    assert len(d.full_a) == len(d.full_b) == 2 and all(len(v) == 2 for v in d.layers.values())
    # the size-matched null: 2 subsets per layer, each with as many SLQ runs as the layer
    assert set(d.null) == set(d.layers) and all(len(v) == 2 and all(len(s) == 2 for s in v) for v in d.null.values())
    for name, subsets in d.null.items():   # a subset of the layer's size has at most that many Ritz values
        assert all(len(nodes) == len(d.layers[name][0][0]) for s in subsets for nodes, _ in s)
    for nodes, weights in d.full_a + [p for v in d.layers.values() for p in v] + \
            [p for v in d.null.values() for s in v for p in s]:
        assert abs(sum(weights) - 1) < 1e-4 and len(nodes) == len(weights)
    assert d.full_a != d.full_b   # independent starts
    assert DistanceReading.from_json(d.to_json()) == d


def test_read_run_follows_the_plan(run):
    reading = SpectraReading(class_epochs=(1, 2), distance_epochs=(1, 2), examples_per_class=2,
                             large_examples_per_class=3, slq_probes=2, null_subsets=1, lanczos_iters=6)
    out = read_run(run, reading, progress=False)
    assert set(out.classes) == {(1, 2), (2, 2), (2, 3)} and set(out.distances) == {1, 2}
    assert all(len(out.distances[e].null[k]) == 1 for e in (1, 2) for k in out.distances[e].layers)  # every epoch
    only = read_run(run, reading, progress=False, what=("class",))   # C1-C3 need no distance readings
    assert set(only.classes) == set(out.classes) and not only.distances


def test_distance_readings_take_their_own_steps_and_the_step_check_twice_them(run):
    """C4 (issue 30, amendment 5): distances at ``distance_lanczos_iters``, classes at ``lanczos_iters``; the step
    check reads its epoch again at twice the distance steps, with the same start vectors as the first probes."""
    reading = SpectraReading(class_epochs=(2,), distance_epochs=(2,), examples_per_class=2, large_examples_per_class=2,
                             slq_probes=2, null_subsets=0, lanczos_iters=6, distance_lanczos_iters=4,
                             step_check_epoch=2, step_check_probes=1)
    assert planned_readings(run, reading)[-2] == ("step_check", (2, 1))
    out = read_run(run, reading, progress=False)
    assert out.classes[(2, 2)].lanczos_iters == 6 and out.distances[2].lanczos_iters == 4
    assert out.step_check is not None and out.step_check.lanczos_iters == 8 and out.step_check.probes == 1
    assert not out.distances[2].null
    # same seed per (block, probe): the first Ritz node of probe 0 differs only through the steps taken
    assert out.step_check.full_a[0] != out.distances[2].full_a[0]
    assert read_run(run, reading, progress=False, what=("class",)).step_check is None
    alone = read_run(run, reading, progress=False, what=("step_check",))
    assert alone.step_check == out.step_check and not alone.distances and not alone.classes


# Issue 30: the class readings' per-vector overlaps and G_within Ritz values (C1 / C3 (a) amendment), checked
# against the reading's own mean overlap and bulk edge and against a dense float64 Hessian's top eigenvector.
def test_per_vector_overlaps_and_within_top(run):
    r = class_reading(run, 2, 2, lanczos_iters=120)
    C = 10
    for name, b in r.blocks.items():
        assert len(b.overlaps) == min(2 * C, len(b.hess_top)) and all(-1e-9 <= o <= 1 + 1e-9 for o in b.overlaps), name
        assert np.mean(b.overlaps[:C]) == pytest.approx(b.overlap, abs=1e-9), name   # the same vectors' mean
        assert b.within_top[0] == pytest.approx(b.bulk_edge) and list(b.within_top) == sorted(b.within_top)[::-1]
    # the top Ritz vector's overlap equals the dense float64 Hessian's top eigenvector's
    model = run.load_model(2).double()
    names, _ = _blocks(model)
    batches = _examples(run, 2, None)
    x = torch.cat([b[0] for b in batches]).double()
    y = torch.cat([b[1] for b in batches])
    H = dense_curvature(model, nn.CrossEntropyLoss(), x, y, params=names, kind="hessian").numpy()
    evals, evecs = np.linalg.eigh(H)
    assert evals[-1] - evals[-2] > 1e-3 * evals[-1]                              # a separated top eigenvalue
    means = class_structure(model, (x, y), params=names, num_classes=C).class_means().numpy()
    Q = np.linalg.qr(means)[0]
    assert r.blocks["full"].overlaps[0] == pytest.approx(float(np.sum((Q.T @ evecs[:, -1]) ** 2)), abs=1e-3)
