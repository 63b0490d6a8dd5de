"""SGD training with optional Hessian trace regularisation (HTR), and per-epoch curvature.

Epochs are numbered from 1; "epoch 0" is the initialisation (curvature can be recorded
there, before any step). Everything random is seeded from the config: the model's
initialisation (global torch RNG, seeded once), the batch order (a permutation seeded by
(seed, epoch) only, see :func:`data.epoch_batch_indices`), and the penalty's probes (a generator seeded
from (seed, epoch)), so a run resumed from a checkpoint repeats an uninterrupted one exactly.
File handling (checkpoints, caching) lives in :mod:`htr_utils.study.runs`.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import random
import sys
import time
import types
from dataclasses import asdict, dataclass, field, fields, replace
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..curvature import KINDS, hvp_operator
from .data import DATASETS, IndexedTensors, class_balanced_subset, epoch_batch_indices, in_channels, load_dataset, \
    num_classes, subsample, validation_split
from ..hutchinson import hutchinson_trace, trace_penalty
from ..lanczos import slq_density
from ..layers import layer_groups, middle_layers, middle_parameters_authors
from ..layerwise import layerwise_spectra, layerwise_trace
from .models import MODELS, build_model
from .records import BlockCurvature, CurvatureRecord, KindCurvature, TraceRecord

HTR_PARAM_RULES = ("all", "middle", "middle_authors")
#: Evaluation batch (benchmarks/RESULTS.md section 9: 500 is no faster, 2000 and 10000 are slower on the 2-core CPU).
EVAL_BATCH = 1000
TIMING_COLUMNS = ("epoch_seconds", "step_seconds", "penalty_step_seconds", "eval_seconds", "curvature_seconds")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_ints(cfg: "TrainConfig", names: tuple[str, ...], low: int, optional: bool = False) -> None:
    """Each field is an integer >= ``low`` (or None when ``optional``); the error names the field and the range."""
    for name in names:
        v = getattr(cfg, name)
        if (v is None and optional) or (_is_int(v) and v >= low):
            continue
        allowed = f"an integer >= {low}" + (" or None" if optional else "")
        raise ValueError(f"TrainConfig.{name} must be {allowed}, got {v!r}")


def _check_reals(cfg: "TrainConfig", names: tuple[str, ...], allowed: str, ok) -> None:
    """Each field is a finite real number (not a bool) satisfying ``ok``; NaN and inf are refused."""
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and ok(v):
            continue
        raise ValueError(f"TrainConfig.{name} must be {allowed}, got {v!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a run's numbers; its hash names the run's cache folder.

    Data: ``train_size`` / ``test_size`` are stratified seeded subsets (None = all);
    ``val_fraction`` > 0 carves a validation split out of the training set first (then
    ``train_size`` subsamples what is left). ``data_seed`` fixes these subsets and the
    curvature subset, so runs that differ only in ``seed`` (init + batch order) see the same data.

    HTR: loss + htr_gamma * Hutchinson estimate of tr(∇²loss) over ``htr_params`` ("all" =
    every trainable tensor, as the authors; "middle" = middle half of the Conv/Linear weight
    layers; "middle_authors" = the authors' index rule; or a tuple of parameter names), with
    ``htr_probes`` Rademacher probes, on steps whose index within the epoch is a multiple of
    ``htr_freq``, in epochs e > ``htr_start_epoch`` (epochs 1-based: the first
    ``htr_start_epoch`` epochs are plain SGD, i.e. the authors' 0-based ``epoch >= sp``).

    Curvature (``curvature_at`` given, or ``curvature_every`` > 0): at the epochs ``curvature_at`` names, else at
    epoch 0 (if ``curvature_init``), every ``curvature_every``-th epoch and the
    last one, on ``examples_per_class`` training examples per class, model in eval mode, over the
    weights of all Conv/Linear layers (the union of ``layer_groups``; biases and BatchNorm
    excluded, as the paper's layer blocks). The first kind of ``curvature_kinds`` is computed at
    every curvature epoch, the others only at ``curvature_kinds_epochs`` (None = every one).
    Test (and validation) accuracy and loss after every ``eval_every``-th epoch and the last; NaN after the others.
    """
    dataset: str = "fashionmnist"
    model: str = "lenet"
    width: float = 1.0
    model_kwargs: dict = field(default_factory=dict)
    train_size: int | None = None
    test_size: int | None = None
    val_fraction: float = 0.0
    data_seed: int = 0
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 10
    milestones: tuple[int, ...] = ()
    lr_gamma: float = 0.25
    seed: int = 0
    htr_gamma: float = 0.0
    htr_params: str | tuple[str, ...] = "all"
    htr_freq: int = 50
    htr_start_epoch: int = 0
    htr_probes: int = 10
    curvature_every: int = 0
    curvature_init: bool = True
    curvature_kinds: tuple[str, ...] = ("hessian",)
    curvature_kinds_epochs: tuple[int, ...] | None = None
    curvature_at: tuple[int, ...] | None = None
    eval_every: int = 1
    examples_per_class: int = 10
    lanczos_iters: int = 128
    slq_probes: int = 1
    top_k: int | None = None
    trace_probes: int = 50
    layerwise: bool = True
    keep_checkpoints: bool = False

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("dataset", self.dataset.lower())
        set_("model", self.model.lower())
        set_("milestones", tuple(int(m) for m in self.milestones))
        set_("curvature_kinds", tuple(self.curvature_kinds))
        set_("model_kwargs", dict(self.model_kwargs))
        if self.curvature_kinds_epochs is not None:
            set_("curvature_kinds_epochs", tuple(int(e) for e in self.curvature_kinds_epochs))
        if self.curvature_at is not None:
            set_("curvature_at", tuple(sorted({int(e) for e in self.curvature_at})))
            if not self.curvature_at or not all(0 <= e <= self.epochs for e in self.curvature_at):
                raise ValueError(f"TrainConfig.curvature_at: epochs between 0 and epochs={self.epochs} expected, got "
                                 f"{self.curvature_at}; or leave it None to use curvature_every")
        if not isinstance(self.htr_params, str):
            set_("htr_params", tuple(self.htr_params))
        if self.dataset not in DATASETS:
            raise ValueError(f"TrainConfig.dataset: unknown dataset {self.dataset!r}; valid: {', '.join(DATASETS)}")
        if self.model not in MODELS:
            raise ValueError(f"TrainConfig.model: unknown model {self.model!r}; valid: {', '.join(MODELS)}")
        if isinstance(self.htr_params, str) and self.htr_params not in HTR_PARAM_RULES:
            raise ValueError(f"TrainConfig.htr_params must be one of {HTR_PARAM_RULES} or a tuple of names, got {self.htr_params!r}")
        bad = [k for k in self.curvature_kinds if k not in KINDS]
        if bad or not self.curvature_kinds:
            raise ValueError(f"TrainConfig.curvature_kinds must be a non-empty subset of {KINDS}, got {self.curvature_kinds}")
        _check_ints(self, ("batch_size", "epochs", "eval_every", "htr_freq", "htr_probes", "examples_per_class", "lanczos_iters",
                           "slq_probes", "trace_probes"), low=1)
        _check_ints(self, ("data_seed", "seed", "htr_start_epoch", "curvature_every"), low=0)
        _check_ints(self, ("train_size", "test_size", "top_k"), low=1, optional=True)
        _check_reals(self, ("lr", "width", "lr_gamma"), "a finite number > 0", lambda v: v > 0)
        _check_reals(self, ("htr_gamma", "weight_decay", "momentum"), "a finite number >= 0", lambda v: v >= 0)
        _check_reals(self, ("val_fraction",), "a finite number in [0, 1)", lambda v: 0 <= v < 1)

    def to_dict(self) -> dict:
        """Plain JSON-able dict (tuples become lists). ``curvature_at`` (None) and ``eval_every`` (1) are left out at
        their defaults, so configs that do not use them keep the run-cache key they had before the fields existed."""
        d = asdict(self)
        if d["curvature_at"] is None:
            del d["curvature_at"]
        if d["eval_every"] == 1:
            del d["eval_every"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)

    def curvature_epochs(self) -> list[int]:
        """Epochs with a curvature record: ``curvature_at`` where given; else 0 (init), every
        ``curvature_every``-th, and the last."""
        if self.curvature_at is not None:
            return list(self.curvature_at)
        if self.curvature_every <= 0:
            return []
        epochs = {self.epochs, *range(self.curvature_every, self.epochs + 1, self.curvature_every)}
        return sorted(epochs | ({0} if self.curvature_init else set()))

    def evaluates(self, epoch: int) -> bool:
        """Whether the test (and validation) split is evaluated after ``epoch``: every ``eval_every``-th and the
        last (the metrics of other epochs hold NaN there)."""
        return epoch % self.eval_every == 0 or epoch == self.epochs

    def kinds_at(self, epoch: int) -> tuple[str, ...]:
        """Curvature kinds computed at ``epoch``."""
        if epoch not in self.curvature_epochs():
            return ()
        first, rest = self.curvature_kinds[0], self.curvature_kinds[1:]
        if self.curvature_kinds_epochs is None or epoch in self.curvature_kinds_epochs:
            return (first, *rest)
        return (first,)


