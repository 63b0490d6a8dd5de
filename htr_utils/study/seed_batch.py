"""Several seeds of one training config trained together as one stacked ("seed-batched") model.

The S members share architecture and hyperparameters and differ only in ``seed``: member s is
initialised as ``build_model`` under ``torch.manual_seed(seeds[s])`` and sees its own batch order,
that of ``Trainer.run_epoch`` (``epoch_batch_indices(len(train), batch_size, seeds[s], epoch)``, see
:func:`member_batch_indices`). Every
parameter is stacked along a leading member axis (shape (S, *shape)); the forward pass is
``functional_call`` under ``torch.func.vmap`` over (parameters, inputs).

Why this is exact per member: the objective is Σ_s L_s(θ_s) with disjoint θ_s, so ∂/∂θ_s of it is
∇L_s(θ_s). SGD with momentum, weight decay and MultiStepLR acts elementwise, so one optimiser on the
stacked tensors is S optimisers. HTR: with probes z = (z_1..z_S), zᵀ∇²(Σ_s L_s)z = Σ_s z_sᵀ H_s z_s
(the Hessian is block-diagonal), so the penalty's gradient wrt θ_s is that member's own
γ·∇(z_sᵀ H_s z_s). Results equal separate runs to float32 rounding, not bit for bit (the batched
kernels sum in another order).

Cost: on the study's 2-core CPU this is SLOWER than separate runs for LeNet at batch 256 (grouped
convolutions and vmap's copies cost more than the overhead saved; benchmarks/seed_batch.py, numbers in
its JSON files); it is kept, tested, for machines where per-step overhead dominates.

Scope: models without buffers (LeNet, MLP, VGG without BatchNorm); BatchNorm's running statistics
cannot be updated in place under vmap.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.utils.data import Dataset, Subset, TensorDataset

from ..lanczos import rademacher
from .data import epoch_batch_indices, in_channels, num_classes
from .models import build_model
from .training import DataBundle, TrainConfig, derived_seed, penalty_parameter_names, prepare_data

Params = dict[str, Tensor]


class MemberDiverged(FloatingPointError):
    """Some members' objective is NaN/inf; ``members`` are their indices (the parameters are untouched)."""

    def __init__(self, members: list[int], what: str):
        self.members, self.what = members, what
        super().__init__(f"non-finite {what} for member(s) {members}")


def build_members(config: TrainConfig, seeds: Sequence[int]) -> list[nn.Module]:
    """One model per seed, each built as ``build_model`` right after ``torch.manual_seed(seed)`` (as Trainer does)."""
    if not seeds:
        raise ValueError("build_members needs at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(config.model, in_channels(config.dataset), num_classes(config.dataset),
                                  width=config.width, **config.model_kwargs))
    return models


def stack_parameters(models: Sequence[nn.Module]) -> Params:
    """name -> leaf tensor (S, *shape) of the members' parameters (copies; requires grad)."""
    first = models[0]
    if any(True for _ in first.buffers()):
        raise ValueError(f"{type(first).__name__} has buffers (e.g. BatchNorm statistics), which a vmapped "
                         "forward cannot update in place; seed batching supports models without buffers")
    names = [n for n, _ in first.named_parameters()]
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]).requires_grad_(True)
            for n in names}


def member_parameters(params: Params, s: int) -> Params:
    """Member ``s``'s parameters (detached copies), loadable with ``model.load_state_dict``."""
    return {n: p[s].detach().clone() for n, p in params.items()}


def stacked_forward(template: nn.Module, params: Params, x: Tensor, shared_input: bool = False) -> Tensor:
    """Logits (S, B, C): member s applied to x[s] (x: (S, B, ...)) or, with ``shared_input``, to x (B, ...)."""
    call = lambda p, xb: functional_call(template, p, (xb,))  # noqa: E731
    return vmap(call, in_dims=(0, None if shared_input else 0))(params, x)


def member_losses(logits: Tensor, y: Tensor) -> Tensor:
    """(S,) mean cross-entropy of each member: logits (S, B, C), labels (S, B) or shared (B,)."""
    S, B, C = logits.shape
    y = y.expand(S, B) if y.dim() == 1 else y
    return F.cross_entropy(logits.reshape(S * B, C), y.reshape(S * B), reduction="none").view(S, B).mean(1)


