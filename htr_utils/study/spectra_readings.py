"""Readings of C1-C4 (PROTOCOL.md) taken from a spectra run's kept weights, cached in ``<run>/readings/``.

* :class:`ClassReading` (C1, C2's noise floor, C3): at one epoch on ``n`` examples per class, per block
  (``"full"`` and every Conv/Linear layer): the bulk edge λ_max(G_within) from the class split of G
  (:mod:`htr_utils.class_structure`), the top Hessian Ritz values, how many lie above the edge, and
  the overlap of the top-C Ritz vectors with the span of the C class means; for the full block also
  the top Ritz values of a second, independent Lanczos run.
* :class:`DistanceReading` (C4): the quadrature atoms of independent SLQ runs of the full Hessian (two
  pools of K), of every layer block (K each) and of the Hessian restricted to S random coordinate
  subsets of each layer's size (K each; the size-matched null of PROTOCOL.md's amendment 2; amendment 5
  takes S = 0). C4's step check reads one epoch again at twice the distance steps (``RunReadings.step_check``).

The curvature examples are drawn as the runs draw theirs (:func:`htr_utils.study.data.class_balanced_subset`
with the run's ``data_seed``; on 10 per class they are the run's own), in batches of at most 10 per
class; model in eval mode, parameters = every Conv/Linear weight (the runs' layer blocks), float32 as
the runs, on ``device`` (CPU unless given). All Lanczos chains of one reading advance in lockstep, one batched product per step. Every
random start derives from (run seed, epoch, examples per class, chain), so a reading repeats exactly.
A reading is computed once and read back from its JSON file afterwards.

:mod:`htr_utils.study.grid` trains the profile's spectra runs and takes their readings ahead of the
notebooks (:func:`read_run`).
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..class_structure import class_structure, outliers_above, subspace_overlap, within_operator
from ..curvature import hvp_operator
from ..lanczos import LanczosChain, breakdown_tolerance, rademacher
from ..layers import layer_groups
from .data import class_balanced_subset, num_classes
from .files import read_json, write_json
from .paths import data_root as default_data_root
from .profiles import get_profile
from .runs import exact_gpu_kernels, train_run
from .training import _progress_disabled, derived_seed, prepare_data

FULL = "full"
BATCH_PER_CLASS = 10


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ClassBlock:
    dim: int
    bulk_edge: float
    hess_top: tuple[float, ...]          # top 3C Ritz values of Hess, descending
    outliers: int                         # Ritz values of Hess above bulk_edge
    overlap: float                        # top-C Ritz vectors vs span of the class means
    overlap_chance: float                 # C / dim
    hess_top_restart: tuple[float, ...] = ()  # full block: a second Lanczos run from an independent start
    # issue 30 (C1 / C3 (a) amendment): each of the top 2C Ritz vectors' squared projection on the class-mean span
    # (descending eigenvalue), and the top 3C Ritz values of G_within; empty in readings taken before
    overlaps: tuple[float, ...] = ()
    within_top: tuple[float, ...] = ()


@dataclass(frozen=True)
class ClassReading:
    epoch: int
    examples_per_class: int
    lanczos_iters: int
    blocks: dict[str, ClassBlock]
    seconds: float = float("nan")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "ClassReading":
        blocks = {k: ClassBlock(**{**v, "hess_top": tuple(v["hess_top"]),
                                   "hess_top_restart": tuple(v.get("hess_top_restart", ())),
                                   "overlaps": tuple(v.get("overlaps", ())), "within_top": tuple(v.get("within_top", ()))})
                  for k, v in d["blocks"].items()}
        return cls(int(d["epoch"]), int(d["examples_per_class"]), int(d["lanczos_iters"]), blocks,
                   float(d.get("seconds") or float("nan")))


Atoms = list[tuple[list[float], list[float]]]  # one (nodes, weights) per SLQ run


@dataclass(frozen=True)
class DistanceReading:
    epoch: int
    probes: int
    lanczos_iters: int
    full_a: Atoms
    full_b: Atoms
    layers: dict[str, Atoms]
    null: dict[str, list[Atoms]] = field(default_factory=dict)  # layer -> S subsets of its size, K runs each
    seconds: float = float("nan")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict) -> "DistanceReading":
        pairs = lambda runs: [(list(n), list(w)) for n, w in runs]  # noqa: E731
        return cls(int(d["epoch"]), int(d["probes"]), int(d["lanczos_iters"]), pairs(d["full_a"]), pairs(d["full_b"]),
                   {k: pairs(v) for k, v in d["layers"].items()},
                   {k: [pairs(s) for s in v] for k, v in d.get("null", {}).items()},
                   float(d.get("seconds") or float("nan")))


@dataclass
class RunReadings:
    classes: dict[tuple[int, int], ClassReading] = field(default_factory=dict)
    distances: dict[int, DistanceReading] = field(default_factory=dict)
    step_check: DistanceReading | None = None  # C4's step check: one epoch again at twice the distance steps


# ----------------------------------------------------------------------------- lockstep Lanczos


def lockstep(matmat, dim: int, dtype: torch.dtype, device: torch.device, chains: Sequence[tuple[Tensor | None, int]],
             num_iters: int, keep_basis: bool = False) -> list[Any]:
    """Lanczos on Pᵀ A P for every (coordinate index set or None = all, seed) in ``chains``, all advanced together:
    one ``matmat`` of the embedded current vectors per step. Returns one Tridiagonal per chain."""
    tol = breakdown_tolerance(dtype)
    runs = []
    for idx, seed in chains:
        n = dim if idx is None else len(idx)
        start = rademacher(n, torch.Generator().manual_seed(seed), dtype, device)
        runs.append((None if idx is None else idx.to(device), LanczosChain(start, min(num_iters, n), tol)))
    while live := [(idx, c) for idx, c in runs if not c.done]:
        V = torch.zeros((dim, len(live)), dtype=dtype, device=device)
        for j, (idx, c) in enumerate(live):
            if idx is None:
                V[:, j] = c.q
            else:
                V[idx, j] = c.q
        W = matmat(V)
        for j, (idx, c) in enumerate(live):
            c.step(W[:, j] if idx is None else W[idx, j])
    return [c.result(keep_basis) for _, c in runs]


# ----------------------------------------------------------------------------- inputs of a reading


def _examples(run: Any, per_class: int, data_root: str | Path | None,
              device: str | torch.device = "cpu") -> list[tuple[Tensor, Tensor]]:
    """The class-balanced curvature examples of ``run`` (``per_class`` per class), in batches of ≤ 10 per class."""
    cfg = run.config
    train = prepare_data(cfg, root=str(data_root or default_data_root())).train
    x, y = class_balanced_subset(train, per_class, seed=cfg.data_seed)
    order = {c: torch.nonzero(y == c).flatten() for c in torch.unique(y).tolist()}
    batches = []
    for start in range(0, per_class, BATCH_PER_CLASS):
        rows = torch.cat([ix[start:start + BATCH_PER_CLASS] for ix in order.values()])
        batches.append((x[rows].to(device), y[rows].to(device)))
    return batches


def _blocks(model: nn.Module) -> tuple[list[str], dict[str, Tensor]]:
    """Parameter names of every Conv/Linear weight block, and each layer's flat coordinates."""
    groups = layer_groups(model)
    names = [p for ps in groups.values() for p in ps]
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    offsets, start = {}, 0
    for n in names:
        offsets[n] = (start, sizes[n])
        start += sizes[n]
    idx = {layer: torch.cat([torch.arange(offsets[n][0], sum(offsets[n])) for n in ps]) for layer, ps in groups.items()}
    return names, idx