class TrainingDiverged(RuntimeError):
    """The loss (or the parameters) became NaN/inf; the run's last good checkpoint is kept."""

    def __init__(self, gamma: float, epoch: int, step: int, what: str = "loss", last_good_epoch: int | None = None):
        self.gamma, self.epoch, self.step, self.what, self.last_good_epoch = gamma, epoch, step, what, last_good_epoch
        good = "" if last_good_epoch is None else f"; last good checkpoint: epoch {last_good_epoch}"
        super().__init__(f"training diverged: non-finite {what} at epoch {epoch}, step {step} "
                         f"(htr_gamma={gamma:g}){good}")


def derived_seed(*parts: int) -> int:
    """A 32-bit seed from a tuple of integers (independent streams per purpose and epoch)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset | None
    test: Dataset


def prepare_data(config: TrainConfig, root: str = "data") -> DataBundle:
    """Training / validation / test sets of ``config`` (the curvature subset: :attr:`Trainer.curvature_data`)."""
    full = load_dataset(config.dataset, root=root, train=True)
    val = None
    if config.val_fraction > 0:
        full, val = validation_split(full, config.val_fraction, seed=config.data_seed)
    train = subsample(full, config.train_size, seed=config.data_seed)
    test = subsample(load_dataset(config.dataset, root=root, train=False), config.test_size, seed=config.data_seed)
    return DataBundle(train, val, test)


def penalty_parameter_names(model: nn.Module, rule: str | tuple[str, ...]) -> list[str]:
    """Names of the parameters whose Hessian trace HTR penalises (see :class:`TrainConfig`)."""
    if rule == "all":
        return [n for n, p in model.named_parameters() if p.requires_grad]
    if rule == "middle":
        return middle_layers(layer_groups(model))
    if rule == "middle_authors":
        return middle_parameters_authors(model)
    return list(rule)


def _batch_norm_elementary(input: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
                           weight: torch.Tensor | None = None, bias: torch.Tensor | None = None, training: bool = False,
                           momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    """F.batch_norm from elementary ops (differentiable to any order), same running-statistics update."""
    shape = (1, -1) + (1,) * (input.dim() - 2)
    if training:
        dims = [0, *range(2, input.dim())]
        mean, var = input.mean(dims), input.var(dims, unbiased=False)
        if running_mean is not None and running_var is not None:
            n = input.numel() / input.size(1)
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / max(n - 1, 1))
    else:
        mean, var = running_mean, running_var
    out = (input - mean.view(shape)) * torch.rsqrt(var.view(shape) + eps)
    if weight is not None:
        out = out * weight.view(shape)
    return out + bias.view(shape) if bias is not None else out


def _elementary_forward(self: nn.modules.batchnorm._BatchNorm, input: torch.Tensor) -> torch.Tensor:
    """``_BatchNorm.forward`` with :func:`_batch_norm_elementary` in place of ``F.batch_norm`` (same arguments)."""
    self._check_input_dim(input)
    momentum = 0.0 if self.momentum is None else self.momentum
    if self.training and self.track_running_stats and self.num_batches_tracked is not None:
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
    bn_training = self.training or (self.running_mean is None and self.running_var is None)
    buffers = not self.training or self.track_running_stats
    return _batch_norm_elementary(input, self.running_mean if buffers else None, self.running_var if buffers else None,
                                  self.weight, self.bias, bn_training, momentum, self.eps)


@contextlib.contextmanager
def composite_batch_norm(model: nn.Module) -> Iterator[None]:
    """Within the block, the BatchNorm layers of ``model`` (and of no other model) use :func:`_batch_norm_elementary`.

    The gradient of the trace penalty needs third derivatives, which PyTorch's fused
    batch_norm does not provide ("batch_norm does not support 3rd+ order derivatives"). The
    swap is an instance attribute on each BatchNorm module, so ``torch.nn.functional`` and
    other models in the process (other threads included) are untouched.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in layers:
        m.forward = types.MethodType(_elementary_forward, m)
    try:
        yield
    finally:
        for m in layers:
            del m.forward


