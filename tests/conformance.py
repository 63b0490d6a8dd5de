"""The conformance table: small float64 models × losses, and the cells (kind × block × batching × dtype) each row runs.

A row is (model, loss). Its reference is dense float64 linear algebra from htr_utils.dense: the
Hessian by reverse-over-reverse, the GGN as Jᵀ (∇²_f L) J from the Jacobian and the loss's Hessian
in the outputs. Each factor is itself checked against central finite differences along the test
directions in the same row (torch.func.hessian is not used: in this torch it is wrong through
LayerNorm). A cell builds an operator as a user would and compares its products with the
reference; see :func:`run_row`.
"""
from __future__ import annotations

import copy
import math
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from htr_utils import hvp_operator, layer_groups
from htr_utils.dense import (dense_hessian, dense_jacobian, dense_output_hessian, finite_difference_hvp,
                             finite_difference_jvp, finite_difference_output_hvp)

N = 6                                # samples; "several batches" = sizes 2, 1, 3
SPLITS = ((0, 2), (2, 3), (3, 6))
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
FD_TOL = 1e-6                        # central differences, eps = 1e-5, float64
NUM_VECTORS = 3


# --------------------------------------------------------------------------------------------- models

class MLP(nn.Module):
    def __init__(self, act: Callable = F.relu, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1, self.fc2, self.act, self.drop = nn.Linear(4, 5), nn.Linear(5, 3), act, nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.drop(self.act(self.fc1(x))))


class Activations(nn.Module):
    """GELU, SiLU and tanh."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc3(torch.tanh(F.silu(self.fc2(F.gelu(self.fc1(x))))))


class Conv1dPool(nn.Module):
    """Conv1d, ReLU, max and average pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2, self.fc = nn.Conv1d(2, 3, 3), nn.Conv1d(3, 2, 2), nn.Linear(2, 3)

    def forward(self, x):                                    # (n, 2, 9)
        h = F.max_pool1d(F.relu(self.conv1(x)), 2)           # (n, 3, 3)
        return self.fc(F.avg_pool1d(torch.tanh(self.conv2(h)), 2).flatten(1))


class ConvBN(nn.Module):
    """Conv2d, BatchNorm2d (eval: running statistics), ReLU, max pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(8, 3)

    def forward(self, x):                                    # (n, 1, 6, 6)
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


class LayerNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(4, 5), nn.LayerNorm(5), nn.Linear(5, 3)

    def forward(self, x):
        return self.fc2(F.gelu(self.norm(self.fc1(x))))


class GroupNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.norm, self.fc = nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4), nn.Linear(4, 3)

    def forward(self, x):                                    # (n, 1, 5, 5)
        return self.fc(F.adaptive_avg_pool2d(F.silu(self.norm(self.conv(x))), 1).flatten(1))


class EmbeddingNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(7, 3), nn.Linear(3, 3)

    def forward(self, tokens):                               # (n, 4) integers
        return self.fc(torch.tanh(self.emb(tokens).mean(1)))


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the identity, ReLU, average pooling (a ResNet basic block)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.conv2, self.bn2 = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2)
        self.fc = nn.Linear(2, 3)

    def forward(self, x):                                    # (n, 2, 4, 4)
        h = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return self.fc(F.adaptive_avg_pool2d(F.relu(h + x), 1).flatten(1))


class HandAttention(nn.Module):
    """softmax(Q Kᵀ / √d) V written out, mean over the sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = (nn.Linear(4, 4, bias=False) for _ in range(3))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):                                    # (n, 3, 4)
        att = torch.softmax(self.q(x) @ self.k(x).transpose(1, 2) / 2.0, dim=-1)
        return self.fc((att @ self.v(x)).mean(1))


class MHANet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.att, self.fc = nn.MultiheadAttention(4, 2, batch_first=True), nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.att(x, x, x, need_weights=False)[0].mean(1))


class TransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.1, batch_first=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(self.enc(x).mean(1))


class Recurrent(nn.Module):
    def __init__(self, cell: type[nn.Module]) -> None:
        super().__init__()
        self.rnn, self.fc = cell(2, 3, batch_first=True), nn.Linear(3, 3)

    def forward(self, x):                                    # (n, 3, 2)
        return self.fc(self.rnn(x)[0][:, -1])


