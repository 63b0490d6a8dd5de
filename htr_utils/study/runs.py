"""Cached, resumable training runs: ``root/<hash of the config>/`` holds everything a run produced.

Layout of a run folder::

    config.json              the TrainConfig, the hash's version, and the environment that started the run
    metrics.csv              one row per finished epoch (1..epochs)
    checkpoint.pt            latest finished epoch: model, optimiser, scheduler, RNG states, metrics
    curvature/epoch_XXX.json curvature records (epoch 000 = initialisation)
    models/epoch_XXX.pt      per-epoch model weights, only if config.keep_checkpoints
    done.json                written last: the run is complete; epoch count, metric rows, sha256 of every file
    diverged.json            the run hit NaN/inf (TrainingDiverged); calling again re-raises
    lock                     the writer's OS lock (fcntl.flock), with its host and pid

Every file is written atomically (temporary file in the same folder, then ``os.replace``), so an
interrupted run never leaves a half-written file, and resumes from its last finished epoch with the
same numbers as an uninterrupted run (same environment, CPU). One process trains a run at a time:
:func:`train_run` holds the folder's lock while it writes; another process asking for the same run
waits, then reads the finished run. A finished run is verified against done.json's checksums when it
is opened (runs finished before checksums were recorded are read unverified). Every unreadable or
damaged file raises :class:`DamagedRun` naming the file and the remedy (delete the folder, or
``python -m htr_utils.study.runs --repair <folder>``).

The environment that changes a run's numbers (:func:`environment`) is recorded beside the config,
not hashed into the folder name (existing caches keep their names); resuming under another one is
refused unless allowed (``allow_environment_change=True`` or ``HTR_ALLOW_ENV_CHANGE=1``).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import math
import os
import platform
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .data import in_channels, num_classes
from .files import FileLock, LockTimeout, atomic_write, read_json, remove_orphan_temps, write_json
from .hashing import RUNS_VERSION, config_hash  # re-exported: the cache's key is part of its API
from .models import build_model
from .paths import data_root as repo_data_root
from .records import CurvatureRecord
from .training import TrainConfig, Trainer, TrainingDiverged, _progress_disabled

DEFAULT_ROOT = "data/runs"
LOCK_FILE = "lock"
ALLOW_ENV_VAR = "HTR_ALLOW_ENV_CHANGE"  # "1": resume runs started under another environment
LOCK_TIMEOUT_VAR = "HTR_LOCK_TIMEOUT"  # seconds to wait for a run another process is training (default: forever)


class DamagedRun(RuntimeError):
    """A run's file is unreadable or differs from what done.json recorded; the message names it and the remedy."""

    def __init__(self, file: Path, problem: str, run_dir: Path | None = None):
        run_dir = run_dir or Path(file).parent
        self.file, self.run_dir, self.problem = Path(file), Path(run_dir), problem
        if self.file.name == "config.json":
            remedy = f"delete the folder {run_dir} to retrain the run (without its config it cannot be repaired)"
        else:
            remedy = (f"delete the folder {run_dir} to retrain the run, or run `python -m htr_utils.study.runs "
                      f"--repair {run_dir}` to keep what is intact and retrain the rest from the last intact checkpoint")
        super().__init__(f"{file}: {problem}. Remedy: {remedy}.")


class EnvironmentChanged(RuntimeError):
    """Resuming a run under an environment other than the one that started it (numbers would match neither)."""