def layer_sizes(model: nn.Module) -> dict[str, int]:
    """Number of coordinates of every Conv/Linear weight block, in forward order (the layers the readings use)."""
    return {layer: len(ix) for layer, ix in _blocks(model)[1].items()}


def _top(tri: Any, k: int) -> np.ndarray:
    return np.sort(tri.eigh()[0])[::-1][:k]


# ----------------------------------------------------------------------------- the readings


def class_reading(run: Any, epoch: int, per_class: int, lanczos_iters: int = 128,
                  data_root: str | Path | None = None, device: str | torch.device = "cpu") -> ClassReading:
    """The :class:`ClassReading` of ``run`` at ``epoch`` on ``per_class`` examples per class (cached)."""
    path = run.path / "readings" / f"class_e{epoch:03d}_n{per_class}_it{lanczos_iters}.json"
    if path.is_file():
        return ClassReading.from_json(read_json(path))
    t0 = time.perf_counter()
    model = run.load_model(epoch, device)
    C = num_classes(run.config.dataset)
    names, idx = _blocks(model)
    data = _examples(run, per_class, data_root, device)
    loss = nn.CrossEntropyLoss()
    hess = hvp_operator(model, loss, data, params=names, kind="hessian")
    ggn = hvp_operator(model, loss, data, params=names, kind="ggn")
    cs = class_structure(model, data, params=names, num_classes=C)
    within = within_operator(ggn, cs)
    blocks = {FULL: None, **idx}
    seed = lambda *parts: derived_seed(run.config.seed, epoch, per_class, *parts)  # noqa: E731
    h_tris = lockstep(hess.matmat, hess.dim, hess.dtype, hess.device,
                      [(ix, seed(0, b)) for b, ix in enumerate(blocks.values())] + [(None, seed(1, 0))],
                      lanczos_iters, keep_basis=True)
    w_tris = lockstep(within.matmat, within.dim, within.dtype, within.device,
                      [(ix, seed(2, b)) for b, ix in enumerate(blocks.values())], lanczos_iters)
    means = cs.class_means()
    out = {}
    for b, (name, ix) in enumerate(blocks.items()):
        tri = h_tris[b]
        evals, evecs = tri.eigh()
        within = w_tris[b].eigh()[0]
        edge = float(within.max())
        k = min(C, len(evals))
        vectors = tri.basis.T.double() @ torch.as_tensor(evecs[:, -k:], dtype=torch.float64, device=tri.basis.device)
        basis = (means if ix is None else means[ix.to(means.device)]).double().cpu()
        k2 = min(2 * C, len(evals))
        top2 = tri.basis.T.double() @ torch.as_tensor(evecs[:, -k2:][:, ::-1].copy(), dtype=torch.float64,
                                                      device=tri.basis.device)
        dim = hess.dim if ix is None else len(ix)
        out[name] = ClassBlock(dim, edge, tuple(float(v) for v in np.sort(evals)[::-1][:3 * C]),
                               outliers_above(evals, edge), subspace_overlap(vectors.cpu(), basis),
                               C / dim, tuple(float(v) for v in _top(h_tris[-1], 3 * C)) if ix is None else (),
                               tuple(subspace_overlap(top2[:, j:j + 1].cpu(), basis) for j in range(k2)),
                               tuple(float(v) for v in np.sort(within)[::-1][:3 * C]))
    reading = ClassReading(epoch, per_class, lanczos_iters, out, time.perf_counter() - t0)
    write_json(reading.to_json(), path, strict=False)
    return reading