class TiedNet(nn.Module):
    """Embedding and output layer share one weight (decoder.weight is an alias of encoder.weight)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder, self.decoder = nn.Embedding(5, 3), nn.Linear(3, 5)
        self.decoder.weight = self.encoder.weight

    def forward(self, tokens):
        return self.decoder(torch.tanh(self.encoder(tokens).mean(1)))


def _frozen() -> nn.Module:
    model = MLP(torch.tanh)
    model.fc1.weight.requires_grad_(False)
    return model


def _with_statistics(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Non-trivial BatchNorm running statistics and affine parameters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
            m.weight.data.uniform_(0.5, 1.5, generator=gen)
            m.bias.data.normal_(generator=gen)
    return model


def _floats(*shape):
    return lambda gen: torch.randn(N, *shape, generator=gen, dtype=torch.float64)


def _tokens(vocab, length):
    return lambda gen: torch.randint(0, vocab, (N, length), generator=gen)


@dataclass(frozen=True)
class ModelCase:
    build: Callable[[], nn.Module]
    inputs: Callable[[torch.Generator], torch.Tensor]
    outputs: int = 3
    train_mode: bool = False        # hand the operator a model in train mode (it must evaluate in eval mode)


MODELS: dict[str, ModelCase] = {
    "mlp_relu": ModelCase(MLP, _floats(4)),
    "gelu_silu_tanh": ModelCase(Activations, _floats(4)),
    "conv1d_maxpool_avgpool": ModelCase(Conv1dPool, _floats(2, 9)),
    "conv2d_batchnorm_maxpool": ModelCase(ConvBN, _floats(1, 6, 6), train_mode=True),
    "layernorm": ModelCase(LayerNormNet, _floats(4)),
    "groupnorm": ModelCase(GroupNormNet, _floats(1, 5, 5)),
    "embedding": ModelCase(EmbeddingNet, _tokens(7, 4)),
    "dropout": ModelCase(lambda: MLP(F.relu, dropout=0.5), _floats(4), train_mode=True),
    "residual_block": ModelCase(ResidualBlock, _floats(2, 4, 4), train_mode=True),
    "attention_by_hand": ModelCase(HandAttention, _floats(3, 4)),
    "multihead_attention": ModelCase(MHANet, _floats(3, 4)),
    "transformer_encoder_layer": ModelCase(TransformerNet, _floats(3, 4), train_mode=True),
    "rnn": ModelCase(lambda: Recurrent(nn.RNN), _floats(3, 2)),
    "gru": ModelCase(lambda: Recurrent(nn.GRU), _floats(3, 2)),
    "lstm": ModelCase(lambda: Recurrent(nn.LSTM), _floats(3, 2)),
    "tied_weights": ModelCase(TiedNet, _tokens(5, 3), outputs=5),
    "frozen_parameters": ModelCase(_frozen, _floats(4)),
}


# --------------------------------------------------------------------------------------------- losses

def nll(z, y):
    return F.nll_loss(F.log_softmax(z, dim=-1), y)


LOSSES: dict[str, Callable] = {
    "cross_entropy": F.cross_entropy,
    "nll": nll,
    "mse": F.mse_loss,
    "smooth_l1": F.smooth_l1_loss,
    "huber": F.huber_loss,
    "bce_with_logits": F.binary_cross_entropy_with_logits,
}


def make_targets(loss: str, outputs: int, gen: torch.Generator) -> torch.Tensor:
    if loss in ("cross_entropy", "nll"):
        return torch.randint(0, outputs, (N,), generator=gen)
    if loss == "bce_with_logits":
        return torch.randint(0, 2, (N, outputs), generator=gen).double()
    return torch.randn(N, outputs, generator=gen, dtype=torch.float64)


# --------------------------------------------------------------------------------------------- cells

@dataclass(frozen=True)
class Cell:
    kind: str        # hessian | ggn | residual
    block: str       # full: all trainable parameters; block: one middle layer group (layer_groups(modules="all"))
    batches: str     # one: a single (x, y) batch (linearised path where verified); several: 3 uneven batches
    dtype: torch.dtype

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.block}/{self.batches}/{str(self.dtype)[6:]}"


CELLS = [Cell(kind, block, batches, dtype)
         for dtype in (torch.float64, torch.float32)
         for batches in ("one", "several")
         for block in ("full", "block")
         for kind in ("hessian", "ggn", "residual")]

# The fast selection (CI) runs every kind, both blocks, both batchings and both dtypes on every row,
# but not every combination: seven of the twelve one-batch (linearised) cells cost a trace each.
FAST_CELLS = [Cell("hessian", "full", "one", torch.float64), Cell("ggn", "full", "one", torch.float64),
              Cell("residual", "full", "several", torch.float64), Cell("hessian", "block", "several", torch.float64),
              Cell("ggn", "block", "several", torch.float64), Cell("hessian", "full", "several", torch.float32),
              Cell("ggn", "full", "one", torch.float32)]


@dataclass
class RowResult:
    cells: dict[str, float | str] = field(default_factory=dict)   # error, or why the cell cannot run
    failures: list[str] = field(default_factory=list)
    warnings: set[str] = field(default_factory=set)


def block_names(model: nn.Module) -> list[str]:
    """The parameters of the middle group of layer_groups(model, include_bias=True, modules="all")."""
    groups = list(layer_groups(model, include_bias=True, modules="all").values())
    return groups[len(groups) // 2]


def _scale_error(got: torch.Tensor, want: torch.Tensor, scale: float) -> float:
    return float((got.double() - want).norm()) / scale


def run_row(model_name: str, loss_name: str, cells: list[Cell]) -> RowResult:
    """Every cell of one row; the row's reference is checked against finite differences first."""
    case, loss_fn = MODELS[model_name], LOSSES[loss_name]
    gen = torch.Generator().manual_seed(zlib.crc32(f"{model_name}/{loss_name}".encode()))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = _with_statistics(case.build().double(), gen)
    model.train(case.train_mode)
    x, y = case.inputs(gen), make_targets(loss_name, case.outputs, gen)
    result = RowResult()

    # The reference: dense H and G = Jᵀ H_f J on all trainable parameters, each factor checked by finite differences.
    H = dense_hessian(model, loss_fn, x, y)
    f, J = dense_jacobian(model, x)
    H_out = dense_output_hessian(loss_fn, f, y)
    G = (J.T @ H_out @ J + (J.T @ H_out @ J).T) / 2
    P = H.shape[0]
    V = torch.randn(P, NUM_VECTORS, generator=gen, dtype=torch.float64)
    V /= V.norm(dim=0)
    U = torch.randn(f.numel(), NUM_VECTORS, generator=gen, dtype=torch.float64)
    U /= U.norm(dim=0)
    for what, got, want in (("Hessian", H @ V, finite_difference_hvp(model, loss_fn, x, y, V)),
                            ("Jacobian", J @ V, finite_difference_jvp(model, x, V)),
                            ("output Hessian", H_out @ U, finite_difference_output_hvp(loss_fn, f, y, U))):
        err = float((got - want).norm() / max(float(want.norm()), 1e-12))
        result.cells[f"reference {what} vs finite differences"] = err
        if not err < FD_TOL:
            result.failures.append(f"dense {what} differs from central finite differences by {err:.1e}")
    if result.failures:
        return result

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    sizes = [p.numel() for n, p in model.named_parameters() if p.requires_grad]
    offsets = dict(zip(names, (sum(sizes[:i]) for i in range(len(sizes)))))
    block = block_names(model)
    rows = torch.cat([torch.arange(offsets[n], offsets[n] + dict(zip(names, sizes))[n]) for n in block])
    dense = {"hessian": H, "ggn": G, "residual": H - G}

    for cell in cells:
        params = None if cell.block == "full" else block
        ref = {k: D if cell.block == "full" else D[rows][:, rows] for k, D in dense.items()}
        W = V if cell.block == "full" else torch.randn(len(rows), NUM_VECTORS, generator=gen, dtype=torch.float64)
        # One scale per row and block: the Hessian's and GGN's products (the residual may vanish).
        scale = max(float((ref["hessian"] @ W).norm()), float((ref["ggn"] @ W).norm()), 1e-300)
        m = model if cell.dtype == torch.float64 else copy.deepcopy(model).to(cell.dtype)
        cast = (lambda t: t.to(cell.dtype) if t.is_floating_point() else t)
        xs, ys = cast(x), cast(y)
        data = (xs, ys) if cell.batches == "one" else [(xs[a:b], ys[a:b]) for a, b in SPLITS]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            op = hvp_operator(m, loss_fn, data, params=params, kind=cell.kind)
            Wc = W.to(cell.dtype)
            products = [op.matmat(Wc), op.matmat(Wc), op.matvec(Wc[:, 0])[:, None]]  # batched, again, single
        result.warnings |= {str(w.message).split(":")[0][:80] for w in caught if issubclass(w.category, UserWarning)}
        want = ref[cell.kind] @ W
        err = max(_scale_error(p, want[:, : p.shape[1]], scale) for p in products)
        result.cells[cell.name] = err
        if not err <= TOL[cell.dtype]:
            result.failures.append(f"{cell.name}: relative error {err:.1e} > {TOL[cell.dtype]:.0e}")
        if math.isnan(err):
            result.failures.append(f"{cell.name}: NaN")
    return result