# -- run paths, environment and files ---------------------------------------------------------
def run_path(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> Path:
    return Path(root) / config_hash(config)


def cpu_model(cpuinfo: str | Path = "/proc/cpuinfo") -> str:
    """The CPU's model name (Linux: /proc/cpuinfo; elsewhere what ``platform`` knows), or "unknown"."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def exact_gpu_kernels(device: str | torch.device | None = None) -> None:
    """On a CUDA device: float32 products without TF32 (cuDNN convolutions use TF32 by default, about
    three significant digits) and deterministic cuDNN kernels, for this process. No-op on a CPU."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def environment(device: str | torch.device | None = None) -> dict:
    """What besides the config changes a run's numbers: torch version, CPU threads, model and the
    instruction set torch's kernels use, device type (and GPU model), deterministic-algorithm and TF32 flags."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "device": dev.type,
            "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
            "cpu_model": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32)
            if dev.type == "cuda" else False}


def environment_differences(recorded: dict | None, current: dict) -> dict[str, tuple]:
    """{key: (recorded, current)} where they differ; the thread count counts on CPU only; nothing if not recorded."""
    if not recorded:
        return {}
    keys = [k for k in current if k != "threads" or current["device"] == "cpu"]
    return {k: (recorded.get(k), current[k]) for k in keys if k in recorded and recorded[k] != current[k]}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read(path: Path, reader: Callable[[Path], Any], run_dir: Path | None = None) -> Any:
    """``reader(path)``, any failure (truncated, not JSON, not a checkpoint) as one DamagedRun naming the file."""
    try:
        return reader(path)
    except FileNotFoundError:
        raise DamagedRun(path, "missing", run_dir) from None
    except Exception as err:
        raise DamagedRun(path, f"unreadable ({type(err).__name__}: {' '.join(str(err).split())[:200]})",
                         run_dir) from err


def _load_pt(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=False)


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
    """A run folder: config, per-epoch metrics, curvature records and checkpoints.

    Reading a file that is unreadable raises :class:`DamagedRun` naming it; :meth:`verify` checks a
    finished run against the checksums in done.json.
    """

    def __init__(self, path: str | Path, config: TrainConfig | None = None):
        self.path = Path(path)
        self.config = config or _read(self.path / "config.json",
                                      lambda p: TrainConfig.from_dict(read_json(p)["config"]), self.path)

    def __repr__(self) -> str:
        state = "done" if self.done else f"{len(self.metrics)}/{self.config.epochs} epochs"
        return f"Run({self.path.name}, {self.config.model}/{self.config.dataset}, {state})"

    @property
    def done(self) -> bool:
        return (self.path / "done.json").is_file()

    def done_info(self) -> dict:
        """done.json: final numbers, timings, and (runs written since checksums) ``integrity`` and ``environment``."""
        return _read(self.path / "done.json", _read_dict, self.path)

    def config_info(self) -> dict:
        """config.json: the config, the hash's version and (recent runs) the environment that started the run."""
        info = _read(self.path / "config.json", _read_dict, self.path)
        if info.get("hash", self.path.name) != self.path.name or "config" not in info:
            raise DamagedRun(self.path / "config.json", f"records run {info.get('hash')!r}, not this folder's "
                             f"{self.path.name!r}", self.path)
        return info

    @property
    def metrics(self) -> pd.DataFrame:
        """One row per finished epoch (floats read back exactly)."""
        path = self.path / "metrics.csv"
        if not path.is_file():
            return pd.DataFrame()
        frame = _read(path, pd.read_csv, self.path)
        if "epoch" not in frame or frame["epoch"].tolist() != list(range(1, len(frame) + 1)):
            raise DamagedRun(path, "its epoch column is not 1, 2, ..., n", self.path)
        return frame

    def curvature_epochs(self) -> list[int]:
        folder = self.path / "curvature"
        return sorted(int(p.stem.split("_")[1]) for p in folder.glob("epoch_*.json")) if folder.is_dir() else []

    def curvature(self, epoch: int) -> CurvatureRecord:
        """The curvature record of ``epoch`` (see Trainer.curvature)."""
        path = self.path / "curvature" / f"epoch_{epoch:03d}.json"
        if not path.is_file():
            raise FileNotFoundError(f"no curvature record for epoch {epoch} in {self.path}; "
                                    f"available: {self.curvature_epochs()}")
        return _read(path, lambda p: CurvatureRecord.from_json(read_json(p)), self.path)

    def checkpoint(self) -> dict:
        return _read(self.path / "checkpoint.pt", _load_pt, self.path)

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
            state = _read(path, lambda p: torch.load(p, map_location="cpu", weights_only=True), self.path)
        model.load_state_dict(state)
        return model.to(device).eval()

    def problems(self) -> list[tuple[Path, str]]:
        """(file, what is wrong) for each damaged file: config.json and done.json unreadable, or a file
        whose sha256 differs from done.json's record. Runs without recorded checksums: readability only."""
        found: list[tuple[Path, str]] = []
        for check in (self.config_info, self.done_info if self.done else dict):
            try:
                check()
            except DamagedRun as err:
                found.append((err.file, err.problem))
        if not self.done or found:
            return found
        integrity = self.done_info().get("integrity")
        if integrity is None:  # finished before checksums were recorded: nothing to verify against
            return found
        for rel, digest in integrity["files"].items():
            path = self.path / rel
            if not path.is_file():
                found.append((path, "missing (done.json recorded it)"))
            elif file_sha256(path) != digest:
                found.append((path, f"its contents differ from those done.json recorded (sha256 {digest[:12]}..., "
                                    "truncated or overwritten)"))
        return found

    def verify(self) -> bool:
        """Raise DamagedRun for the first damaged file; True if checksums were verified, False if none were recorded."""
        for path, problem in self.problems():
            raise DamagedRun(path, problem, self.path)
        return self.done and "integrity" in self.done_info()


def _read_dict(path: Path) -> dict:
    obj = read_json(path)
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, found {type(obj).__name__}")
    return obj


def find_run(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> Run | None:
    """The run of ``config`` if its folder exists (complete or not; a complete one verified), else None; never trains."""
    path = run_path(config, root)
    if not (path / "config.json").is_file():
        return None
    run = Run(path, config)
    if run.done:
        run.verify()
    return run


def load_run(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> Run | None:
    """The run of ``config`` if it is complete (verified), else None; never trains."""
    run = find_run(config, root)
    return run if run is not None and run.done else None


def finished(config: TrainConfig, root: str | Path = DEFAULT_ROOT) -> bool:
    """Whether the run of ``config`` is complete or diverged (calling :func:`train_run` again trains nothing)."""
    path = run_path(config, root)
    return (path / "done.json").is_file() or (path / "diverged.json").is_file()


# -- training with caching -------------------------------------------------------------------
def train_run(config: TrainConfig, root: str | Path = DEFAULT_ROOT, progress: bool = True,
              data_root: str | Path | None = None, device: str | torch.device | None = None, *,
              lock_timeout: float | None = None, allow_environment_change: bool | None = None) -> Run:
    """Train ``config`` (or resume it, or return it from disk if complete) and return its Run.

    ``root``: the cache folder (relative paths from the working directory; notebooks pass
    ``profile.runs_dir()``). ``data_root``: where data sets are looked for (None: the
    repository's ``data/``). ``device``: None = CUDA if available, else CPU (not part of the
    hash: recorded in config.json with the rest of :func:`environment`). Raises TrainingDiverged
    on NaN/inf, leaving the last good checkpoint; a diverged run re-raises from its
    ``diverged.json`` without training (delete the folder to retry).

    A complete run is verified and returned. Otherwise the run folder's lock is taken: if another
    process is training the run, this one says so and waits (``lock_timeout`` seconds, None =
    ``$HTR_LOCK_TIMEOUT`` or forever; then :class:`htr_utils.study.files.LockTimeout`) and reads the
    run it finished. Resuming a run started under another environment raises EnvironmentChanged
    unless ``allow_environment_change`` (None = ``$HTR_ALLOW_ENV_CHANGE`` is "1").
    """
    path = run_path(config, root)
    if (path / "done.json").is_file():
        return _finished(path, config)
    with _lock(path, lock_timeout):
        remove_orphan_temps(path)
        if (path / "done.json").is_file():  # another process finished it while we waited
            return _finished(path, config)
        return _train_locked(config, path, progress, data_root, device, allow_environment_change)


def _lock(path: Path, timeout: float | None) -> FileLock:
    if timeout is None and os.environ.get(LOCK_TIMEOUT_VAR):
        timeout = float(os.environ[LOCK_TIMEOUT_VAR])
    return FileLock(path / LOCK_FILE, timeout=timeout, what=f"run {path}")


def _finished(path: Path, config: TrainConfig) -> Run:
    """The complete run, verified; orphan temporary files removed if no process holds its lock."""
    run = Run(path, config)
    run.verify()
    try:
        with FileLock(path / LOCK_FILE, timeout=0):
            remove_orphan_temps(path)
    except (LockTimeout, OSError):  # someone holds it, or a read-only shared cache: leave them
        pass
    return run


def _train_locked(config: TrainConfig, path: Path, progress: bool, data_root, device,
                  allow_environment_change: bool | None, fresh: bool = False) -> Run:
    """train_run's work, with the lock held. ``fresh``: record this process's environment (a restart)."""
    if (path / "diverged.json").is_file():
        info = _read(path / "diverged.json", _read_dict, path)
        raise TrainingDiverged(info["gamma"], info["epoch"], info["step"], info["what"], info["last_good_epoch"])
    if data_root is None:
        data_root = repo_data_root()
    exact_gpu_kernels(device)
    current = environment(device)
    ckpt_path = path / "checkpoint.pt"
    if fresh or not (path / "config.json").is_file() or not ckpt_path.is_file():
        # nothing trained yet: this process's environment is the run's
        _write_config(path, config, current)
    info = Run(path, config).config_info()
    ckpt = _read(ckpt_path, _load_pt, path) if ckpt_path.is_file() else None
    if ckpt is not None:
        if not (0 <= ckpt["epoch"] <= config.epochs and len(ckpt["metrics"]) == ckpt["epoch"]):
            raise DamagedRun(ckpt_path, f"epoch {ckpt['epoch']} with {len(ckpt['metrics'])} metric rows does not "
                             f"fit a {config.epochs}-epoch run", path)
        if ckpt["epoch"] < config.epochs:
            _check_environment(path, info, current, ckpt["epoch"], allow_environment_change)
    trainer = Trainer(config, data_root=str(data_root), device=device)
    metrics: list[dict] = []
    if ckpt is not None:
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
    _write_metrics(path / "metrics.csv", metrics)  # from the checkpoint's rows: a damaged csv is not blessed
    _write_done(path, config, metrics, current)
    return Run(path, config)


def _write_config(path: Path, config: TrainConfig, env: dict) -> None:
    write_json({"config": config.to_dict(), "version": RUNS_VERSION, "hash": config_hash(config), "environment": env},
               path / "config.json", strict=False)


def _check_environment(path: Path, info: dict, current: dict, epoch: int, allow: bool | None) -> None:
    """Refuse (or, if allowed, warn and record) resuming under another environment than the run's."""
    diff = environment_differences(info.get("environment"), current)
    if not diff:
        return
    if allow is None:
        allow = os.environ.get(ALLOW_ENV_VAR) == "1"
    what = ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in diff.items())
    message = (f"run {path} was started under another environment ({what}); resuming it at epoch {epoch + 1} "
               "would give numbers that match neither an uninterrupted run there nor one here")
    if not allow:
        raise EnvironmentChanged(f"{message}. Resume it where it started (e.g. torch.set_num_threads), delete the "
                                 f"folder to retrain it here, or allow the resume with train_run(..., "
                                 f"allow_environment_change=True) or {ALLOW_ENV_VAR}=1.")
    warnings.warn(message + "; resuming anyway (allowed), recorded in config.json's resumed_under", stacklevel=3)
    info.setdefault("resumed_under", []).append({"epoch": epoch, "environment": current})
    write_json(info, path / "config.json", strict=False)


def _write_done(path: Path, config: TrainConfig, metrics: list[dict], env: dict) -> None:
    files = ["config.json", "metrics.csv", "checkpoint.pt"]
    files += [p.relative_to(path).as_posix() for folder in ("curvature", "models")
              for p in sorted((path / folder).glob("epoch_*")) if not p.name.startswith(".")]
    last = metrics[-1]
    write_json({"epochs": config.epochs, "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "test_acc": last["test_acc"], "test_loss": last["test_loss"],
                "train_seconds": math.fsum(r["epoch_seconds"] for r in metrics),
                "curvature_seconds": math.fsum(r["curvature_seconds"] for r in metrics),
                "integrity": {"epochs": config.epochs, "metric_rows": len(metrics), "checkpoint_epoch": config.epochs,
                              "files": {rel: file_sha256(path / rel) for rel in files}},
                "environment": env}, path / "done.json", strict=False)


def _save_curvature(path: Path, record: CurvatureRecord) -> None:
    write_json(record.to_json(), path / "curvature" / f"epoch_{record.epoch:03d}.json", strict=False)


def _save_checkpoint(path: Path, trainer: Trainer, epoch: int, metrics: list[dict]) -> None:
    if trainer.config.keep_checkpoints:
        _torch_save(path / "models" / f"epoch_{epoch:03d}.pt", trainer.model.state_dict())
    _torch_save(path / "checkpoint.pt", {"epoch": epoch, "trainer": trainer.state_dict(), "metrics": metrics})


# -- repair and the command line -------------------------------------------------------------
def repair_run(run_dir: str | Path, progress: bool = True, data_root: str | Path | None = None,
               device: str | torch.device | None = None, lock_timeout: float | None = None) -> Run:
    """Keep what is intact in ``run_dir`` and retrain the rest from the last intact checkpoint.

    If checkpoint.pt is intact (it holds every epoch's metrics), only metrics.csv and done.json are
    rewritten from it; otherwise (the checkpoint or a curvature record damaged: neither can be
    recomputed without the weights of earlier epochs) the run is retrained from the start. Under the
    run's lock. config.json must be readable (it says which config to train).
    """
    path = Path(run_dir)
    with _lock(path, lock_timeout):
        remove_orphan_temps(path)
        run = Run(path)
        damaged = {file.relative_to(path).as_posix() for file, _ in run.problems()}
        if run.done and not damaged:
            return run
        keep = {"metrics.csv", "done.json"} >= damaged and (path / "checkpoint.pt").is_file()
        if keep:
            try:
                ckpt = run.checkpoint()
                keep = len(ckpt["metrics"]) == ckpt["epoch"]
            except (DamagedRun, KeyError, TypeError):
                keep = False
        for name in ("done.json", "diverged.json") if keep else ("done.json", "diverged.json", "checkpoint.pt",
                                                                 "metrics.csv", "curvature", "models"):
            target = path / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        print(f"repair {path}: damaged {sorted(damaged) or 'nothing (unfinished)'}; "
              + ("rebuilding from the intact checkpoint" if keep else "retraining from the start"), file=sys.stderr)
        return _train_locked(run.config, path, progress, data_root, device, allow_environment_change=None,
                             fresh=not keep)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m htr_utils.study.runs",
                                     description="Verify run folders against done.json; --repair damaged ones.")
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="data/runs/<hash> folders")
    parser.add_argument("--repair", action="store_true",
                        help="keep what is intact and retrain the rest from the last intact checkpoint")
    args = parser.parse_args(argv)
    status = 0
    for path in args.runs:
        try:
            if args.repair:
                repair_run(path)
            run = Run(path)
            verified = run.verify()
            state = ("complete, checksums verified" if verified else "complete, no checksums recorded (not verified)"
                     ) if run.done else f"unfinished: {len(run.metrics)}/{run.config.epochs} epochs"
            print(f"{path}: {state}")
        except (DamagedRun, EnvironmentChanged, LockTimeout, TrainingDiverged) as err:
            print(f"{path}: {err}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