def member_probes(params: Sequence[Tensor], generators: Sequence[torch.Generator], num_probes: int
                  ) -> list[list[Tensor]]:
    """Rademacher probes over stacked tensors: member s's slice is what ``trace_penalty`` draws from generators[s].

    trace_penalty draws probe by probe, tensor by tensor from one generator; each member's draws
    follow that order on its own generator, so a member sees the probes its separate run would.
    """
    per_member = [[[rademacher(p[0].numel(), g, p.dtype, p.device).view_as(p[0]) for p in params]
                   for _ in range(num_probes)] for g in generators]
    return [[torch.stack([per_member[s][k][i] for s in range(len(generators))]) for i in range(len(params))]
            for k in range(num_probes)]


def stacked_trace_penalty(total_loss: Tensor, params: Sequence[Tensor], probes: Sequence[Sequence[Tensor]]
                          ) -> Tensor:
    """(S,) per-member Hutchinson penalties (1/m) Σ_k z_{s,k}ᵀ H_s z_{s,k}, still differentiable.

    ``total_loss`` = Σ_s L_s. Its Hessian is block-diagonal over members, so H z = (H_s z_s)_s and
    the member split of zᵀ H z is the sum of H z ⊙ z over each member's slice.
    """
    grads = torch.autograd.grad(total_loss, list(params), create_graph=True, materialize_grads=True)
    total = None
    for z in probes:
        gz = sum((g * zi).sum() for g, zi in zip(grads, z))
        hz = torch.autograd.grad(gz, list(params), create_graph=True, materialize_grads=True)
        value = sum((h * zi).flatten(1).sum(1) for h, zi in zip(hz, z))
        total = value if total is None else total + value
    return total / len(probes)


def stacked_sgd_step(template: nn.Module, params: Params, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
                     penalty_names: Sequence[str] | None = None, gamma: float = 0.0,
                     probes: Sequence[Sequence[Tensor]] | None = None,
                     forward: Callable[[Params, Tensor], Tensor] | None = None
                     ) -> tuple[Tensor, Tensor, Tensor | None]:
    """One step of every member on Σ_s [L_s + γ · penalty_s]; x (S, B, ...), y (S, B).

    The stacked counterpart of ``training.sgd_step``. ``probes`` (from :func:`member_probes`, over
    the tensors ``penalty_names``) are needed when ``penalty_names`` is given. Raises
    :class:`MemberDiverged` before stepping when a member's objective is not finite. Returns
    (logits (S, B, C), losses (S,), penalties (S,) or None), the latter two detached. ``forward``
    replaces :func:`stacked_forward` (e.g. a hand-written grouped-convolution forward).
    """
    logits = stacked_forward(template, params, x) if forward is None else forward(params, x)
    losses = member_losses(logits, y)
    objective, pens = losses, None
    if penalty_names:
        if probes is None:
            raise ValueError("stacked_sgd_step: penalty_names given without probes; draw them with member_probes")
        pens = stacked_trace_penalty(losses.sum(), [params[n] for n in penalty_names], probes)
        objective = losses + gamma * pens
    bad = (~torch.isfinite(objective.detach())).nonzero().flatten().tolist()
    if bad:
        raise MemberDiverged(bad, "loss" if not all(math.isfinite(float(losses[s].detach())) for s in bad)
                             else "loss + htr_gamma * trace penalty")
    optimizer.zero_grad(set_to_none=True)
    objective.sum().backward()
    optimizer.step()
    return logits.detach(), losses.detach(), None if pens is None else pens.detach()


