"""Cached, resumable runs: hashing, exact resume after an interruption, caching, divergence."""
from __future__ import annotations

import json
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch

from htr_utils.study.runs import (Run, config_hash, find_run, load_run, run_path,
                            train_run)
from htr_utils.study.training import TIMING_COLUMNS, TrainConfig, Trainer, TrainingDiverged

pytestmark = pytest.mark.slow  # every test here trains a network

CFG = TrainConfig(dataset="digits", model="lenet", width=0.25, train_size=200, test_size=80, batch_size=50, lr=0.05,
                  epochs=3, milestones=(2,), curvature_every=1, curvature_kinds=("hessian", "ggn"),
                  curvature_kinds_epochs=(3,), lanczos_iters=10, examples_per_class=2, trace_probes=4,
                  htr_gamma=0.01, htr_freq=2, htr_probes=1, htr_start_epoch=1)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Run:
    return train_run(CFG, root=tmp_path_factory.mktemp("runs"), progress=False)


def _curvature_json(run: Run, epoch: int) -> dict:
    """The stored record without its timings."""
    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k != "seconds"}
        return obj
    return strip(json.loads((run.path / "curvature" / f"epoch_{epoch:03d}.json").read_text()))


def test_run_layout_and_contents(full_run):
    run = full_run
    assert run.done and run.path.name == config_hash(CFG)
    for name in ("config.json", "metrics.csv", "checkpoint.pt", "done.json"):
        assert (run.path / name).is_file()
    assert not list(run.path.rglob("*.tmp"))
    m = run.metrics
    assert list(m["epoch"]) == [1, 2, 3] and list(m["penalty_steps"]) == [0, 2, 2]
    assert m["lr"].tolist() == [0.05, 0.05, 0.0125]
    assert run.curvature_epochs() == [0, 1, 2, 3]
    assert set(run.curvature(0).kinds) == {"hessian"} and set(run.curvature(3).kinds) == {"hessian", "ggn"}
    dens = run.curvature(3).kinds["hessian"].layers["fc2"].density
    assert dens.grid.shape == dens.density.shape == (1024,)
    assert abs(np.trapezoid(dens.density, dens.grid) - 1) < 1e-6
    model = run.load_model()
    assert not model.training and all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(FileNotFoundError, match="keep_checkpoints"):
        run.load_model(epoch=1)
    with pytest.raises(FileNotFoundError, match="available"):
        run.curvature(7)


def test_interrupted_run_resumes_bit_identical(full_run, tmp_path, monkeypatch):
    original = Trainer.run_epoch

    def interrupt_at_epoch_3(self, epoch, progress=True):
        if epoch == 3:
            raise KeyboardInterrupt
        return original(self, epoch, progress)

    monkeypatch.setattr(Trainer, "run_epoch", interrupt_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_run(CFG, root=tmp_path, progress=False)
    partial = find_run(CFG, root=tmp_path)
    assert partial is not None and not partial.done and len(partial.metrics) == 2
    assert load_run(CFG, root=tmp_path) is None
    torch.manual_seed(999)  # a different global RNG state in the resuming process must not matter
    np.random.seed(999)
    monkeypatch.setattr(Trainer, "run_epoch", original)
    resumed = train_run(CFG, root=tmp_path, progress=False)
    assert resumed.done
    numbers = [c for c in full_run.metrics.columns if c not in TIMING_COLUMNS]
    pd.testing.assert_frame_equal(resumed.metrics[numbers], full_run.metrics[numbers], check_exact=True)
    for epoch in full_run.curvature_epochs():
        assert _curvature_json(resumed, epoch) == _curvature_json(full_run, epoch)
    a, b = full_run.load_model().state_dict(), resumed.load_model().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_complete_run_is_returned_without_training(full_run, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("train_run trained a complete run again")
    monkeypatch.setattr(Trainer, "__init__", fail)
    again = train_run(CFG, root=full_run.path.parent, progress=False)
    assert again.path == full_run.path and again.config == CFG
    assert load_run(CFG, root=full_run.path.parent).path == full_run.path
    assert load_run(CFG.replace(seed=5), root=full_run.path.parent) is None
    assert find_run(CFG.replace(seed=5), root=full_run.path.parent) is None


def test_every_setting_changes_the_hash():
    base = TrainConfig()
    changed = {"dataset": "mnist", "model": "mlp", "width": 0.5, "model_kwargs": {"depth": 4}, "train_size": 10,
               "test_size": 10, "val_fraction": 0.1, "data_seed": 1, "batch_size": 32, "lr": 0.1, "momentum": 0.5,
               "weight_decay": 1e-4, "epochs": 3, "milestones": (1,), "lr_gamma": 0.1, "seed": 1, "htr_gamma": 1e-3,
               "htr_params": "middle", "htr_freq": 10, "htr_start_epoch": 2, "htr_probes": 3, "curvature_every": 1, "curvature_init": False, "curvature_at": (1,), "eval_every": 2,
               "curvature_kinds": ("ggn",), "curvature_kinds_epochs": (0,), "examples_per_class": 5,
               "lanczos_iters": 64, "slq_probes": 2, "top_k": 5, "trace_probes": 10, "layerwise": False,
               "keep_checkpoints": True}
    assert set(changed) == {f.name for f in fields(TrainConfig)}, "test every field"
    hashes = {config_hash(base)} | {config_hash(base.replace(**{k: v})) for k, v in changed.items()}
    assert len(hashes) == len(changed) + 1
    assert config_hash(base) == config_hash(TrainConfig()) and len(config_hash(base)) == 12
    assert run_path(base, "x").parent.name == "x"


def test_divergence_keeps_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(dataset="digits", model="lenet", width=0.25, train_size=100, test_size=40, batch_size=25,
                      lr=0.05, epochs=3, htr_gamma=1e12, htr_freq=1, htr_probes=1, htr_start_epoch=1)
    with pytest.raises(TrainingDiverged, match=r"epoch 2.*htr_gamma=1e\+12") as info:
        train_run(cfg, root=tmp_path, progress=False)
    assert info.value.epoch == 2 and info.value.gamma == 1e12 and info.value.last_good_epoch == 1
    run = find_run(cfg, root=tmp_path)
    assert not run.done and run.checkpoint()["epoch"] == 1 and len(run.metrics) == 1
    assert all(torch.isfinite(p).all() for p in run.load_model().parameters())
    with pytest.raises(TrainingDiverged, match="epoch 2"):  # re-raised from disk, no training
        train_run(cfg, root=tmp_path, progress=False)


def test_keep_checkpoints(tmp_path):
    cfg = TrainConfig(dataset="digits", model="mlp", width=0.25, train_size=60, test_size=30, batch_size=30,
                      epochs=2, keep_checkpoints=True)
    run = train_run(cfg, root=tmp_path, progress=False)
    first, last = run.load_model(epoch=1), run.load_model()
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), last.parameters()))
    assert run.metrics["curvature_seconds"].tolist() == [0.0, 0.0]
    assert run.curvature_epochs() == []