def distance_reading(run: Any, epoch: int, probes: int, lanczos_iters: int = 128, null_subsets: int = 0,
                     data_root: str | Path | None = None, device: str | torch.device = "cpu") -> DistanceReading:
    """The :class:`DistanceReading` of ``run`` at ``epoch`` on the run's curvature examples (cached); every layer
    also gets ``null_subsets`` random coordinate subsets of its size, ``probes`` SLQ runs each."""
    per_class = run.config.examples_per_class
    path = run.path / "readings" / f"distance_e{epoch:03d}_k{probes}_null{null_subsets}_it{lanczos_iters}.json"
    if path.is_file():
        return DistanceReading.from_json(read_json(path))
    t0 = time.perf_counter()
    model = run.load_model(epoch, device)
    names, idx = _blocks(model)
    hess = hvp_operator(model, nn.CrossEntropyLoss(), _examples(run, per_class, data_root, device), params=names)
    seed = lambda *parts: derived_seed(run.config.seed, epoch, 7919, *parts)  # noqa: E731
    chains: list[tuple[Tensor | None, int]] = [(None, seed(0, p)) for p in range(2 * probes)]
    keys = [("full_a" if p < probes else "full_b", None) for p in range(2 * probes)]
    for li, (layer, ix) in enumerate(idx.items()):
        chains += [(ix, seed(1, li, p)) for p in range(probes)]
        keys += [("layers", layer)] * probes
    gen = torch.Generator().manual_seed(seed(3))
    for li, (layer, ix) in enumerate(idx.items()):
        for s in range(null_subsets):
            subset = torch.randperm(hess.dim, generator=gen)[: len(ix)].sort().values.to(hess.device)
            chains += [(subset, seed(2, li, s, p)) for p in range(probes)]
            keys += [("null", (layer, s))] * probes
    tris = lockstep(hess.matmat, hess.dim, hess.dtype, hess.device, chains, lanczos_iters)
    atoms: dict[str, Any] = {"full_a": [], "full_b": [], "layers": {k: [] for k in idx}, "null": {}}
    for (what, layer), tri in zip(keys, tris):
        evals, evecs = tri.eigh()
        pair = ([float(v) for v in evals], [float(v) for v in evecs[0] ** 2])
        if layer is None:
            atoms[what].append(pair)
        elif what == "null":
            name, s = layer
            subsets = atoms["null"].setdefault(name, [])
            if len(subsets) == s:
                subsets.append([])
            subsets[s].append(pair)
        else:
            atoms[what].setdefault(layer, []).append(pair)
    reading = DistanceReading(epoch, probes, lanczos_iters, atoms["full_a"], atoms["full_b"], atoms["layers"],
                              atoms["null"], time.perf_counter() - t0)
    write_json(reading.to_json(), path, strict=False)
    return reading