class NonFiniteLoss(FloatingPointError):
    """Raised by :func:`sgd_step` before stepping when the objective is NaN/inf; ``what`` names the culprit."""

    def __init__(self, what: str):
        self.what = what
        super().__init__(f"non-finite {what}")


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: nn.Module, x: torch.Tensor,
             y: torch.Tensor, penalty_params: list[torch.Tensor] | None = None, gamma: float = 0.0,
             probes: int = 10, generator: torch.Generator | None = None, batched_probes: bool = False
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """One optimiser step on loss(model(x), y) [+ γ · trace_penalty over ``penalty_params``].

    ``batched_probes`` is trace_penalty's ``batched`` (the training runs use the default loop).

    On penalty steps, BatchNorm layers use the elementary batch norm (the fused one has no third
    derivative). Raises :class:`NonFiniteLoss` before touching the parameters if the objective is
    not finite. Returns (logits, loss, penalty or None), the latter two still attached.
    """
    penalised = bool(penalty_params)
    has_bn = penalised and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    with composite_batch_norm(model) if has_bn else contextlib.nullcontext():
        out = model(x)
    loss = loss_fn(out, y)
    total, pen = loss, None
    if penalised:
        pen = trace_penalty(loss, penalty_params, probes, generator=generator, batched=batched_probes)
        total = loss + gamma * pen
    if not math.isfinite(float(total.detach())):
        raise NonFiniteLoss("loss + htr_gamma * trace penalty" if math.isfinite(float(loss.detach())) else "loss")
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return out, loss, pen


