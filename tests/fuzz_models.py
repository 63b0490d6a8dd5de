"""A property-based fuzzer of ``hvp_operator``: random small models, checked against dense float64 references.

``make_case(seed)`` composes, from one integer seed only (``random.Random`` for the structure,
a seeded ``torch.Generator`` for weights and data), a small model (≤ MAX_PARAMS parameters) out of
the layers, activations, normalisations, losses, dtypes, parameter subsets and batchings that
README.md lists as supported, plus a few cases the library must reject with a clear error.
``check_case(case)`` builds ``hvp_operator(model, loss_fn, data, params, kind)`` for every kind
and compares it with a reference computed WITHOUT htr_utils, on a float64 copy of the model in
eval mode, from the mean loss L over all the data at once:

    H = ∇²_S L                      one double backward (autograd.grad, create_graph) per row
    G = Jᵀ (∇²_f L) J               J = ∂f/∂θ_S row by row, ∇²_f L by double backward in the outputs f
    residual = H − G

Each factor is checked first against central finite differences (float64, step FD_EPS, relative
FD_TOL) along random directions; a case whose reference fails that check (a kink of ReLU / max
pooling crossed by the step) is reported as SKIP, never as a library failure.

A case whose batching the model itself cannot evaluate (a batch torch refuses, e.g. GroupNorm over one value)
is a SKIP too. Library checks (relative to max(‖H V‖, ‖G V‖), TOL per dtype; in float32, products and
eigenvalues get at least FLOOR_FACTOR times the miss of the same plain-autograd construction run in float32,
``float32_dense``): matvec, matmat, uᵀ(A v) = vᵀ(A u);
top_eigenvalues(op, k) against numpy's eigh (EIG_TOL · max|λ|); hutchinson_trace within Z_MAX
standard errors of tr(A) (the exact Rademacher variance 2 Σ_{i≠j} A_ij²); trace_penalty with fixed
probes against Σ zᵀ H z, and with fresh probes within Z_MAX standard errors of tr(H); the model's
mode and parameters unchanged. Run ``python -m tests.fuzz_models --help`` (``make fuzz``).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader, TensorDataset

from htr_utils import hutchinson_trace, hvp_operator, top_eigenvalues, trace_penalty

MAX_PARAMS = 300
TOL = {torch.float64: 1e-8, torch.float32: 1e-4}          # products, relative to max(‖HV‖, ‖GV‖)
EIG_TOL = {torch.float64: 1e-5, torch.float32: 1e-3}      # eigenvalues, relative to max |λ|
FD_EPS, FD_TOL = 1e-5, 1e-6                                # reference vs central differences (float64)
FLOOR_FACTOR = 10.0   # float32 products may miss by this many times torch's own float32 double backward's miss
Z_MAX = 6.0                                                # standard errors allowed for stochastic traces
HUTCHINSON_PROBES, PENALTY_PROBES = 128, 64


# ============================================================================================ building blocks

class OldStyleTanh(torch.autograd.Function):
    """An old-style autograd.Function (forward takes ctx, no setup_context): tanh with a differentiable backward."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (y,) = ctx.saved_tensors
        return g * (1 - y * y)


class Act(nn.Module):
    """A parameter-free activation by name."""

    FUNCS: dict[str, Callable[[Tensor], Tensor]] = {
        "relu": F.relu, "gelu": F.gelu, "tanh": torch.tanh, "silu": F.silu, "elu": F.elu,
        "softplus": F.softplus, "sigmoid": torch.sigmoid, "leaky_relu": lambda t: F.leaky_relu(t, 0.1),
        "old_function": OldStyleTanh.apply,
    }

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def forward(self, x: Tensor) -> Tensor:
        return self.FUNCS[self.name](x)

    def extra_repr(self) -> str:
        return self.name


class Residual(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return x + self.inner(x)


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN plus the identity, ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x + self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class Pool(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: Tensor) -> Tensor:
        if self.how == "max1d":
            return F.max_pool1d(x, 2)
        if self.how == "avg1d":
            return F.avg_pool1d(x, 2)
        if self.how == "max2d":
            return F.max_pool2d(x, 2)
        if self.how == "avg2d":
            return F.avg_pool2d(x, 2)
        if self.how == "global":
            return x.flatten(2).mean(-1)
        if self.how == "tokens_mean":
            return x.mean(1)
        if self.how == "last":
            return x[:, -1]
        return x.flatten(1)

    def extra_repr(self) -> str:
        return self.how


class HandAttention(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(d, d, bias=False) for _ in range(3))
        self.scale = 1 / math.sqrt(d)

    def forward(self, x: Tensor) -> Tensor:
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) * self.scale, dim=-1)
        return att @ self.v(x)


