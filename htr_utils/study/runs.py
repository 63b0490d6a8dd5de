"""Cached, resumable training runs: ``root/<hash of the config>/`` holds everything a run produced.

Layout of a run folder::

    config.json              the TrainConfig (and the hash's version)
    metrics.csv              one row per finished epoch (1..epochs)
    checkpoint.pt            latest finished epoch: model, optimiser, scheduler, RNG states, metrics
    curvature/epoch_XXX.json curvature records (epoch 000 = initialisation)
    models/epoch_XXX.pt      per-epoch model weights, only if config.keep_checkpoints
    done.json                written last: the run is complete
    diverged.json            the run hit NaN/inf (TrainingDiverged); calling again re-raises

Every file is written atomically (temporary file in the same folder, then ``os.replace``),
so an interrupted run never leaves a half-written file, and resumes from its last finished
epoch with the same numbers as an uninterrupted run (on CPU). Densities are stored
compactly (quadrature nodes and weights, grid range, sigma) and rebuilt exactly on load.
Two processes must not train the same run at the same time.
"""
from __future__ import annotations

import csv
import hashlib
import json
import io
import math
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import in_channels, num_classes
from .files import atomic_write, read_json, write_json
from .models import build_model
from .records import CurvatureRecord
from .training import TrainConfig, Trainer, TrainingDiverged, _progress_disabled

RUNS_VERSION = 2  # bump when training/curvature code changes the numbers a config produces
DEFAULT_ROOT = "data/runs"


# -- hashing and atomic files ---------------------------------------------------------------
def config_hash(config: TrainConfig) -> str:
    """12 hex characters of sha256 over the canonical JSON (sorted keys) of the config and RUNS_VERSION."""
    payload = json.dumps({"config": config.to_dict(), "version": RUNS_VERSION}, sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


def run_path(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> Path:
    return Path(root) / config_hash(config)


def _torch_save(path: Path, obj: Any) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write(path, buf.getvalue())


def _write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in r.items()} for r in rows)
    atomic_write(path, buf.getvalue().encode())


# -- the Run handle ----------------------------------------------------------------------------
class Run:
    """A run folder: config, per-epoch metrics, curvature records and checkpoints."""

    def __init__(self, path: str | Path, config: TrainConfig | None = None):
        self.path = Path(path)
        self.config = config or TrainConfig.from_dict(read_json(self.path / "config.json")["config"])

    def __repr__(self) -> str:
        state = "done" if self.done else f"{len(self.metrics)}/{self.config.epochs} epochs"
        return f"Run({self.path.name}, {self.config.model}/{self.config.dataset}, {state})"

    @property
    def done(self) -> bool:
        return (self.path / "done.json").is_file()

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per finished epoch (floats read back exactly)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return pd.DataFrame()
        return pd.read_csv(path)

    def curvature_epochs(self) -> list[int]:
        folder = self.path / "curvature"
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("epoch_*.json")) if folder.is_dir() else []

    def curvature(self, epoch: int) -> CurvatureRecord:
        """The curvature record of ``epoch`` (see Trainer.curvature)."""
        path = self.path / "curvature" / f"epoch_{epoch:03d}.json"
        if not path.is_file():
            raise FileNotFoundError(f"no curvature record for epoch {epoch} in {self.path}; "
                                    f"available: {self.curvature_epochs()}")
        return CurvatureRecord.from_json(read_json(path))

    def checkpoint(self) -> dict:
        return torch.load(self.path / "checkpoint.pt", map_location="cpu", weights_only=False)

    def load_model(self, epoch: int | None = None, device: str | torch.device = "cpu") -> nn.Module:
        """The model (eval mode) after ``epoch`` (None = latest checkpoint; others need keep_checkpoints)."""
        cfg = self.config
        model = build_model(cfg.model, in_channels(cfg.dataset), num_classes(cfg.dataset), width=cfg.width,
                            **cfg.model_kwargs)
        ckpt = self.checkpoint()
        if epoch is None or epoch == ckpt["epoch"]:
            state = ckpt["trainer"]["model"]
        else:
            path = self.path / "models" / f"epoch_{epoch:03d}.pt"
            if not path.is_file():
                raise FileNotFoundError(f"no weights for epoch {epoch} in {self.path} (latest checkpoint: epoch "
                                        f"{ckpt['epoch']}); set keep_checkpoints=True to keep every epoch")
            state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        return model.to(device).eval()


