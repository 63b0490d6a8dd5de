"""Where an empty-cache ``make reproduce`` spends its time on the machine it runs on, from a short timed sample.

Each kind of work is timed once on this machine and scaled by how often the grid needs it:

* a training run: ``sample_steps`` plain SGD steps (and a few HTR penalty steps where the run has them)
  and one evaluation pass, scaled to ``epochs × steps per epoch`` (+ ``penalty steps per epoch``);
* the curvature a spectra run records per epoch: one record per set of curvature kinds, at a quarter of
  the Lanczos steps and trace probes and scaled by 4 (the products are linear in both; the operator
  builds are not, so this slightly overstates);
* the spectra readings (C1-C4): a class reading timed at two Lanczos step counts and extrapolated linearly
  in the steps to the profile's count (on ``n`` examples per class: scaled from 10 per class by n / 10, the
  products being linear in the examples); a distance reading as its number of products times the sampled
  seconds per product column;
* the notebooks on a full cache: the last measured wall time (``figures/<profile>/timings.json``), since
  a notebook cannot be sampled in part.

The sample trains nothing into the cache. ``python -m htr_utils.study.grid plan --estimate`` prints the table.
"""
from __future__ import annotations

import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from pathlib import Path

import torch
from torch import nn

from ..curvature import hvp_operator
from ..layers import layer_groups
from .data import class_balanced_subset, epoch_batch_indices
from .paths import figures_dir
from .profiles import Profile, SpectraReading
from .runs import train_run
from .spectra_readings import class_reading, layer_sizes, planned_readings
from .training import Trainer, TrainConfig, derived_seed, prepare_data, sgd_step

CURVATURE_SCALE = 4  # curvature records are sampled at 1/4 of the Lanczos steps and trace probes


@dataclass(frozen=True)
class RunCost:
    """Seconds of one training run's parts on this machine."""
    step: float            # a plain SGD step
    penalty_step: float    # an HTR step (nan when the run has none)
    evaluation: float      # test (and validation) evaluation after an epoch
    curvature: dict[tuple[str, ...], float]  # curvature kinds -> seconds of one epoch's record