class MHA(nn.Module):
    def __init__(self, d: int, heads: int) -> None:
        super().__init__()
        self.att = nn.MultiheadAttention(d, heads, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.att(x, x, x, need_weights=False)[0]


class Recurrent(nn.Module):
    def __init__(self, cell: str, d: int, h: int) -> None:
        super().__init__()
        self.rnn = {"RNN": nn.RNN, "GRU": nn.GRU, "LSTM": nn.LSTM}[cell](d, h, batch_first=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.rnn(x)[0]


class Tied(nn.Module):
    """Embedding and output layer sharing one weight (decoder.weight is an alias of encoder.weight)."""

    def __init__(self, vocab: int, e: int, padding_idx: int | None) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Embedding(vocab, e, padding_idx=padding_idx), nn.Linear(e, vocab)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decoder(torch.tanh(self.encoder(tokens).mean(1)))


class TwoOutputs(nn.Module):
    """Returns (logits, features): GGN / residual need one output tensor and must say so."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor):
        out = self.inner(x)
        return out, out.detach()


# ============================================================================================ losses

def nll_log_softmax(weight: Tensor | None = None) -> Callable:
    return lambda z, y: F.nll_loss(F.log_softmax(z, dim=-1), y, weight=weight)


def hand_cross_entropy(z: Tensor, y: Tensor) -> Tensor:
    return -F.log_softmax(z, dim=-1).gather(1, y[:, None]).mean()


def log_cosh(z: Tensor, y: Tensor) -> Tensor:
    return torch.log(torch.cosh(z - y)).mean()


def quartic(z: Tensor, y: Tensor) -> Tensor:
    d = z - y
    return (d * d).mean() + 0.1 * (d ** 4).mean()


def summed_mse(z: Tensor, y: Tensor) -> Tensor:
    return F.mse_loss(z, y, reduction="sum")


# ============================================================================================ a case

@dataclass
class Case:
    seed: int
    model: nn.Module                  # in the case's dtype, in the mode the user would hand over
    loss_fn: Callable
    x: Tensor                         # all the data, in order
    y: Tensor
    bounds: list[tuple[int, int]]     # batches
    data_form: str                    # one | list | loader
    params: list[str] | None
    dtype: torch.dtype
    desc: str
    expect_error: str | None = None   # a substring the ValueError / NotImplementedError must contain
    may_refuse: str | None = None     # a ValueError containing this is a right answer too (see build_case)
    families: set[str] = field(default_factory=set)   # tags, for grouping findings
    eig_kind: str = "hessian"
    eig_k: int = 1
    trace_kind: str = "hessian"
    penalty_batched: bool = False

    def data(self):
        """The data as the user passes it."""
        if self.data_form == "one":
            return (self.x, self.y)
        if self.data_form == "list":
            return [(self.x[a:b], self.y[a:b]) for a, b in self.bounds]
        size = self.bounds[0][1]
        return DataLoader(TensorDataset(self.x, self.y), batch_size=size, shuffle=False)


def _randint(rng: random.Random, a: int, b: int) -> int:
    return rng.randint(a, b)


def _activation(rng: random.Random, tags: set[str]) -> tuple[nn.Module, str]:
    name = rng.choice(["relu", "gelu", "tanh", "silu", "elu", "softplus", "sigmoid", "leaky_relu", "prelu",
                       "old_function"])
    tags.add(name)
    if name == "prelu":
        return nn.PReLU(), "PReLU"
    return Act(name), name


def _vector_model(rng: random.Random, tags: set[str], out: int) -> tuple[nn.Module, tuple, str, str]:
    d = _randint(rng, 2, 5)
    shape, layers, parts = (d,), [], []
    for _ in range(_randint(rng, 1, 3)):
        h = _randint(rng, 2, 6)
        layers.append(nn.Linear(d, h))
        parts.append(f"Linear({d},{h})")
        d = h
        norm = rng.choice(["none", "none", "layernorm", "batchnorm1d"])
        if norm == "layernorm":
            layers.append(nn.LayerNorm(d, elementwise_affine=rng.random() < 0.8))
            parts.append("LayerNorm")
        elif norm == "batchnorm1d":
            layers.append(nn.BatchNorm1d(d))
            parts.append("BatchNorm1d")
        if norm != "none":
            tags.add(norm)
        act, name = _activation(rng, tags)
        layers.append(act)
        parts.append(name)
        if rng.random() < 0.25:
            layers.append(nn.Dropout(0.3))
            parts.append("Dropout")
            tags.add("dropout")
        if rng.random() < 0.25:
            a2, n2 = _activation(rng, tags)
            layers.append(Residual(nn.Sequential(nn.Linear(d, d), a2)))
            parts.append(f"Residual(Linear({d},{d}) {n2})")
            tags.add("residual")
    layers.append(nn.Linear(d, out))
    parts.append(f"Linear({d},{out})")
    return nn.Sequential(*layers), shape, "float", "mlp[" + " ".join(parts) + "]"


def _conv1d_model(rng: random.Random, tags: set[str], out: int) -> tuple[nn.Module, tuple, str, str]:
    c, length = _randint(rng, 1, 2), _randint(rng, 6, 9)
    shape, layers, parts = (c, length), [], []
    for _ in range(_randint(rng, 1, 2)):
        if length < 3:   # a kernel of 3 would not fit (checked before any draw: other cases keep their seeds)
            break
        c2, k, pad = _randint(rng, 1, 3), rng.choice([2, 3]), rng.choice([0, 1])
        layers.append(nn.Conv1d(c, c2, k, padding=pad))
        parts.append(f"Conv1d({c},{c2},{k},p{pad})")
        c, length = c2, length + 2 * pad - k + 1
        norm = rng.choice(["none", "batchnorm1d", "groupnorm"])
        if norm == "batchnorm1d":
            layers.append(nn.BatchNorm1d(c))
        elif norm == "groupnorm":
            layers.append(nn.GroupNorm(1, c))
        if norm != "none":
            parts.append(norm)
            tags.add(norm)
        act, name = _activation(rng, tags)
        layers.append(act)
        parts.append(name)
        if length >= 4 and rng.random() < 0.5:
            how = rng.choice(["max1d", "avg1d"])
            layers.append(Pool(how))
            parts.append(how)
            tags.add("pool")
            length //= 2
    how = rng.choice(["flatten", "global"])
    layers.append(Pool(how))
    width = c * length if how == "flatten" else c
    layers.append(nn.Linear(width, out))
    parts.append(f"{how} Linear({width},{out})")
    tags.add("conv1d")
    return nn.Sequential(*layers), shape, "float", "conv1d[" + " ".join(parts) + "]"


def _conv2d_model(rng: random.Random, tags: set[str], out: int) -> tuple[nn.Module, tuple, str, str]:
    c, side = _randint(rng, 1, 2), _randint(rng, 4, 6)
    shape, layers, parts = (c, side, side), [], []
    c2, k, pad = _randint(rng, 1, 3), rng.choice([2, 3]), rng.choice([0, 1])
    layers.append(nn.Conv2d(c, c2, k, padding=pad))
    parts.append(f"Conv2d({c},{c2},{k},p{pad})")
    c, side = c2, side + 2 * pad - k + 1
    norm = rng.choice(["none", "batchnorm2d", "groupnorm"])
    if norm == "batchnorm2d":
        layers.append(nn.BatchNorm2d(c))
    elif norm == "groupnorm":
        layers.append(nn.GroupNorm(1 if c % 2 else 2, c))
    if norm != "none":
        parts.append(norm)
        tags.add(norm)
    act, name = _activation(rng, tags)
    layers.append(act)
    parts.append(name)
    if c <= 2 and rng.random() < 0.35:
        layers.append(BasicBlock(c))
        parts.append(f"BasicBlock({c})")
        tags.add("residual")
    if side >= 2 and rng.random() < 0.5:
        how = rng.choice(["max2d", "avg2d"])
        layers.append(Pool(how))
        parts.append(how)
        tags.add("pool")
        side //= 2
    how = rng.choice(["flatten", "global"])
    layers.append(Pool(how))
    width = c * side * side if how == "flatten" else c
    layers.append(nn.Linear(width, out))
    parts.append(f"{how} Linear({width},{out})")
    tags.add("conv2d")
    return nn.Sequential(*layers), shape, "float", "conv2d[" + " ".join(parts) + "]"


def _embedding_model(rng: random.Random, tags: set[str], out: int) -> tuple[nn.Module, tuple, str, str]:
    vocab, e, length = _randint(rng, 4, 7), _randint(rng, 2, 4), _randint(rng, 2, 4)
    padding_idx = rng.choice([None, None, 0, vocab - 1])
    tags.add("embedding" if padding_idx is None else "embedding_padding_idx")
    if rng.random() < 0.25:
        tags.add("tied")
        return Tied(vocab, e, padding_idx), (length,), f"tokens{vocab}", \
            f"tied[Embedding({vocab},{e},padding_idx={padding_idx}) mean tanh Linear({e},{vocab}) tied]"
    pool = rng.choice(["tokens_mean", "flatten"])
    act, name = _activation(rng, tags)
    width = e if pool == "tokens_mean" else e * length
    model = nn.Sequential(nn.Embedding(vocab, e, padding_idx=padding_idx), Pool(pool), act, nn.Linear(width, out))
    return model, (length,), f"tokens{vocab}", \
        f"embedding[Embedding({vocab},{e},padding_idx={padding_idx}) {pool} {name} Linear({width},{out})]"


def _sequence_model(rng: random.Random, tags: set[str], out: int) -> tuple[nn.Module, tuple, str, str]:
    t, d = _randint(rng, 2, 3), rng.choice([2, 4])
    kind = rng.choice(["hand_attention", "mha", "transformer", "RNN", "GRU", "LSTM"])
    tags.add(kind)
    if kind == "hand_attention":
        block, width, what = HandAttention(d), d, f"HandAttention({d})"
    elif kind == "mha":
        heads = rng.choice([1, 2])
        block, width, what = MHA(d, heads), d, f"MultiheadAttention({d},{heads})"
    elif kind == "transformer":
        ff = _randint(rng, 2, 5)
        block = nn.TransformerEncoderLayer(d, 2, dim_feedforward=ff, dropout=0.1, batch_first=True,
                                           norm_first=rng.random() < 0.5)
        width, what = d, f"TransformerEncoderLayer({d},2,ff={ff},norm_first={block.norm_first})"
    else:
        h = _randint(rng, 2, 4)
        block, width, what = Recurrent(kind, d, h), h, f"{kind}({d},{h})"
    pool = rng.choice(["tokens_mean", "last"])
    model = nn.Sequential(block, Pool(pool), nn.Linear(width, out))
    return model, (t, d), "float", f"sequence[{what} {pool} Linear({width},{out})]"


FAMILIES = {"mlp": _vector_model, "conv1d": _conv1d_model, "conv2d": _conv2d_model, "embedding": _embedding_model,
            "sequence": _sequence_model}
FAMILY_WEIGHTS = {"mlp": 4, "conv1d": 2, "conv2d": 2, "embedding": 2, "sequence": 2}


def _loss(rng: random.Random, gen: torch.Generator, out: int, tags: set[str]) -> tuple[Callable, str, str]:
    """(loss_fn, target kind: class | float | binary, description)."""
    name = rng.choice(["cross_entropy"] * 3 + ["nll", "mse", "mse", "bce_with_logits", "huber", "smooth_l1",
                                               "hand_cross_entropy", "log_cosh", "quartic"])
    tags.add(name)
    if name == "cross_entropy":
        kw: dict = {}
        if rng.random() < 0.3:
            kw["label_smoothing"] = rng.choice([0.05, 0.2])
        if rng.random() < 0.3:
            kw["weight"] = torch.rand(out, generator=gen, dtype=torch.float64) + 0.2
            tags.add("class_weights")
        if rng.random() < 0.25:
            kw["ignore_index"] = -100
            tags.add("ignore_index")
        shown = {k: (f"[{','.join(f'{w:.2f}' for w in v.tolist())}]" if isinstance(v, Tensor) else v)
                 for k, v in kw.items()}
        def ce(z: Tensor, y: Tensor) -> Tensor:
            return F.cross_entropy(z, y, **{k: (v.to(z.dtype) if isinstance(v, Tensor) else v) for k, v in kw.items()})
        ce.kwargs = kw  # type: ignore[attr-defined]
        return ce, "class", f"cross_entropy{shown or ''}"
    if name == "nll":
        if rng.random() < 0.3:
            weight = torch.rand(out, generator=gen, dtype=torch.float64) + 0.2
            tags.add("class_weights")
            return (lambda z, y: nll_log_softmax(weight.to(z.dtype))(z, y)), "class", "nll(log_softmax, weight)"
        return nll_log_softmax(), "class", "nll(log_softmax)"
    if name == "mse":
        return F.mse_loss, "float", "mse"
    if name == "bce_with_logits":
        soft = rng.random() < 0.3
        return F.binary_cross_entropy_with_logits, ("soft" if soft else "binary"), f"bce_with_logits(soft={soft})"
    if name == "huber":
        delta = rng.choice([0.5, 1.0, 2.0])
        return (lambda z, y: F.huber_loss(z, y, delta=delta)), "float", f"huber(delta={delta})"
    if name == "smooth_l1":
        beta = rng.choice([0.5, 1.0])
        return (lambda z, y: F.smooth_l1_loss(z, y, beta=beta)), "float", f"smooth_l1(beta={beta})"
    return {"hand_cross_entropy": (hand_cross_entropy, "class"), "log_cosh": (log_cosh, "float"),
            "quartic": (quartic, "float")}[name] + (name,)


def _bounds(rng: random.Random, n: int, form: str) -> list[tuple[int, int]]:
    if form == "one":
        return [(0, n)]
    if form == "loader":
        size = _randint(rng, 1, n - 1)
        return [(a, min(a + size, n)) for a in range(0, n, size)]
    cuts = sorted(rng.sample(range(1, n), _randint(rng, 1, min(3, n - 1))))
    edges = [0] + cuts + [n]
    return list(zip(edges[:-1], edges[1:]))


def _randomise_statistics(model: nn.Module, gen: torch.Generator) -> None:
    """Non-trivial BatchNorm running statistics and affine parameters (as after training)."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(generator=gen)


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_case(seed: int) -> Case:
    """The case of ``seed``: a model, loss, dtype, parameter subset and batching, all drawn from the seed."""
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    tags: set[str] = set()
    out = _randint(rng, 2, 4)
    for attempt in range(50):
        tags.clear()
        family = rng.choices(list(FAMILY_WEIGHTS), weights=list(FAMILY_WEIGHTS.values()))[0]
        with torch.random.fork_rng():
            torch.manual_seed(seed * 100 + attempt)
            model, shape, inputs, desc = FAMILIES[family](rng, tags, out)
        if _count(model) <= MAX_PARAMS:
            break
    # From a second stream (so that every other seed keeps its case): a linear model on one-hot
    # (categorical) inputs, whose squared-loss Hessian is diagonal with repeated values (axis-aligned eigenspaces).
    alt = random.Random(seed + 7_777_777)
    if alt.random() < 0.08:
        d = alt.randint(2, 5)
        with torch.random.fork_rng():
            torch.manual_seed(seed * 100 + 99)
            model = nn.Sequential(nn.Linear(d, out, bias=alt.random() < 0.3))
        shape, inputs, family = (d,), f"onehot{d}", "onehot_linear"
        desc = f"onehot_linear[one-hot({d}) Linear({d},{out},bias={model[0].bias is not None})]"
        tags.clear()
    tags.add(family)
    if isinstance(model, Tied):
        out = model.decoder.out_features
    _randomise_statistics(model, gen)
    model.double()
    loss_fn, target, loss_desc = _loss(rng, gen, out, tags)
    if family == "onehot_linear" and alt.random() < 0.5:
        loss_fn, target, loss_desc = F.mse_loss, "float", "mse"
        tags.add("mse")
    if hasattr(loss_fn, "kwargs") and alt.random() < 0.5:
        # The same loss as a module, nn.CrossEntropyLoss(weight=..., ...), whose weighting the operator can read.
        loss_fn = nn.CrossEntropyLoss(**loss_fn.kwargs)
        loss_desc = "nn.CrossEntropyLoss" + loss_desc[len("cross_entropy"):]
        tags.add("ce_module")

    n = _randint(rng, 3, 8)
    form = rng.choice(["one", "one", "list", "list", "loader"])
    bounds = _bounds(rng, n, form)
    if inputs.startswith("tokens"):
        x = torch.randint(0, int(inputs[6:]), (n, *shape), generator=gen)
    elif inputs.startswith("onehot"):
        x = F.one_hot(torch.randint(0, shape[0], (n,), generator=gen), shape[0]).double()
    else:
        x = torch.randn(n, *shape, generator=gen, dtype=torch.float64)
    if target == "class":
        y = torch.randint(0, out, (n,), generator=gen)
    elif target == "binary":
        y = torch.randint(0, 2, (n, out), generator=gen).double()
    elif target == "soft":
        y = torch.rand(n, out, generator=gen, dtype=torch.float64)
    else:
        y = torch.randn(n, out, generator=gen, dtype=torch.float64)
    sorted_classes = target == "class" and len(bounds) > 1 and rng.random() < 0.4
    if sorted_classes:
        order = torch.argsort(y, stable=True)
        x, y = x[order], y[order]
        tags.add("class_sorted")
    if "ignore_index" in tags:
        for a, b in bounds:       # some targets ignored, never a whole batch (its loss would be NaN)
            for i in range(a, b):
                if i > a and rng.random() < 0.3:
                    y[i] = -100

    # Parameters: all, one layer, a random subset, frozen ones.
    names = [nm for nm, _ in model.named_parameters()]
    # last_bias: with a squared loss its Hessian is a multiple of the identity (repeated, axis-aligned eigenvalues).
    mode = rng.choice(["all", "all", "layer", "subset", "frozen", "last_bias"])
    params: list[str] | None = None
    if mode == "frozen" and len(names) > 1:
        for nm in rng.sample(names, _randint(rng, 1, len(names) - 1)):
            model.get_parameter(nm).requires_grad_(False)
        params_desc = "frozen[" + ",".join(nm for nm, p in model.named_parameters() if not p.requires_grad) + "]"
        tags.add("frozen")
    elif mode == "last_bias" and names[-1].endswith("bias"):
        params = [names[-1]]
        params_desc = f"params={params}"
        tags.add("last_bias")
    elif mode in ("layer", "last_bias"):
        owners = sorted({nm.rsplit(".", 1)[0] if "." in nm else "" for nm in names})
        owner = rng.choice(owners)
        params = [nm for nm in names if (nm.rsplit(".", 1)[0] if "." in nm else "") == owner]
        if rng.random() < 0.3:   # one tensor of it, e.g. only the bias
            params = [rng.choice(params)]
        params_desc = f"params={params}"
        tags.add("one_layer")
    elif mode == "subset":
        params = sorted(rng.sample(names, _randint(rng, 1, len(names))), key=names.index)
        params_desc = f"params={params}"
        tags.add("subset")
    else:
        params_desc = "params=None"
    if isinstance(model, Tied) and params is not None and "encoder.weight" in params and rng.random() < 0.5:
        params = ["decoder.weight" if nm == "encoder.weight" else nm for nm in params]
        params_desc += " (alias decoder.weight)"

    dtype = torch.float64 if rng.random() < 0.6 else torch.float32
    model = model.to(dtype)
    if isinstance(loss_fn, nn.Module):
        loss_fn = loss_fn.to(dtype)
    if dtype == torch.float32:
        x = x.float() if x.is_floating_point() else x
        y = y.float() if y.is_floating_point() else y
    model.train(rng.random() < 0.5)

    expect = None
    neg = rng.random()
    if neg < 0.03:
        loss_fn, loss_desc, expect = summed_mse, "mse(reduction='sum')", "sum"
        if target != "float":
            y = torch.randn(n, out, generator=gen, dtype=dtype)
        tags.add("negative_sum")
    elif neg < 0.05:
        model = TwoOutputs(model)
        params = None if params is None else ["inner." + nm for nm in params]
        expect = "one tensor"
        tags.add("negative_two_outputs")
    elif neg < 0.06:
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = float("nan")
        expect = "NaN"
        tags.add("negative_nan")

    case = Case(seed=seed, model=model, loss_fn=loss_fn, x=x, y=y, bounds=bounds, data_form=form, params=params,
                dtype=dtype, desc="", expect_error=expect, families=tags)
    if tags & {"class_weights", "ignore_index"} and not isinstance(loss_fn, nn.Module) and len(bounds) > 1:
        # Weights or ignored targets inside a function over several batches: the operator cannot read the
        # batches' denominators, so it must refuse where the first product shows the loss is not a size-
        # weighted mean, and may answer where it is one (batches with equal shares: then size weighting is exact).
        case.may_refuse = "not the mean of per-sample losses"
    case.eig_kind = rng.choice(["hessian", "hessian", "ggn", "residual"])
    case.trace_kind = rng.choice(["hessian", "ggn", "residual"])
    case.eig_k = _randint(rng, 1, 4)
    case.penalty_batched = rng.random() < 0.3
    batches = f"{len(bounds)} batches {[b - a for a, b in bounds]}" if form != "one" else f"one batch of {n}"
    case.desc = (f"{desc} | {loss_desc} | {str(dtype)[6:]} | {params_desc} | {form}: {batches}"
                 f"{' class-sorted' if sorted_classes else ''} | {'train' if model.training else 'eval'} mode"
                 f" | {_count(model)} params" + (f" | expects error '{expect}'" if expect else ""))
    return case


# ============================================================================================ the reference

@dataclass
class Reference:
    dense: dict[str, Tensor]          # hessian, ggn, residual (float64, on the selected parameters)
    fd_errors: dict[str, float]       # each factor vs central differences
    names: list[str]


def _reference_model(case: Case) -> tuple[nn.Module, list[str]]:
    """A float64 eval-mode copy with exactly the selected parameters requiring grad, and their canonical names."""
    model = copy.deepcopy(case.model).double().eval()
    canonical = {id(p): nm for nm, p in model.named_parameters()}
    aliases = {nm: canonical[id(p)] for nm, p in model.named_parameters(remove_duplicate=False)}
    if case.params is None:
        selected = [nm for nm, p in model.named_parameters() if p.requires_grad]
    else:
        chosen = {aliases[nm] for nm in case.params}
        selected = [nm for nm, _ in model.named_parameters() if nm in chosen]
    for nm, p in model.named_parameters():
        p.requires_grad_(nm in selected)
    return model, selected


def _flat_grad(outputs: Tensor, params: list[Tensor], create_graph: bool = False,
               retain_graph: bool | None = None) -> Tensor:
    grads = torch.autograd.grad(outputs, params, create_graph=create_graph, retain_graph=retain_graph,
                                allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def _loss_value(model: nn.Module, loss_fn: Callable, x: Tensor, y: Tensor) -> Tensor:
    return loss_fn(model(x), y)


def _fd_mask(model: nn.Module, names: list[str]) -> Tensor:
    """1 for every selected scalar, 0 on the padding rows of embeddings with ``padding_idx``.

    Autograd holds a padding row constant in the lookup (its gradient there is zero by design), so
    the reference follows that convention and differences along those rows would measure another function.
    """
    pads = {id(m.weight): m.padding_idx for m in model.modules()
            if isinstance(m, nn.Embedding) and m.padding_idx is not None}
    parts = []
    for nm in names:
        p = model.get_parameter(nm)
        mask = torch.ones_like(p, dtype=torch.float64)
        if id(p) in pads:
            mask[pads[id(p)]] = 0
        parts.append(mask.reshape(-1))
    return torch.cat(parts)


def _fd_errors(model: nn.Module, params: list[Tensor], loss_fn: Callable, x: Tensor, y: Tensor, f: Tensor,
               factors: tuple[Tensor, Tensor, Tensor], dirs: list[tuple[Tensor, Tensor]], eps: float) -> dict[str, float]:
    """Largest relative error of H v, J v and H_f u against central differences with step ``eps``."""
    H, J, Hf = factors
    theta0 = [p.detach().clone() for p in params]

    def at(v: Tensor, sign: float) -> None:
        with torch.no_grad():
            offset = 0
            for p, p0 in zip(params, theta0):
                p.copy_(p0 + sign * eps * v[offset: offset + p.numel()].view_as(p))
                offset += p.numel()

    errors = {"hessian": 0.0, "jacobian": 0.0, "output_hessian": 0.0}
    for v, u in dirs:
        grads, outs = [], []
        for sign in (1.0, -1.0):
            at(v, sign)
            grads.append(_flat_grad(_loss_value(model, loss_fn, x, y), params))
            with torch.no_grad():
                outs.append(model(x).reshape(-1))
        at(v, 0.0)
        gzs = []
        for sign in (1.0, -1.0):
            z = (f + sign * eps * u.view_as(f)).requires_grad_(True)
            gzs.append(torch.autograd.grad(loss_fn(z, y), z)[0].reshape(-1))
        for key, got, want, whole in (("hessian", H @ v, (grads[0] - grads[1]) / (2 * eps), H),
                                      ("jacobian", J @ v, (outs[0] - outs[1]) / (2 * eps), J),
                                      ("output_hessian", Hf @ u, (gzs[0] - gzs[1]) / (2 * eps), Hf)):
            # A product that vanishes is compared on the scale of its matrix (unit directions).
            scale = max(float(want.norm()), float(got.norm()), 1e-3 * float(torch.linalg.matrix_norm(whole, 2)), 1e-12)
            errors[key] = max(errors[key], float((got - want).norm()) / scale)
    return errors


def _reference_inputs(case: Case, dtype: torch.dtype) -> tuple[nn.Module, list[Tensor], list[str], Callable, Tensor,
                                                                  Tensor]:
    """The reference model (eval mode, the selected parameters), its selected parameters, their names, the loss
    and all the data, in ``dtype``."""
    model, names = _reference_model(case)
    model = model.to(dtype)
    params = [model.get_parameter(nm) for nm in names]
    loss_fn = copy.deepcopy(case.loss_fn).to(dtype) if isinstance(case.loss_fn, nn.Module) else case.loss_fn
    x = case.x.to(dtype) if case.x.is_floating_point() else case.x
    y = case.y.to(dtype) if case.y.is_floating_point() else case.y
    return model, params, names, loss_fn, x, y


def _dense_factors(model: nn.Module, params: list[Tensor], loss_fn: Callable, x: Tensor, y: Tensor
                   ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """H by one double backward per row, J = ∂f/∂θ row by row, ∇²_f L and the model's outputs f, all by plain
    autograd in the parameters' dtype (no htr_utils)."""
    dtype = params[0].dtype
    loss = _loss_value(model, loss_fn, x, y)
    g = _flat_grad(loss, params, create_graph=True)
    P = g.numel()
    H = torch.zeros(P, P, dtype=dtype)
    for i in range(P):
        if g[i].requires_grad:
            H[i] = _flat_grad(g[i], params, retain_graph=True)
    f = model(x)
    F_ = f.reshape(-1)
    J = torch.zeros(F_.numel(), P, dtype=dtype)
    for j in range(F_.numel()):
        if F_[j].requires_grad:
            J[j] = _flat_grad(F_[j], params, retain_graph=True)
    z = f.detach().clone().requires_grad_(True)
    gz = torch.autograd.grad(loss_fn(z, y), z, create_graph=True)[0].reshape(-1)
    Hf = torch.zeros(F_.numel(), F_.numel(), dtype=dtype)
    for j in range(F_.numel()):
        if gz[j].requires_grad:
            Hf[j] = torch.autograd.grad(gz[j], z, retain_graph=True)[0].reshape(-1)
    return H, J, Hf, f.detach()


def _dense(H: Tensor, J: Tensor, Hf: Tensor) -> dict[str, Tensor]:
    G = J.T @ Hf @ J
    G = (G + G.T) / 2
    return {"hessian": H, "ggn": G, "residual": H - G}


def float32_dense(case: Case) -> dict[str, Tensor]:
    """The reference's plain-autograd construction run on a float32 copy (returned in float64): what torch's own
    float32 double backward makes of this case's curvature. Its distance from the float64 reference is the
    rounding error any float32 answer can be expected to carry (large where the loss is nearly flat and its
    curvature a difference of large terms)."""
    model, params, _, loss_fn, x, y = _reference_inputs(case, torch.float32)
    with sdpa_kernel(SDPBackend.MATH):
        H, J, Hf, _ = _dense_factors(model, params, loss_fn, x, y)
    return {kind: A.double() for kind, A in _dense(H, J, Hf).items()}


def product_floor(dense32: dict[str, Tensor], V: Tensor, want: dict[str, Tensor], scale: float) -> dict[str, float]:
    """Per kind, how far float32 autograd's products with V are from the reference's, relative to ``scale``."""
    return {kind: _rel(A @ V, want[kind], scale) for kind, A in dense32.items()}


def _top(dense: Tensor, k: int) -> np.ndarray:
    return np.linalg.eigh(dense.numpy())[0][::-1][:k]


def _eigen_span(dense: Tensor, size: float) -> float:
    """The scale eigenvalue errors are measured on: max |λ|, at least the case's curvature size."""
    return max(float(np.abs(np.linalg.eigvalsh(dense.numpy())).max()), size, 1e-300)


def eigen_floor(dense: Tensor, dense32: Tensor, k: int, size: float) -> float:
    """How far the top-k eigenvalues of float32 autograd's matrix are from the reference's, on ``_eigen_span``."""
    return float(np.abs(_top(dense32, k) - _top(dense, k)).max()) / _eigen_span(dense, size)


def _batches_the_model_refuses(case: Case) -> list[str]:
    """The batches the model itself cannot evaluate alone (eval mode, no library involved), with torch's reason:
    e.g. GroupNorm over a single value in a batch of one. A case with such a batching tests the model, not us."""
    if case.data_form == "one":
        return []
    model = copy.deepcopy(case.model).eval()
    refused = []
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        for i, (a, b) in enumerate(case.bounds):
            try:
                model(case.x[a:b])
            except Exception as exc:  # noqa: BLE001 - whatever the model raises on its own
                refused.append(f"batch {i} ({b - a} samples): {_short(exc)}")
    return refused


def build_reference(case: Case, num_dirs: int = 2) -> Reference:
    """Dense H, G = Jᵀ(∇²_f L)J and H − G of the mean loss over all the data, by plain autograd in float64."""
    model, params, names, loss_fn, x, y = _reference_inputs(case, torch.float64)
    gen = torch.Generator().manual_seed(case.seed + 7)
    with sdpa_kernel(SDPBackend.MATH):
        H, J, Hf, f = _dense_factors(model, params, loss_fn, x, y)
        P, F_ = H.shape[0], f.reshape(-1)

        # Central differences of the gradient, of the outputs and of the output gradient, along unit directions;
        # where the first step fails, a 100x smaller one (a ReLU / max-pool kink inside the first step).
        keep = _fd_mask(model, names)
        dirs = [(torch.randn(P, generator=gen, dtype=torch.float64) * keep,
                 torch.randn(F_.numel(), generator=gen, dtype=torch.float64)) for _ in range(num_dirs)]
        dirs = [(v / v.norm().clamp_min(1e-300), u / u.norm()) for v, u in dirs]
        errors: dict[str, float] = {}
        for eps in (FD_EPS, FD_EPS / 100):
            step = _fd_errors(model, params, loss_fn, x, y, f, (H, J, Hf), dirs, eps)
            errors = {k: min(errors.get(k, math.inf), e) for k, e in step.items()}
            if all(e <= FD_TOL for e in errors.values()):
                break
    return Reference(_dense(H, J, Hf), errors, names)


# ============================================================================================ the checks

@dataclass
class Outcome:
    seed: int
    status: str                       # PASS | FAIL | SKIP
    desc: str
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    families: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        head = f"[{self.status}] seed={self.seed} ({self.seconds:.1f} s) {self.desc}"
        return "\n".join([head] + [f"    - {m}" for m in self.failures + self.notes])


def _rel(got: Tensor, want: Tensor, scale: float) -> float:
    return float((got.double() - want).norm()) / scale


def _short(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"


def _state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def check_case(case: Case) -> Outcome:
    """Every library check on one case; failures are described, never raised."""
    start = time.perf_counter()
    outcome = Outcome(case.seed, "PASS", case.desc, families=sorted(case.families))
    fail = outcome.failures.append

    if case.expect_error is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for kind in ("ggn",) if case.expect_error == "one tensor" else ("hessian", "ggn"):
                    op = hvp_operator(case.model, case.loss_fn, case.data(), params=case.params, kind=kind)
                    op.matvec(torch.randn(op.dim, dtype=case.dtype))
            fail(f"expected a clear error naming '{case.expect_error}', got none")
        except (ValueError, NotImplementedError, FloatingPointError) as exc:
            if case.expect_error.lower() not in str(exc).lower():
                fail(f"error does not name the cause '{case.expect_error}': {_short(exc)}")
        except Exception as exc:  # noqa: BLE001 - any other exception is a finding
            fail(f"unclear exception instead of a ValueError naming '{case.expect_error}': {_short(exc)}")
        outcome.status = "FAIL" if outcome.failures else "PASS"
        outcome.seconds = time.perf_counter() - start
        return outcome

    refused = _batches_the_model_refuses(case)  # cheap, so before the dense reference
    if refused:
        outcome.status = "SKIP"
        outcome.notes.append("the model itself cannot evaluate " + "; ".join(refused))
        outcome.seconds = time.perf_counter() - start
        return outcome
    try:
        ref = build_reference(case)
    except Exception as exc:  # noqa: BLE001
        outcome.status = "SKIP"
        outcome.notes.append(f"reference could not be built: {_short(exc)}")
        outcome.seconds = time.perf_counter() - start
        return outcome
    bad = {k: e for k, e in ref.fd_errors.items() if not e <= FD_TOL}
    if bad:
        outcome.status = "SKIP"
        outcome.notes.append("reference disagrees with central differences (a kink crossed?): "
                             + ", ".join(f"{k} {e:.1e}" for k, e in bad.items()))
        outcome.seconds = time.perf_counter() - start
        return outcome

    tol, dtype = TOL[case.dtype], case.dtype
    P = ref.dense["hessian"].shape[0]
    gen = torch.Generator().manual_seed(case.seed + 11)
    V = torch.randn(P, 3, generator=gen, dtype=torch.float64)
    V /= V.norm(dim=0)
    scale = max(float((ref.dense["hessian"] @ V).norm()), float((ref.dense["ggn"] @ V).norm()), 1e-300)
    wants = {kind: A @ V for kind, A in ref.dense.items()}
    # float32: no answer can beat float32's own rounding of this curvature by much; allow FLOOR_FACTOR times
    # what torch's float32 double backward misses by (well under TOL on all but nearly flat losses).
    dense32 = float32_dense(case) if dtype == torch.float32 else None
    floor = product_floor(dense32, V, wants, scale) if dense32 is not None else {}
    tols = {kind: max(tol, FLOOR_FACTOR * floor.get(kind, 0.0)) for kind in wants}
    if any(t > tol for t in tols.values()):
        outcome.notes.append("float32 floor: " + ", ".join(f"{k} {floor[k]:.1e}" for k in tols if tols[k] > tol))
    mode_before = [m.training for m in case.model.modules()]
    state_before = _state(case.model)
    ops = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kind in ("hessian", "ggn", "residual"):
            where = f"{kind}"
            try:
                op = hvp_operator(case.model, case.loss_fn, case.data(), params=case.params, kind=kind)
                where = f"{kind} dim"
                if op.dim != P:
                    fail(f"{kind}: op.dim {op.dim} != {P} selected scalars")
                    continue
                ops[kind] = op
                want, allowed = wants[kind], tols[kind]
                where = f"{kind} matvec"
                mv = op.matvec(V[:, 0].to(dtype))
                err = _rel(mv, want[:, 0], scale)
                if not err <= allowed:
                    fail(f"{kind} matvec: relative error {err:.2e} > {allowed:.1e}")
                where = f"{kind} matmat"
                mm = op.matmat(V.to(dtype))
                err = _rel(mm, want, scale)
                if not err <= allowed:
                    fail(f"{kind} matmat: relative error {err:.2e} > {allowed:.1e}")
                where = f"{kind} symmetry"
                AV = mm.double()
                asym = float((V.T @ AV - (V.T @ AV).T).abs().max()) / scale
                if not asym <= allowed:
                    fail(f"{kind} symmetry: |uᵀAv − vᵀAu| / max(‖HV‖, ‖GV‖) = {asym:.2e} > {allowed:.1e}")
            except ValueError as exc:
                if case.may_refuse is None or case.may_refuse not in str(exc):
                    fail(f"{where}: {_short(exc)}")
                else:
                    ops.pop(kind, None)   # refused: nothing further to check on it
                    outcome.notes.append(f"{kind}: refused ({case.may_refuse})")
            except Exception as exc:  # noqa: BLE001
                fail(f"{where}: {_short(exc)}")
        outcome.notes += sorted({f"warning: {str(w.message).splitlines()[0][:120]}" for w in caught
                                 if issubclass(w.category, UserWarning)})

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Scale of the case's curvature: the residual may vanish (up to rounding), its checks use this floor.
            size = max(float(torch.linalg.matrix_norm(ref.dense[k], 2)) for k in ("hessian", "ggn"))
            if case.eig_kind in ops:
                _check_eigenvalues(case, ops[case.eig_kind], ref.dense[case.eig_kind], size, fail,
                                   None if dense32 is None else dense32[case.eig_kind])
            if case.trace_kind in ops:
                _check_hutchinson(case, ops[case.trace_kind], ref.dense[case.trace_kind], size, fail)
            _check_penalty(case, ref, fail)

    if [m.training for m in case.model.modules()] != mode_before:
        fail("the model's train/eval mode was changed by the operator")
    after = _state(case.model)
    changed = [k for k in state_before if not torch.equal(state_before[k], after[k])
               and not (torch.isnan(state_before[k]).any() and torch.isnan(after[k]).any())]
    if changed:
        fail(f"the operator changed the model's state: {changed[:4]}")
    outcome.status = "FAIL" if outcome.failures else "PASS"
    outcome.seconds = time.perf_counter() - start
    return outcome


def _check_eigenvalues(case: Case, op, dense: Tensor, size: float, fail: Callable[[str], None],
                       dense32: Tensor | None = None) -> None:
    """top_eigenvalues against eigh, to EIG_TOL·max|λ|; in float32 at least FLOOR_FACTOR times float32 autograd's
    own eigenvalue error (``dense32``: ``float32_dense``'s matrix of this kind)."""
    k = min(case.eig_k, op.dim)
    want, span = _top(dense, k), _eigen_span(dense, size)
    tol = EIG_TOL[case.dtype]
    if dense32 is not None:
        tol = max(tol, FLOOR_FACTOR * eigen_floor(dense, dense32, k, size))
    try:
        got = np.asarray(top_eigenvalues(op, k, seed=case.seed % 1000))
    except Exception as exc:  # noqa: BLE001
        fail(f"top_eigenvalues({case.eig_kind}, k={k}): {_short(exc)}")
        return
    if got.shape != want.shape:
        fail(f"top_eigenvalues({case.eig_kind}, k={k}) returned {got.shape[0]} values")
        return
    err = float(np.abs(got - want).max()) / span
    if not err <= tol:
        fail(f"top_eigenvalues({case.eig_kind}, k={k}): max error {err:.2e}·max|λ| > {tol:.1e}; "
             f"got {np.array2string(got, precision=6)}, eigh {np.array2string(want, precision=6)}")


def _check_hutchinson(case: Case, op, dense: Tensor, size: float, fail: Callable[[str], None]) -> None:
    exact = float(torch.trace(dense))
    off = dense - torch.diag(torch.diag(dense))
    sigma = math.sqrt(2 * float((off * off).sum()) / HUTCHINSON_PROBES)
    try:
        est = hutchinson_trace(op, HUTCHINSON_PROBES, seed=case.seed % 1000)
    except Exception as exc:  # noqa: BLE001
        fail(f"hutchinson_trace({case.trace_kind}): {_short(exc)}")
        return
    slack = Z_MAX * sigma + TOL[case.dtype] * 10 * size * op.dim
    if not abs(est.mean - exact) <= slack:
        fail(f"hutchinson_trace({case.trace_kind}) = {est.mean:.6g} ± {est.stderr:.2g}, exact {exact:.6g} "
             f"({abs(est.mean - exact) / max(sigma, 1e-300):.1f} σ, σ = {sigma:.2g})")


def _check_penalty(case: Case, ref: Reference, fail: Callable[[str], None]) -> None:
    """trace_penalty on the mean loss over all data: fixed probes exactly, fresh probes in expectation."""
    model = copy.deepcopy(case.model).eval()
    params = [model.get_parameter(nm) for nm in ref.names]
    for p in params:
        p.requires_grad_(True)
    H = ref.dense["hessian"]
    gen = torch.Generator().manual_seed(case.seed + 13)
    Z = torch.randint(0, 2, (H.shape[0], 2), generator=gen, dtype=torch.float64) * 2 - 1
    want_fixed = float((Z * (H @ Z)).sum(0).mean())
    exact = float(torch.trace(H))
    off = H - torch.diag(torch.diag(H))
    sigma = math.sqrt(2 * float((off * off).sum()) / PENALTY_PROBES)
    sizes = [p.numel() for p in params]
    probes = [[c.view_as(p).to(case.dtype) for c, p in zip(torch.split(Z[:, j], sizes), params)]
              for j in range(Z.shape[1])]
    scale = max(float(H.norm()) * H.shape[0], 1e-300)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            loss = case.loss_fn(model(case.x), case.y)
            fixed = trace_penalty(loss, params, probes=probes, batched=case.penalty_batched)
            loss = case.loss_fn(model(case.x), case.y)
            fresh = trace_penalty(loss, params, num_probes=PENALTY_PROBES, batched=case.penalty_batched,
                                  generator=torch.Generator().manual_seed(case.seed % 1000))
    except Exception as exc:  # noqa: BLE001
        fail(f"trace_penalty(batched={case.penalty_batched}): {_short(exc)}")
        return
    err = abs(float(fixed) - want_fixed) / scale
    if not err <= TOL[case.dtype]:
        fail(f"trace_penalty(fixed probes, batched={case.penalty_batched}) = {float(fixed):.8g}, "
             f"Σ zᵀHz/m = {want_fixed:.8g} (relative {err:.1e})")
    if not abs(float(fresh) - exact) <= Z_MAX * sigma + TOL[case.dtype] * scale:
        fail(f"trace_penalty({PENALTY_PROBES} probes, batched={case.penalty_batched}) = {float(fresh):.6g}, "
             f"tr H = {exact:.6g} ({abs(float(fresh) - exact) / max(sigma, 1e-300):.1f} σ)")


def run_seed(seed: int) -> Outcome:
    """Build and check the case of ``seed``; an exception escaping either is a FAIL with its traceback's last frame."""
    try:
        case = make_case(seed)
    except Exception as exc:  # noqa: BLE001 - a generator bug, reported as such
        return Outcome(seed, "FAIL", "(generator)", [f"make_case raised {_short(exc)}: {traceback.format_exc(-1)}"])
    try:
        return check_case(case)
    except Exception as exc:  # noqa: BLE001 - outside the guarded products: still this case's failure
        return Outcome(seed, "FAIL", case.desc, [f"check_case raised {_short(exc)}: {traceback.format_exc(-1)}"],
                       families=sorted(case.families))


# ============================================================================================ the driver

def _worker(start: int, stride: int) -> None:
    """Check seeds start, start + stride, ... forever; one JSON line per event on stdout."""
    torch.set_num_threads(1)
    seed = start
    while True:
        print(json.dumps({"start": seed}), flush=True)
        o = run_seed(seed)
        print(json.dumps({"result": o.__dict__}), flush=True)
        seed += stride


def fuzz(minutes: float, start: int, out=sys.stdout) -> list[Outcome]:
    """Run cases from seed ``start`` on for ``minutes`` in a child process (a crash there is a finding, not the end)."""
    deadline = time.time() + minutes * 60
    outcomes: list[Outcome] = []
    seed = start
    while time.time() < deadline:
        proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz_models", "--worker", str(seed)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        current = None
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if "start" in event:
                current = event["start"]
                continue
            o = Outcome(**event["result"])
            outcomes.append(o)
            if o.status != "PASS":
                print(o.line(), file=out, flush=True)
            current = None
            seed = o.seed + 1
            if time.time() >= deadline:
                break
        proc.kill()
        rc = proc.wait()
        if current is not None and time.time() < deadline:   # the child died inside a case: a crash
            o = Outcome(current, "FAIL", "(crash)", [f"the process died (return code {rc}) inside this case"])
            outcomes.append(o)
            print(o.line(), file=out, flush=True)
            seed = current + 1
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=float(os.environ.get("FUZZ_MINUTES", 20)))
    parser.add_argument("--seed", type=int, default=None, help="replay one case (FUZZ_SEED)")
    parser.add_argument("--start", type=int, default=None, help="first seed (FUZZ_START; default: random)")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker is not None:
        _worker(args.worker, 1)
        return 0
    seed_env = os.environ.get("FUZZ_SEED", "")
    if args.seed is not None or seed_env:
        torch.set_num_threads(1)
        seed = args.seed if args.seed is not None else int(seed_env)
        o = run_seed(seed)
        print(o.line())
        if o.status != "PASS":
            print(f"replay: make fuzz FUZZ_SEED={seed}")
        return 1 if o.status == "FAIL" else 0
    start = args.start if args.start is not None else int(os.environ.get("FUZZ_START")
                                                          or random.SystemRandom().randrange(10**9))
    print(f"fuzz: {args.minutes:g} minutes from seed {start} (FUZZ_START={start} repeats this run)", flush=True)
    outcomes = fuzz(args.minutes, start)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("PASS", "FAIL", "SKIP")}
    failed = [o.seed for o in outcomes if o.status == "FAIL"]
    print(f"fuzz: {len(outcomes)} cases: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped "
          f"(reference not trusted, or a batch the model itself refuses)")
    if failed:
        print("fuzz: failing seeds (replay with make fuzz FUZZ_SEED=S): " + " ".join(map(str, failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