def find_run(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> Run | None:
    """The run of ``config`` if its folder exists (complete or not), else None; never trains."""
    path = run_path(config, root)
    return Run(path, config) if (path / "config.json").is_file() else None


def load_run(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> Run | None:
    """The run of ``config`` if it is complete, else None; never trains."""
    run = find_run(config, root)
    return run if run is not None and run.done else None


# -- training with caching -------------------------------------------------------------------
def train_run(config: TrainConfig, root: str | Path = DEFAULT_ROOT, progress: bool = True,
              data_root: str | Path | None = None, device: str | torch.device | None = None) -> Run:
    """Train ``config`` (or resume it, or return it from disk if complete) and return its Run.

    ``root``: the cache folder (relative paths from the working directory; notebooks pass
    ``profile.runs_dir()``). ``data_root``: where data sets are looked for (None: the
    repository's ``data/``). ``device``: None = CUDA if available, else CPU (not part of the
    hash; exact resumption is promised on CPU). Raises TrainingDiverged on NaN/inf, leaving
    the last good checkpoint; a diverged run re-raises from its ``diverged.json`` without
    training (delete the folder to retry).
    """
    if data_root is None:
        from .outputs import data_root as repo_data_root
        data_root = repo_data_root()
    path = run_path(config, root)
    if (path / "done.json").is_file():
        return Run(path, config)
    if (path / "diverged.json").is_file():
        info = read_json(path / "diverged.json")
        raise TrainingDiverged(info["gamma"], info["epoch"], info["step"], info["what"], info["last_good_epoch"])
    if not (path / "config.json").is_file():
        write_json({"config": config.to_dict(), "version": RUNS_VERSION, "hash": config_hash(config)},
                   path / "config.json", strict=False)
    trainer = Trainer(config, data_root=str(data_root), device=device)
    metrics: list[dict] = []
    if (path / "checkpoint.pt").is_file():
        ckpt = torch.load(path / "checkpoint.pt", map_location="cpu", weights_only=False)
        trainer.load_state_dict(ckpt["trainer"])
        metrics, start = ckpt["metrics"], ckpt["epoch"] + 1
    else:
        if config.kinds_at(0):
            _save_curvature(path, trainer.curvature(0))
        _save_checkpoint(path, trainer, 0, metrics)
        start = 1
    bar = tqdm(range(start, config.epochs + 1), desc=f"run {path.name}", initial=start - 1, total=config.epochs,
               disable=_progress_disabled(progress))
    for epoch in bar:
        try:
            row = trainer.run_epoch(epoch, progress=progress)
        except TrainingDiverged as err:
            write_json({"gamma": err.gamma, "epoch": err.epoch, "step": err.step, "what": err.what,
                        "last_good_epoch": epoch - 1}, path / "diverged.json", strict=False)
            raise TrainingDiverged(err.gamma, err.epoch, err.step, err.what, epoch - 1) from None
        if config.kinds_at(epoch):
            record = trainer.curvature(epoch)
            row["curvature_seconds"] = record.seconds
            _save_curvature(path, record)
        metrics.append(row)
        bar.set_postfix(test_acc=f"{row['test_acc']:.4f}", train_loss=f"{row['train_loss']:.4f}")
        _write_metrics(path / "metrics.csv", metrics)
        _save_checkpoint(path, trainer, epoch, metrics)
    bar.close()
    last = metrics[-1]
    write_json({"epochs": config.epochs, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "test_acc": last["test_acc"], "test_loss": last["test_loss"],
                "train_seconds": math.fsum(r["epoch_seconds"] for r in metrics),
                "curvature_seconds": math.fsum(r["curvature_seconds"] for r in metrics)}, path / "done.json", strict=False)
    return Run(path, config)


def _save_curvature(path: Path, record: CurvatureRecord) -> None:
    write_json(record.to_json(), path / "curvature" / f"epoch_{record.epoch:03d}.json", strict=False)


def _save_checkpoint(path: Path, trainer: Trainer, epoch: int, metrics: list[dict]) -> None:
    if trainer.config.keep_checkpoints:
        _torch_save(path / "models" / f"epoch_{epoch:03d}.pt", trainer.model.state_dict())
    _torch_save(path / "checkpoint.pt", {"epoch": epoch, "trainer": trainer.state_dict(), "metrics": metrics})