@dataclass(frozen=True)
class StageRow:
    """One line of the table: a stage of ``make reproduce`` and its estimated minutes."""
    stage: str
    runs: int
    readings: int
    minutes: float
    basis: str


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def sample_run(cfg: TrainConfig, data_root: str | Path, sample_steps: int = 12, penalty_steps: int = 3) -> RunCost:
    """Time ``sample_steps`` plain steps, ``penalty_steps`` HTR steps (if the run has HTR), one evaluation
    and, for a spectra run, one curvature record per set of kinds (at 1/4 of the Lanczos steps and probes, ×4)."""
    trainer = Trainer(cfg, str(data_root), device="cpu")
    # the batches as Trainer.run_epoch draws them (gathered from the held tensors); small data sets run out of
    # batches before the sample does
    batches = (trainer.train_tensors.batch(p) for p in itertools.cycle(
        epoch_batch_indices(len(trainer.train_tensors), cfg.batch_size, cfg.seed, 1)))
    gen = torch.Generator().manual_seed(derived_seed(cfg.seed, 1, 1))
    trainer.model.train()

    def step(penalised: bool) -> None:
        x, y = next(batches)
        sgd_step(trainer.model, trainer.optimizer, trainer.loss_fn, x, y,
                 trainer.penalty_params if penalised else None, cfg.htr_gamma, cfg.htr_probes, gen)

    step(False)  # warm-up: first-call allocations and kernel selection
    plain = _median_time(lambda: step(False), sample_steps)
    penalty = math.nan
    if cfg.htr_gamma > 0:
        step(True)
        penalty = _median_time(lambda: step(True), penalty_steps)
    test, val = trainer.eval_tensors
    evaluation = _median_time(lambda: (trainer.evaluate(test), trainer.evaluate(val) if val is not None else None), 1)
    curvature: dict[tuple[str, ...], float] = {}
    if cfg.curvature_epochs():
        small = cfg.replace(lanczos_iters=max(2, cfg.lanczos_iters // CURVATURE_SCALE),
                            trace_probes=max(1, cfg.trace_probes // CURVATURE_SCALE))
        trainer.config = small
        for kinds in {cfg.kinds_at(e) for e in cfg.curvature_epochs()}:
            curvature[kinds] = CURVATURE_SCALE * _median_time(lambda: trainer.curvature(0, kinds), 1)
        trainer.config = cfg
    return RunCost(plain, penalty, evaluation, curvature)


def run_seconds(cfg: TrainConfig, cost: RunCost, train_size: int) -> float:
    """Seconds of one run of ``cfg`` from the sampled costs of a run like it."""
    steps = math.ceil(train_size / cfg.batch_size)
    htr_epochs = max(0, cfg.epochs - cfg.htr_start_epoch) if cfg.htr_gamma > 0 else 0
    penalised = htr_epochs * math.ceil(steps / cfg.htr_freq)
    evaluated = sum(cfg.evaluates(e) for e in range(1, cfg.epochs + 1))
    seconds = (cfg.epochs * steps - penalised) * cost.step + evaluated * cost.evaluation
    if penalised:
        seconds += penalised * cost.penalty_step
    seconds += sum(cost.curvature[cfg.kinds_at(e)] for e in cfg.curvature_epochs())
    return seconds


def sample_readings(cfg: TrainConfig, reading: SpectraReading, data_root: str | Path,
                    steps: tuple[int, int] = (4, 8), columns: int = 20) -> dict[str, float]:
    """Seconds of one class reading on 10 examples per class at ``reading``'s Lanczos steps, the seconds of one
    product column of the Hessian the distance readings use, and the number of layers, on a one-epoch run of
    ``cfg`` trained in a temporary cache.

    Class reading: timed at two short step counts and extrapolated linearly in the steps. Distance readings are
    costed by :func:`reading_seconds` from their product count and the sampled seconds per product column
    (one ``matmat`` of ``columns`` columns).
    """
    one = cfg.replace(epochs=1, curvature_every=0, curvature_at=None, keep_checkpoints=True, train_size=2000)
    with tempfile.TemporaryDirectory() as tmp:
        run = train_run(one, root=tmp, progress=False, data_root=data_root)
        t = [_median_time(lambda it=it: class_reading(run, 1, 10, it, data_root), 1) for it in steps]
        slope = (t[1] - t[0]) / (steps[1] - steps[0])
        per_class = max(t[1], t[1] + slope * (reading.lanczos_iters - steps[1]))
        model = run.load_model(1)
        names = [p for ps in layer_groups(model).values() for p in ps]
        data = class_balanced_subset(prepare_data(one, str(data_root)).train, cfg.examples_per_class,
                                     seed=cfg.data_seed)
        op = hvp_operator(model, nn.CrossEntropyLoss(), data, params=names)
        V = torch.randn(op.dim, columns, generator=torch.Generator().manual_seed(0))
        op.matmat(V)  # warm-up (the operator's first product traces and verifies its map)
        per_column = _median_time(lambda: op.matmat(V), 3) / columns
    return {"class": per_class, "column": per_column, "layers": float(len(layer_sizes(model)))}


def reading_seconds(kind: str, arg: int, reading: SpectraReading, sample: dict[str, float]) -> float:
    """Seconds of one planned reading (``planned_readings``' kind and argument) from :func:`sample_readings`.

    A class reading on n examples per class: the 10-per-class time × n / 10. A distance reading with S null
    subsets: (2K full chains + K per layer + K per layer and subset) × its Lanczos steps × seconds per product
    column; the step check: (2K + K per layer) at twice the distance steps, with its own K.
    """
    if kind == "class":
        return sample["class"] * arg / 10
    L = sample["layers"]
    if kind == "distance":
        K = reading.slq_probes
        return (2 * K + K * L + K * L * arg) * reading.distance_iters * sample["column"]
    if kind == "step_check":
        return (2 * arg + arg * L) * 2 * reading.distance_iters * sample["column"]
    raise ValueError(f"unknown reading kind {kind!r}")


def _train_size(cfg: TrainConfig, data_root: str | Path, cache: dict) -> int:
    key = (cfg.dataset, cfg.train_size, cfg.val_fraction, cfg.data_seed)
    if key not in cache:
        cache[key] = len(Trainer(cfg.replace(curvature_every=0, curvature_at=None), str(data_root), device="cpu").data.train)
    return cache[key]


def _cost_key(cfg: TrainConfig) -> tuple:
    """Runs that cost the same per step: model, size, batch, data size and whether they take penalty steps."""
    return (cfg.model, cfg.width, tuple(sorted(cfg.model_kwargs.items())), cfg.batch_size, cfg.dataset,
            cfg.train_size, cfg.val_fraction, cfg.htr_gamma > 0, cfg.htr_params, cfg.htr_probes,
            tuple(cfg.curvature_epochs()), cfg.curvature_kinds, cfg.curvature_kinds_epochs, cfg.lanczos_iters,
            cfg.trace_probes, cfg.examples_per_class)


def estimate(P: Profile, stages: Sequence[tuple[str, Sequence[TrainConfig]]], data_root: str | Path,
             progress: Callable[[str], None] = print) -> list[StageRow]:
    """The table: per stage, its runs' estimated minutes (runs that cost alike are sampled once), the spectra
    readings, and the notebooks' last measured time."""
    costs: dict[tuple, RunCost] = {}
    sizes: dict = {}
    rows = []
    for stage, configs in stages:
        seconds = 0.0
        for cfg in configs:
            key = _cost_key(cfg)
            if key not in costs:
                progress(f"sampling {stage}: {cfg.model} batch {cfg.batch_size}"
                         + (f", HTR on {cfg.htr_params}" if cfg.htr_gamma > 0 else "")
                         + (", curvature" if cfg.curvature_epochs() else ""))
                costs[key] = sample_run(cfg, data_root)
            seconds += run_seconds(cfg, costs[key], _train_size(cfg, data_root, sizes))
        rows.append(StageRow(stage, len(configs), 0, seconds / 60, "sampled steps × steps of the runs"))
    readings, seconds = 0, 0.0
    for label, cfg in P.spectra_runs.items():
        reading = P.spectra_reading.get(label)
        if reading is None:
            continue
        progress(f"sampling readings of {label}")
        sample = sample_readings(cfg, reading, data_root)
        for kind, (epoch, arg) in planned_readings(SimpleNamespace(config=cfg), reading):
            readings += 1
            seconds += reading_seconds(kind, arg, reading, sample)
    rows.append(StageRow("spectra readings (C1-C4)", 0, readings, seconds / 60,
                         "class reading timed at 2 step counts; distance readings: products × sampled product time"))
    rows.append(StageRow("notebooks on the cache", 0, 0, notebook_minutes(P.name), "last measured (timings.json)"))
    return rows


def notebook_minutes(profile: str) -> float:
    """The notebooks' wall time on a full cache, as last measured (``figures/<profile>/timings.json``); nan if none."""
    path = figures_dir(profile) / "timings.json"
    if not path.is_file():
        return math.nan
    times = [t.get("wall_s") for t in json.loads(path.read_text()).values()]
    return sum(t for t in times if t) / 60


def table(rows: Sequence[StageRow]) -> str:
    """The estimate as a Markdown table with its total."""
    lines = ["| stage | runs | readings | minutes | basis |", "|---|---|---|---|---|"]
    lines += [f"| {r.stage} | {r.runs} | {r.readings} | {r.minutes:.1f} | {r.basis} |" for r in rows]
    total = sum(r.minutes for r in rows if not math.isnan(r.minutes))
    return "\n".join(lines + [f"| **total** | {sum(r.runs for r in rows)} | {sum(r.readings for r in rows)} | "
                              f"**{total:.1f}** | |"])