def planned_readings(run: Any, reading: Any) -> list[tuple[str, tuple]]:
    """The readings the profile asks of ``run``: ("class", (epoch, n)), ("distance", (epoch, null subsets)) and,
    where the reading names a step-check epoch, ("step_check", (epoch, probes)) at twice the distance steps."""
    large_epochs = reading.large_epochs if reading.large_epochs is not None else (run.config.epochs,)
    plan = [("class", (e, reading.examples_per_class)) for e in reading.class_epochs]
    plan += [("class", (e, reading.large_examples_per_class)) for e in large_epochs]
    check = getattr(reading, "step_check_epoch", None)
    if check is not None:  # made first: it decides the step count of the distance readings (amendment 5)
        plan += [("step_check", (check, reading.step_check_probes))]
    plan += [("distance", (e, reading.null_subsets)) for e in reading.distance_epochs]
    return plan


def _distance_iters(reading: Any) -> int:
    """Lanczos steps of ``reading``'s distance readings (its own field where it has one, else the class readings')."""
    own = getattr(reading, "distance_lanczos_iters", None)
    return reading.lanczos_iters if own is None else int(own)


def read_run(run: Any, reading: Any, progress: bool = True, data_root: str | Path | None = None,
             device: str | torch.device | None = None, what: Sequence[str] = ("class", "distance")) -> RunReadings:
    """The readings of the kinds ``what`` ("class": C1-C3, "distance": C4 with its step check) that ``reading`` (a
    :class:`htr_utils.study.profiles.SpectraReading`) asks of ``run``, computed on ``device`` (None: CPU) where
    not cached. Class readings take ``reading.lanczos_iters`` steps, distance readings
    ``reading.distance_lanczos_iters`` (its step check twice that)."""
    device = device or "cpu"
    exact_gpu_kernels(device)
    out = RunReadings()
    steps = _distance_iters(reading)
    plan = [(kind, args) for kind, args in planned_readings(run, reading)
            if kind in what or (kind == "step_check" and "distance" in what)]  # ("step_check",): the check alone
    bar = tqdm(plan, desc=f"readings {run.path.name}", disable=_progress_disabled(progress), leave=False)
    for what, (epoch, arg) in bar:
        if what == "class":
            out.classes[(epoch, arg)] = class_reading(run, epoch, arg, reading.lanczos_iters, data_root, device)
        elif what == "step_check":
            out.step_check = distance_reading(run, epoch, arg, 2 * steps, 0, data_root, device)
        else:
            out.distances[epoch] = distance_reading(run, epoch, reading.slq_probes, steps, arg, data_root, device)
    return out


def spectra_readings(profile: str | None = None, progress: bool = True, labels: Sequence[str] | None = None,
                     what: Sequence[str] = ("class", "distance")) -> dict[str, RunReadings]:
    """{label: RunReadings} of the profile's spectra runs (trained first if missing), readings of the kinds
    ``what`` only."""
    P = get_profile(profile)
    runs = {label: train_run(cfg, root=P.runs_dir(), progress=progress, data_root=default_data_root())
            for label, cfg in P.spectra_runs.items() if labels is None or label in labels}
    if "distance" in what:  # C4's step check before any other distance reading: it fixes their step count
        for label, run in runs.items():
            read_run(run, P.spectra_reading[label], progress, default_data_root(), what=("step_check",))
    return {label: read_run(run, P.spectra_reading[label], progress, default_data_root(), what=what)
            for label, run in runs.items()}