def dataset_tensors(dataset: Dataset) -> tuple[Tensor, Tensor]:
    """(x, y) of every example of a TensorDataset or (nested) Subset of one, in the dataset's order."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[0], dataset.tensors[1]
    if isinstance(dataset, Subset):
        x, y = dataset_tensors(dataset.dataset)
        idx = torch.as_tensor(dataset.indices, dtype=torch.long)
        return x[idx], y[idx]
    raise TypeError(f"dataset_tensors: {type(dataset).__name__} is neither a TensorDataset nor a Subset of one")


def member_batch_indices(n: int, batch_size: int, seeds: Sequence[int], epoch: int) -> Iterator[Tensor]:
    """(S, B) index batches: row s is the order in which ``Trainer.run_epoch`` at seed seeds[s] sees the data
    (:func:`htr_utils.study.data.epoch_batch_indices`, a seeded permutation of (seed, epoch))."""
    per_seed = [epoch_batch_indices(n, batch_size, s, epoch) for s in seeds]
    for batches in zip(*per_seed):
        yield torch.stack(batches)


@dataclass
class StackedTensors:
    x: Tensor
    y: Tensor


class SeedBatch:
    """The S members of ``config`` at ``seeds`` as one stacked model, optimiser and LR schedule.

    Mirrors :class:`training.Trainer`'s training loop (penalty steps, probe generators per
    (seed, epoch), evaluation) for the members together; curvature and checkpoints are not here.
    """

    def __init__(self, config: TrainConfig, seeds: Sequence[int], data: DataBundle | None = None,
                 data_root: str = "data"):
        self.config, self.seeds = config, [int(s) for s in seeds]
        members = build_members(config, self.seeds)
        self.template = members[0]
        self.params = stack_parameters(members)
        self.optimizer = torch.optim.SGD(self.params.values(), lr=config.lr, momentum=config.momentum,
                                         weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.MultiStepLR(self.optimizer, list(config.milestones),
                                                              gamma=config.lr_gamma)
        self.penalty_names = penalty_parameter_names(self.template, config.htr_params)
        data = data if data is not None else prepare_data(config, data_root)
        self.train = StackedTensors(*dataset_tensors(data.train))
        self.test = StackedTensors(*dataset_tensors(data.test))
        self.val = StackedTensors(*dataset_tensors(data.val)) if data.val is not None else None

    @property
    def size(self) -> int:
        return len(self.seeds)

    def batches(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """(x (S, B, ...), y (S, B)) of every step of ``epoch``, each member in its own order."""
        for idx in member_batch_indices(len(self.train.y), self.config.batch_size, self.seeds, epoch):
            yield self.train.x[idx], self.train.y[idx]

    def run_epoch(self, epoch: int) -> list[dict]:
        """Train epoch ``epoch`` (1-based) for every member, evaluate, step the schedule; one row per member."""
        cfg = self.config
        lr = self.optimizer.param_groups[0]["lr"]
        gens = [torch.Generator().manual_seed(derived_seed(s, epoch, 1)) for s in self.seeds]
        htr_on = cfg.htr_gamma > 0 and epoch > cfg.htr_start_epoch
        loss_sum = torch.zeros(self.size, dtype=torch.float64)
        correct = torch.zeros(self.size, dtype=torch.float64)
        pen_sum, pen_steps, count = torch.zeros(self.size, dtype=torch.float64), 0, 0
        penalised = [self.params[n] for n in self.penalty_names]
        for step, (x, y) in enumerate(self.batches(epoch)):
            use_penalty = htr_on and step % cfg.htr_freq == 0
            probes = member_probes(penalised, gens, cfg.htr_probes) if use_penalty else None
            logits, losses, pens = stacked_sgd_step(self.template, self.params, self.optimizer, x, y,
                                                    self.penalty_names if use_penalty else None, cfg.htr_gamma,
                                                    probes)
            if pens is not None:
                pen_sum += pens.double()
                pen_steps += 1
            loss_sum += losses.double() * y.shape[1]
            correct += (logits.argmax(-1) == y).sum(1).double()
            count += y.shape[1]
        self.scheduler.step()
        test = self.evaluate(self.test)
        val = self.evaluate(self.val) if self.val is not None else None
        rows = []
        for s, seed in enumerate(self.seeds):
            rows.append({"seed": seed, "epoch": epoch, "lr": lr, "train_loss": float(loss_sum[s]) / count,
                         "train_acc": float(correct[s]) / count, "test_loss": float(test[0][s]),
                         "test_acc": float(test[1][s]), "val_loss": math.nan if val is None else float(val[0][s]),
                         "val_acc": math.nan if val is None else float(val[1][s]),
                         "penalty_steps": pen_steps,
                         "penalty_mean": float(pen_sum[s]) / pen_steps if pen_steps else math.nan})
        return rows

    @torch.no_grad()
    def evaluate(self, data: StackedTensors, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
        """(S,) mean cross-entropy and (S,) accuracy of every member on ``data`` (batches shared by all members)."""
        return stacked_evaluate(self.template, self.params, data.x, data.y, batch_size)


@torch.no_grad()
def stacked_evaluate(template: nn.Module, params: Params, x: Tensor, y: Tensor, batch_size: int = 1000
                     ) -> tuple[Tensor, Tensor]:
    """(S,) mean cross-entropy and accuracy of every member on (x, y), batches of ``batch_size`` shared by all."""
    S = next(iter(params.values())).shape[0]
    loss_sum = torch.zeros(S, dtype=torch.float64)
    correct = torch.zeros(S, dtype=torch.float64)
    was = template.training
    template.eval()
    try:
        for start in range(0, len(y), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            logits = stacked_forward(template, params, xb, shared_input=True)
            loss_sum += member_losses(logits, yb).double() * len(yb)
            correct += (logits.argmax(-1) == yb).sum(1).double()
    finally:
        template.train(was)
    return loss_sum / len(y), correct / len(y)
