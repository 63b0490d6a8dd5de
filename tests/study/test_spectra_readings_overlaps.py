"""Issue 30: the class readings' per-vector overlaps and G_within Ritz values (C1 / C3 (a) amendment), checked
against the reading's own mean overlap and bulk edge and against a dense float64 Hessian's top eigenvector."""
import numpy as np
import pytest
import torch
from torch import nn

from htr_utils.class_structure import class_structure
from htr_utils.dense import dense_curvature
from htr_utils.study.runs import train_run
from htr_utils.study.spectra_readings import _blocks, _examples, class_reading
from htr_utils.study.training import TrainConfig

CFG = TrainConfig(dataset="digits", model="lenet", width=0.1, train_size=200, test_size=80, batch_size=25, lr=0.05,
                  epochs=2, curvature_every=1, examples_per_class=2, lanczos_iters=8, trace_probes=4,
                  keep_checkpoints=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_run(CFG, root=tmp_path_factory.mktemp("runs"), progress=False)


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