def evaluate(model: nn.Module, dataset: Dataset | IndexedTensors, batch_size: int = EVAL_BATCH,
             device: torch.device | str = "cpu") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` in eval mode (the model's mode is restored).

    Runs under ``torch.inference_mode`` (no autograd records at all); the examples are sliced from the
    data set's tensors in order, ``batch_size`` at a time.
    """
    data = dataset if isinstance(dataset, IndexedTensors) else IndexedTensors(dataset)
    was = model.training
    model.eval()
    loss_sum = correct = 0.0
    try:
        with torch.inference_mode():
            for x, y in data.slices(batch_size):
                x, y = x.to(device), y.to(device)
                out = model(x)
                loss_sum += float(nn.functional.cross_entropy(out, y, reduction="sum"))
                correct += float((out.argmax(1) == y).sum())
    finally:
        model.train(was)
    return loss_sum / len(data), correct / len(data)


def _in_jupyter_kernel() -> bool:
    try:  # IPython is there only inside a notebook's kernel (the study runs without Jupyter too)
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and "IPKernelApp" in shell.config


def _progress_disabled(progress: bool) -> bool | None:
    """tqdm's ``disable``: off unless asked for and someone watches (a terminal, or a notebook's widget bars)."""
    return True if not progress else (None if sys.stderr.isatty() or _in_jupyter_kernel() else True)


class Trainer:
    """Model, optimiser and data of one config; trains epoch by epoch and measures curvature."""

    def __init__(self, config: TrainConfig, data_root: str = "data", device: str | torch.device | None = None):
        self.config = config
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        torch.manual_seed(config.seed)
        np.random.seed(config.seed % 2**32)
        random.seed(config.seed)
        self.data = prepare_data(config, data_root)
        # batches are gathered from these tensors, not fetched through a DataLoader
        self.train_tensors = IndexedTensors(self.data.train)
        self.eval_tensors = (IndexedTensors(self.data.test),
                             IndexedTensors(self.data.val) if self.data.val is not None else None)
        self.num_classes = num_classes(config.dataset)
        self.model = build_model(config.model, in_channels(config.dataset), self.num_classes, width=config.width,
                                 **config.model_kwargs).to(self.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(config.milestones),
                                                              gamma=config.lr_gamma)
        self.loss_fn = nn.CrossEntropyLoss()
        self.groups = layer_groups(self.model)
        named = dict(self.model.named_parameters())
        self.penalty_params = [named[n] for n in penalty_parameter_names(self.model, config.htr_params)]

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Model, optimiser, scheduler and all RNG states (enough to resume exactly)."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        state = copy.deepcopy(state)  # the optimiser would otherwise share momentum buffers with ``state``
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    # -- training ------------------------------------------------------------------------
    def run_epoch(self, epoch: int, progress: bool = True) -> dict:
        """Train epoch ``epoch`` (1-based), evaluate, step the LR schedule; the epoch's metrics row."""
        cfg, model = self.config, self.model
        lr = self.optimizer.param_groups[0]["lr"]
        batches = epoch_batch_indices(len(self.train_tensors), cfg.batch_size, cfg.seed, epoch)
        gen = torch.Generator().manual_seed(derived_seed(cfg.seed, epoch, 1))
        htr_on = cfg.htr_gamma > 0 and epoch > cfg.htr_start_epoch
        times = {False: [], True: []}
        loss_sum = correct = count = 0.0
        penalties: list[float] = []
        model.train()
        start = time.perf_counter()
        with tqdm(batches, desc=f"epoch {epoch}/{cfg.epochs}", leave=False, disable=_progress_disabled(progress)) as bar:
            for step, positions in enumerate(bar):
                t0 = time.perf_counter()
                x, y = (t.to(self.device) for t in self.train_tensors.batch(positions))
                use_penalty = htr_on and step % cfg.htr_freq == 0
                try:
                    out, loss, pen = sgd_step(model, self.optimizer, self.loss_fn, x, y,
                                              self.penalty_params if use_penalty else None, cfg.htr_gamma,
                                              cfg.htr_probes, gen)
                except NonFiniteLoss as err:
                    raise TrainingDiverged(cfg.htr_gamma, epoch, step, err.what) from None
                if pen is not None:
                    penalties.append(float(pen.detach()))
                times[use_penalty].append(time.perf_counter() - t0)
                loss_sum += float(loss.detach()) * len(y)
                correct += float((out.argmax(1) == y).sum())
                count += len(y)
        train_seconds = time.perf_counter() - start
        if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
            raise TrainingDiverged(cfg.htr_gamma, epoch, step, "parameters")
        self.scheduler.step()
        t0 = time.perf_counter()
        test, val = self.eval_tensors
        test_loss = test_acc = val_loss = val_acc = math.nan
        if self.config.evaluates(epoch):
            test_loss, test_acc = self.evaluate(test)
            if val is not None:
                val_loss, val_acc = self.evaluate(val)
        mean = lambda v: float(np.mean(v)) if v else math.nan  # noqa: E731
        return {"epoch": epoch, "lr": lr, "train_loss": loss_sum / count, "train_acc": correct / count,
                "test_loss": test_loss, "test_acc": test_acc, "val_loss": val_loss, "val_acc": val_acc,
                "steps": len(times[False]) + len(times[True]), "penalty_steps": len(times[True]),
                "penalty_mean": mean(penalties), "epoch_seconds": train_seconds,
                "step_seconds": mean(times[False]), "penalty_step_seconds": mean(times[True]),
                "eval_seconds": time.perf_counter() - t0, "curvature_seconds": 0.0}

    def evaluate(self, dataset: Dataset | IndexedTensors, batch_size: int = EVAL_BATCH) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of the model on ``dataset`` (:func:`evaluate`)."""
        return evaluate(self.model, dataset, batch_size, self.device)

    # -- curvature -----------------------------------------------------------------------
    @functools.cached_property
    def curvature_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed class-balanced training subset the curvature is measured on (built on first use)."""
        return class_balanced_subset(self.data.train, self.config.examples_per_class, seed=self.config.data_seed)

    def curvature(self, epoch: int, kinds: tuple[str, ...] | None = None) -> CurvatureRecord:
        """Spectra, top eigenvalues and traces of the curvature kinds due at ``epoch``.

        Each block (full, and every layer when ``layerwise``) holds the SLQ density, ``top`` (the
        largest Ritz values of the density's first Lanczos run, descending, i.e.
        ``top_eigenvalues(op, k, num_iters=lanczos_iters, seed)``) and the Hutchinson trace. With
        ``layerwise`` the traces come from ``layerwise_trace``, whose full trace uses the same probes
        as ``hutchinson_trace(op, trace_probes, seed)`` (equal up to rounding).
        """
        cfg = self.config
        kinds = cfg.kinds_at(epoch) if kinds is None else kinds
        x, y = (t.to(self.device) for t in self.curvature_data)
        names = [p for ps in self.groups.values() for p in ps]
        k = cfg.top_k or 2 * self.num_classes
        out: dict[str, KindCurvature] = {}
        start = time.perf_counter()
        for kind in kinds:
            t0 = time.perf_counter()
            op = hvp_operator(self.model, self.loss_fn, (x, y), params=names, kind=kind)
            dens = slq_density(op, num_iters=cfg.lanczos_iters, num_probes=cfg.slq_probes, seed=cfg.seed)
            layers: dict[str, BlockCurvature] = {}
            if cfg.layerwise:
                spectra = layerwise_spectra(op, self.groups, num_iters=cfg.lanczos_iters, num_probes=cfg.slq_probes,
                                            seed=cfg.seed)
                traces = layerwise_trace(op, self.groups, cfg.trace_probes, seed=cfg.seed)
                full_trace = traces["__all__"]
                layers = {layer: BlockCurvature(d, tuple(d.meta["top"][:k]), d.meta["dim"],
                                                TraceRecord.from_estimate(traces[layer]))
                          for layer, d in spectra.items()}
            else:
                full_trace = hutchinson_trace(op, cfg.trace_probes, seed=cfg.seed)
            full = BlockCurvature(dens, tuple(dens.meta["top"][:k]), op.dim, TraceRecord.from_estimate(full_trace))
            out[kind] = KindCurvature(full, layers, time.perf_counter() - t0)
        return CurvatureRecord(epoch, len(y), tuple(names), tuple(self.groups), out, time.perf_counter() - start)
