"""Documented semantics and clear errors: snapshots, probes, "__all__", summed losses, and every bad input of issue 11."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils import (hutchinson_trace, hvp_operator, layer_groups, lanczos, slq_density, top_eigenvalues,
                       trace_penalty)
from htr_utils.dense import dense_hessian
from htr_utils.layerwise import layerwise_spectra, layerwise_trace, lockstep_lanczos

from conformance import Recurrent
from conftest import make_problem, rel_err

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- snapshot semantics

@pytest.mark.parametrize("as_loader", [False, True])
def test_operator_is_a_snapshot_of_the_parameters(as_loader):
    """One batch and a DataLoader alike: changing the model after building does not change the operator."""
    p = make_problem(seed=4)
    data = (torch.utils.data.DataLoader(torch.utils.data.TensorDataset(p.x, p.y), batch_size=3) if as_loader
            else (p.x, p.y))
    op = hvp_operator(p.model, F.cross_entropy, data)
    v = torch.randn(op.dim, dtype=torch.double)
    before = op.matvec(v)
    with torch.no_grad():
        for q in p.model.parameters():
            q.add_(0.3)
        p.model.bn.running_var.mul_(2)
    assert torch.equal(op.matvec(v), before)                                       # the operator did not change ...
    assert rel_err(hvp_operator(p.model, F.cross_entropy, data).matvec(v), before) > 1e-3  # ... the model did


# --------------------------------------------------------------------------- trace_penalty's probes

def _penalty(model, x, y, **kw):
    loss = F.cross_entropy(model(x), y)
    return float(trace_penalty(loss, list(model.parameters()), 2, **kw).detach())


def test_trace_penalty_draws_fresh_probes_each_call(problem):
    model, x, y = problem.model.eval(), problem.x, problem.y
    torch.manual_seed(0)
    a, b = _penalty(model, x, y), _penalty(model, x, y)
    assert a != b, "without a generator every call must draw new probes (an estimate, not a fixed quadratic form)"
    torch.manual_seed(0)
    assert _penalty(model, x, y) == a, "reproducible from torch.manual_seed"
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert _penalty(model, x, y, generator=g1) == _penalty(model, x, y, generator=g2)


def test_trace_penalty_bad_inputs(problem):
    model, x, y = problem.model.eval(), problem.x, problem.y
    params = list(model.parameters())
    loss = F.cross_entropy(model(x), y)
    with pytest.raises(ValueError, match="num_probes must be at least 1"):
        trace_penalty(loss, params, 0)
    with pytest.raises(ValueError, match="num_probes must be an integer"):
        trace_penalty(loss, params, 1.5)
    with pytest.raises(ValueError, match="params must be tensors"):
        trace_penalty(loss, ["fc1.weight"], 1)
    with pytest.raises(ValueError, match="at least one parameter"):
        trace_penalty(loss, [], 1)
    with pytest.raises(ValueError, match="scalar loss"):
        trace_penalty(F.cross_entropy(model(x), y, reduction="none"), params, 1)
    with pytest.raises(ValueError, match="probes is empty"):
        trace_penalty(loss, params, probes=[])
    with torch.no_grad():
        detached = F.cross_entropy(model(x), y)
    with pytest.raises(ValueError, match="gradients enabled"):
        trace_penalty(detached, params, 1)


# --------------------------------------------------------------------------- layerwise "__all__"

def test_layerwise_all_is_the_trace_of_the_union_of_the_groups():
    """With groups covering part of the operator, "__all__" is zᵀ A z for probes z zero outside the groups:
    an estimate of Σ_l tr(A_ll) + 0 (the trace of A on the union of the groups), not of tr(A)."""
    from htr_utils.lanczos import rademacher
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 3, dtype=torch.double), torch.randint(0, 2, (8,))
    op = hvp_operator(model, F.cross_entropy, (x, y))               # weights and biases
    groups = layer_groups(model)                                     # weights only: {"0": [...], "2": [...]}
    H = dense_hessian(model, F.cross_entropy, x, y)
    est = layerwise_trace(op, groups, num_probes=5, seed=7, batch_size=2)
    Z = torch.cat([rademacher(op.dim, g, torch.double, count=1) for g in [torch.Generator().manual_seed(7)]
                   for _ in range(5)], dim=1)
    union = torch.zeros(op.dim, dtype=torch.bool)
    union[:12], union[16:24] = True, True                            # 0.weight (12), 2.weight (8)
    Z[~union] = 0
    np.testing.assert_allclose(est["__all__"].samples, ((H @ Z) * Z).sum(0).numpy(), rtol=1e-10)
    for name, rows in (("0", slice(0, 12)), ("2", slice(16, 24))):
        block = H[rows, rows]
        np.testing.assert_allclose(est[name].samples, ((block @ Z[rows]) * Z[rows]).sum(0).numpy(), rtol=1e-10)


# --------------------------------------------------------------------------- the loss

def test_summed_loss_is_rejected(problem):
    with pytest.raises(ValueError, match="reduction='sum'"):
        hvp_operator(problem.model, nn.CrossEntropyLoss(reduction="sum"), (problem.x, problem.y))
    x, y = torch.randn(6, 4, dtype=torch.double), torch.randn(6, 3, dtype=torch.double)
    with pytest.raises(ValueError, match="reduction='sum'"):
        hvp_operator(nn.Linear(4, 3).double(), lambda z, t: F.mse_loss(z, t, reduction="sum"), [(x[:3], y[:3]), (x[3:], y[3:])])


def test_unreduced_loss_is_rejected(problem):
    with pytest.raises(ValueError, match="must return a scalar"):
        hvp_operator(problem.model, nn.CrossEntropyLoss(reduction="none"), (problem.x, problem.y))


def test_weighted_loss_over_several_batches_is_refused(problem):
    # A lambda: the operator cannot read its weights (nn.CrossEntropyLoss(weight=w) it weights exactly),
    # so over several batches it refuses rather than weight them by size.
    w = torch.tensor([1.0, 3.0, 0.5], dtype=torch.double)

    def loss(f, t):
        return F.cross_entropy(f, t, weight=w)
    x, y = problem.x, problem.y
    with pytest.raises(ValueError, match="not the mean of per-sample losses.*one batch"):
        hvp_operator(problem.model, loss, [(x[:4], y[:4]), (x[4:], y[4:])])
    hvp_operator(problem.model, loss, (x, y))  # one batch: its Hessian is well defined, no error


# --------------------------------------------------------------------------- the data

@pytest.mark.parametrize("data,match", [
    ("x_only", "single tensor"),
    ("tuple_of_one", "pair, got a tuple of length 1"),
    ("list_of_x", "pair, got Tensor"),
    ("dicts", "is a dict"),
    ("mismatched", "same first"),
    ("ints", "must be an .x, y. pair"),
])
def test_data_without_labels_or_malformed(problem, data, match):
    x, y = problem.x, problem.y
    bad = {"x_only": x, "tuple_of_one": [(x,)], "list_of_x": [x[:2], x[2:4], x[4:]], "dicts": [{"x": x, "y": y}],
           "mismatched": (x, y[:-1]), "ints": 3}[data]
    with pytest.raises(ValueError, match=match):
        hvp_operator(problem.model, F.cross_entropy, bad)


def test_loader_without_labels(problem):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(problem.x), batch_size=3)
    with pytest.raises(ValueError, match="targets"):
        hvp_operator(problem.model, F.cross_entropy, loader)


def test_nan_in_the_model_or_data(problem):
    p = make_problem(seed=5)
    with torch.no_grad():
        p.model.fc1.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="parameter 'fc1.weight' has NaN"):
        hvp_operator(p.model, F.cross_entropy, (p.x, p.y))
    p = make_problem(seed=5)
    p.model.bn.running_var[0] = float("inf")
    with pytest.raises(ValueError, match="buffer 'bn.running_var'"):
        hvp_operator(p.model, F.cross_entropy, (p.x, p.y))
    x = problem.x.clone()
    x[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="loss on the first batch is nan"):
        hvp_operator(problem.model, F.cross_entropy, (x, problem.y))
    op = hvp_operator(problem.model, F.cross_entropy, [(problem.x, problem.y), (x, problem.y)])
    with pytest.raises(FloatingPointError, match="NaN or inf"):
        op.matvec(torch.ones(op.dim, dtype=torch.double))
    with pytest.raises(ValueError, match="vector has NaN"):
        op.matvec(torch.full((op.dim,), float("nan"), dtype=torch.double))


def test_tensors_or_groups_passed_as_params(problem):
    data = (problem.x, problem.y)
    with pytest.raises(ValueError, match="names .strings., not tensors"):
        hvp_operator(problem.model, F.cross_entropy, data, params=[problem.model.fc1.weight])
    with pytest.raises(ValueError, match="list of parameter names"):
        hvp_operator(problem.model, F.cross_entropy, data, params=problem.model.fc1.weight)
    with pytest.raises(ValueError, match="mapping"):
        hvp_operator(problem.model, F.cross_entropy, data, params=layer_groups(problem.model))
    with pytest.raises(ValueError, match="empty list"):
        hvp_operator(problem.model, F.cross_entropy, data, params=[])


def test_numpy_and_lists_into_matvec_and_matmat():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()
    x, y = torch.randn(8, 3, dtype=torch.double), torch.randint(0, 2, (8,))
    op = hvp_operator(model, F.cross_entropy, (x, y))
    V = np.random.default_rng(0).standard_normal((op.dim, 2))
    H = dense_hessian(model, F.cross_entropy, x, y)
    out = op.matmat(V)
    assert isinstance(out, torch.Tensor) and rel_err(out, H @ torch.as_tensor(V)) < 1e-10
    assert rel_err(op.matvec(V[:, 0].tolist()), H @ torch.as_tensor(V[:, 0])) < 1e-10
    with pytest.raises(ValueError, match=r"shape \(\d+, k\)"):
        op.matmat(V[:, 0])
    with pytest.raises(ValueError, match="expected a tensor or array"):
        op.matmat(object())


@pytest.mark.parametrize("call,match", [
    (lambda op, g: hutchinson_trace(op, 0), "num_probes must be at least 1"),
    (lambda op, g: hutchinson_trace(op, 2.5), "num_probes must be an integer"),
    (lambda op, g: slq_density(op, 4, num_probes=0), "num_probes must be at least 1"),
    (lambda op, g: slq_density(op, 0), "num_iters must be at least 1"),
    (lambda op, g: lanczos(op, 3.0), "num_iters must be an integer"),
    (lambda op, g: layerwise_trace(op, g, 0), "num_probes must be at least 1"),
    (lambda op, g: layerwise_spectra(op, g, 4, num_probes=0), "num_probes must be at least 1"),
    (lambda op, g: layerwise_trace(op, {}, 3), "non-empty"),
    (lambda op, g: layerwise_spectra(op, {}, 4), "non-empty"),
    (lambda op, g: lockstep_lanczos(op, {"fc1": []}, 4), "non-empty list"),
    (lambda op, g: layerwise_trace(op, {"a": ["fc1.weight"], "b": ["fc1.weight"]}, 3), "overlap"),
    (lambda op, g: layerwise_trace(op, {"a": ["fc9.weight"]}, 3), "not in the operator"),
    (lambda op, g: top_eigenvalues(op, 2.0), "k must be an integer"),
])
def test_bad_counts_and_groups(problem, call, match):
    op = hvp_operator(problem.model, F.cross_entropy, (problem.x, problem.y), cache=False)
    with pytest.raises(ValueError, match=match):
        call(op, layer_groups(problem.model))


def test_ggn_needs_one_output_tensor():
    class TwoOutputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x):
            return self.fc(x), x

    x, y = torch.randn(4, 3), torch.randint(0, 2, (4,))
    with pytest.raises(ValueError, match="return one tensor"):
        hvp_operator(TwoOutputs(), lambda out, t: F.cross_entropy(out[0], t), (x, y), kind="ggn")
    op = hvp_operator(TwoOutputs(), lambda out, t: F.cross_entropy(out[0], t), (x, y), kind="hessian")
    assert op.matvec(torch.ones(op.dim)).shape == (op.dim,)


# --------------------------------------------------------------------------- no crash, no silent wrong answer

def test_mse_loss_does_not_crash_the_interpreter():
    """Used to segfault (linearised mse_loss backward). Run in a fresh interpreter so a crash fails only this test."""
    code = textwrap.dedent("""
        import copy, torch, torch.nn.functional as F
        from torch import nn
        from htr_utils import hvp_operator
        from htr_utils.dense import dense_curvature
        torch.manual_seed(0)
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            model = nn.Linear(5, 3).to(dtype)
            x, y = torch.randn(8, 5, dtype=dtype), torch.randn(8, 3, dtype=dtype)
            ref = copy.deepcopy(model).double()
            scale = float(torch.linalg.matrix_norm(dense_curvature(ref, F.mse_loss, x.double(), y.double()), 2))
            for kind in ("hessian", "ggn", "residual"):
                op = hvp_operator(model, F.mse_loss, (x, y), kind=kind)
                V = torch.randn(op.dim, 2, dtype=dtype)
                D = dense_curvature(ref, F.mse_loss, x.double(), y.double(), kind=kind)
                for out in (op.matvec(V[:, 0])[:, None], op.matmat(V)):
                    err = float((out.double() - D @ V[:, :out.shape[1]].double()).norm()) / (scale * float(V.norm()))
                    assert err < tol, (dtype, kind, err)
        print("ok")
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), (out.returncode, out.stderr[-2000:])


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_recurrent_products_do_not_drift(cell):
    """linearize's map for the RNN ops is right only on its first call: it must not be used; products stay exact."""
    torch.manual_seed(1)
    model = Recurrent({"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}[cell]).double()
    x, y = torch.randn(4, 3, 2, dtype=torch.double), torch.randint(0, 3, (4,))
    H = dense_hessian(model, F.cross_entropy, x, y)
    with pytest.warns(UserWarning, match="linearize's map .* not used"):
        op = hvp_operator(model, F.cross_entropy, (x, y))
        op.matvec(torch.zeros(op.dim, dtype=torch.double))
    V = torch.randn(op.dim, 2, dtype=torch.double)
    for _ in range(4):
        assert rel_err(op.matmat(V), H @ V) < 1e-12


def test_attention_runs_without_fallback_warning():
    """The fused SDPA kernels have no forward-mode or double-backward rule; the operator uses the math kernel."""
    import warnings
    torch.manual_seed(2)
    model = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, batch_first=True).double().eval()
    x = torch.randn(3, 2, 4, dtype=torch.double)
    y = torch.randn(3, 2, 4, dtype=torch.double)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        op = hvp_operator(model, F.mse_loss, (x, y), cache=False)
        v = torch.randn(op.dim, dtype=torch.double)
        assert rel_err(op.matvec(v), dense_hessian(model, F.mse_loss, x, y) @ v) < 1e-10


def test_layer_groups_on_tied_weights_name_what_the_operator_accepts():
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = nn.Embedding(5, 3), nn.Linear(3, 5)
            self.decoder.weight = self.encoder.weight

        def forward(self, t):
            return self.decoder(torch.tanh(self.encoder(t).mean(1)))

    torch.manual_seed(3)
    model = Tied().double()
    x, y = torch.randint(0, 5, (6, 2)), torch.randint(0, 5, (6,))
    groups = layer_groups(model)
    assert groups == {"decoder": ["encoder.weight"]}
    op = hvp_operator(model, F.cross_entropy, (x, y), params=[n for g in groups.values() for n in g])
    est = layerwise_trace(op, groups, 50)
    assert set(est) == {"decoder", "__all__"}
    # The alias is accepted and mapped to the canonical name; naming both is naming one tensor twice.
    assert hvp_operator(model, F.cross_entropy, (x, y), params=["decoder.weight"]).param_names == ["encoder.weight"]
    with pytest.raises(ValueError, match="same tensor twice"):
        hvp_operator(model, F.cross_entropy, (x, y), params=["decoder.weight", "encoder.weight"])
    everything = layer_groups(model, include_bias=True, modules="all")
    assert everything == {"encoder": ["encoder.weight"], "decoder": ["decoder.bias"]}


def test_layer_groups_keeps_every_submodule_mode():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(F.max_pool2d(self.bn(self.conv(x)), 2).flatten(1))

    model = Net().train()
    model.bn.eval()                                   # a frozen BatchNorm inside a training model
    stats = model.bn.running_mean.clone()
    assert list(layer_groups(model, example_input=torch.randn(2, 1, 6, 6))) == ["conv", "fc"]
    assert model.training and model.conv.training and not model.bn.training
    assert torch.equal(stats, model.bn.running_mean)


def test_layer_groups_modules_option():
    class Everything(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(6, 4)
            self.att = nn.MultiheadAttention(4, 2, batch_first=True)
            self.norm = nn.LayerNorm(4)
            self.rnn = nn.GRU(4, 3, batch_first=True)
            self.gn = nn.GroupNorm(1, 3)
            self.scale = nn.Parameter(torch.ones(()))
            self.fc = nn.Linear(3, 2)

        def forward(self, t):
            h = self.emb(t)
            h = self.norm(h + self.att(h, h, h, need_weights=False)[0])
            out = self.rnn(h)[0][:, -1]
            return self.fc(self.gn(out) * self.scale)

    model = Everything()
    assert list(layer_groups(model)) == ["att.out_proj", "fc"]  # the default: Conv/Linear only
    groups = layer_groups(model, modules="all")
    assert list(groups) == ["(model)", "emb", "att", "att.out_proj", "norm", "rnn", "gn", "fc"]
    assert groups["rnn"] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0"] and groups["att"] == ["att.in_proj_weight"]
    assert groups["(model)"] == ["scale"] and groups["norm"] == ["norm.weight"]
    with_bias = layer_groups(model, include_bias=True, modules="all")
    assert with_bias["rnn"] == ["rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0"]
    assert layer_groups(model, modules=(nn.LayerNorm, nn.GroupNorm)) == {"norm": ["norm.weight"], "gn": ["gn.weight"]}
    # Forward order; MultiheadAttention uses out_proj's tensors without calling the module, so a forward
    # pass never sees "att.out_proj" and it is dropped (documented).
    ordered = layer_groups(model, modules="all", example_input=torch.randint(0, 6, (2, 3)))
    assert list(ordered) == ["(model)", "emb", "att", "norm", "rnn", "gn", "fc"]
    every = [n for g in with_bias.values() for n in g]
    assert sorted(every) == sorted(n for n, _ in model.named_parameters())
    with pytest.raises(ValueError, match="modules must be"):
        layer_groups(model, modules="norms")
