"""Training loop, HTR penalty bookkeeping, curvature records (tiny digits models, CPU)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from htr_utils.curvature import hvp_operator
from htr_utils.hutchinson import hutchinson_trace
from htr_utils.lanczos import top_eigenvalues
from htr_utils.study.models import build_model
from htr_utils.study.training import (TIMING_COLUMNS, TrainConfig, Trainer, composite_batch_norm, sgd_step,
                                 penalty_parameter_names)

pytestmark = pytest.mark.slow  # every test here trains a network

TINY = TrainConfig(dataset="digits", model="lenet", width=0.25, train_size=120, test_size=60, batch_size=40, lr=0.05,
                   epochs=2, lanczos_iters=8, examples_per_class=2, trace_probes=4)


def _numbers(row: dict) -> dict:
    """The row without timings, NaN replaced by a string so that equal rows compare equal."""
    return {k: "nan" if isinstance(v, float) and math.isnan(v) else v
            for k, v in row.items() if k not in TIMING_COLUMNS}


def test_config_validation_and_round_trip():
    with pytest.raises(ValueError, match="unknown dataset"):
        TrainConfig(dataset="imagenet")
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="alexnet")
    with pytest.raises(ValueError, match="htr_params"):
        TrainConfig(htr_params="first")
    with pytest.raises(ValueError, match="curvature_kinds"):
        TrainConfig(curvature_kinds=("fisher",))
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(val_fraction=1.0)
    cfg = TINY.replace(milestones=[1], htr_params=["fc1.weight"], curvature_kinds=["hessian", "ggn"])
    assert cfg.milestones == (1,) and cfg.htr_params == ("fc1.weight",)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**cfg.to_dict(), "colour": 1})


def test_curvature_schedule():
    cfg = TrainConfig(epochs=7, curvature_every=3, curvature_kinds=("hessian", "ggn", "residual"),
                      curvature_kinds_epochs=(0, 7))
    assert cfg.curvature_epochs() == [0, 3, 6, 7]
    assert cfg.kinds_at(0) == ("hessian", "ggn", "residual") and cfg.kinds_at(3) == ("hessian",)
    assert cfg.kinds_at(4) == ()
    assert TrainConfig(curvature_every=0).curvature_epochs() == []
    assert TrainConfig(epochs=5, curvature_every=5, curvature_init=False).curvature_epochs() == [5]


def test_penalty_parameter_rules():
    model = build_model("vgg11_bn", 1, 10, width=0.125)
    every = [n for n, _ in model.named_parameters()]
    assert penalty_parameter_names(model, "all") == every
    middle = penalty_parameter_names(model, "middle")
    assert middle and all(n.endswith("weight") for n in middle) and set(middle) < set(every)
    authors = penalty_parameter_names(model, "middle_authors")
    assert set(authors) < set(every) and authors != middle
    assert penalty_parameter_names(model, ("classifier.weight",)) == ["classifier.weight"]


def test_epoch_is_deterministic_and_records_metrics():
    rows = [Trainer(TINY, device="cpu").run_epoch(1, progress=False) for _ in range(2)]
    assert _numbers(rows[0]) == _numbers(rows[1])
    row = rows[0]
    assert row["steps"] == 3 and row["penalty_steps"] == 0 and math.isnan(row["penalty_step_seconds"])
    assert 0 <= row["test_acc"] <= 1 and row["lr"] == TINY.lr and math.isnan(row["val_loss"])


def test_htr_penalty_steps_counted_and_change_training():
    plain = Trainer(TINY, device="cpu").run_epoch(1, progress=False)
    htr = Trainer(TINY.replace(htr_gamma=0.5, htr_freq=1, htr_probes=2), device="cpu").run_epoch(1, progress=False)
    assert htr["penalty_steps"] == htr["steps"] == 3
    assert math.isfinite(htr["penalty_mean"]) and htr["penalty_step_seconds"] > 0
    assert htr["train_loss"] != plain["train_loss"] and htr["test_loss"] != plain["test_loss"]
    # freq 2: steps 0 and 2 of 3; start epoch 1: no penalty during epoch 1
    every2 = Trainer(TINY.replace(htr_gamma=0.5, htr_freq=2, htr_probes=1), device="cpu").run_epoch(1, progress=False)
    assert every2["penalty_steps"] == 2
    late = Trainer(TINY.replace(htr_gamma=0.5, htr_freq=1, htr_start_epoch=1), device="cpu")
    assert late.run_epoch(1, progress=False)["penalty_steps"] == 0
    assert late.run_epoch(2, progress=False)["penalty_steps"] == 3


def test_validation_split_and_lr_schedule():
    trainer = Trainer(TINY.replace(val_fraction=0.1, milestones=(1,), lr_gamma=0.25), device="cpu")
    assert len(trainer.data.val) == round(0.1 * 1437)
    first, second = trainer.run_epoch(1, progress=False), trainer.run_epoch(2, progress=False)
    assert 0 <= first["val_acc"] <= 1 and math.isfinite(first["val_loss"])
    assert second["lr"] == pytest.approx(TINY.lr * 0.25)


def test_curvature_record_consistent():
    cfg = TINY.replace(curvature_every=1, curvature_kinds=("hessian", "ggn"), top_k=3)
    trainer = Trainer(cfg, device="cpu")
    rec = trainer.curvature(0)
    assert rec.num_examples == 20 and rec.layers == ("conv1", "conv2", "fc1", "fc2", "fc3")
    assert set(rec.kinds) == {"hessian", "ggn"}
    hess = rec.kinds["hessian"]
    assert hess.full.dim == sum(v.dim for v in hess.layers.values())
    op = hvp_operator(trainer.model, nn.CrossEntropyLoss(), trainer.curvature_data, params=list(rec.params))
    # the full trace is Hutchinson's with the same probes; layer traces are finite estimates
    full = hutchinson_trace(op, cfg.trace_probes, seed=cfg.seed)
    assert hess.full.trace.mean == pytest.approx(full.mean, rel=1e-4, abs=1e-6)
    assert all(math.isfinite(v.trace.mean) and v.trace.num_probes == cfg.trace_probes
               for v in hess.layers.values())
    # top values are those of top_eigenvalues with the same Lanczos run
    expected = top_eigenvalues(op, 3, num_iters=cfg.lanczos_iters, seed=cfg.seed)
    np.testing.assert_allclose(hess.full.top, expected, rtol=1e-6)
    assert all(len(v.top) == 3 for v in hess.layers.values())
    # GGN is positive semi-definite
    assert min(rec.kinds["ggn"].full.top) > -1e-6


def test_top_ritz_values_exclude_padding():
    from htr_utils.lanczos import density_from_runs
    # the first probe broke down after 3 steps, the second ran 5: the first is padded in the arrays
    runs = [(np.array([-1.0, 0.5, 2.0]), np.array([0.2, 0.3, 0.5])), (np.linspace(-1, 2, 5), np.full(5, 0.2))]
    dens = density_from_runs(runs)
    assert dens.nodes.shape == (2, 5) and dens.meta["top"] == [2.0, 0.5, -1.0]
    assert density_from_runs([(np.array([3.0]), np.array([1.0]))]).meta["top"] == [3.0]


def test_trainer_state_round_trip():
    a = Trainer(TINY, device="cpu")
    a.run_epoch(1, progress=False)
    state = a.state_dict()
    b = Trainer(TINY, device="cpu")
    b.load_state_dict(state)
    torch.manual_seed(123)  # load_state_dict must restore the RNG too
    b.load_state_dict(state)
    ra, rb = a.run_epoch(2, progress=False), b.run_epoch(2, progress=False)
    assert _numbers(ra) == _numbers(rb)


def test_htr_works_with_batch_norm():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(3)
    x = torch.randn(6, 3, 4, 4) * 2 + 1
    native = bn(x)
    stats = bn.running_mean.clone(), bn.running_var.clone()
    bn.reset_running_stats()
    with composite_batch_norm(bn):
        composite = bn(x)
    torch.testing.assert_close(composite, native, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((bn.running_mean, bn.running_var), stats)
    assert int(bn.num_batches_tracked) == 1 and "forward" not in vars(bn)  # counted like the native one; swap undone
    cfg = TINY.replace(model="vgg11_bn", width=0.125, htr_gamma=0.1, htr_freq=2, htr_probes=1)
    row = Trainer(cfg, device="cpu").run_epoch(1, progress=False)
    assert row["penalty_steps"] == 2 and math.isfinite(row["train_loss"])



def test_penalty_steps_leave_torch_functional_and_other_models_alone():
    """The elementary batch norm is swapped in on the trained model's BatchNorm modules only: seen from
    elsewhere during a penalty step (a hook inside the forward pass), F.batch_norm is the original and
    another model's BatchNorm runs the fused kernel."""
    original = F.batch_norm
    torch.manual_seed(0)
    model = build_model("vgg11_bn", in_channels=1, num_classes=10, width=0.125)
    other = nn.BatchNorm2d(3).eval()
    x_other = torch.randn(4, 3, 5, 5)
    seen = []

    def spy(module, args, output):
        fused = original(x_other, other.running_mean, other.running_var, other.weight, other.bias, False, 0.0, other.eps)
        seen.append((F.batch_norm is original, torch.equal(other(x_other), fused)))
    model.features[0].register_forward_hook(spy)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 1, 32, 32), torch.randint(0, 10, (8,))
    params = [p for p in model.parameters() if p.requires_grad]
    sgd_step(model, opt, nn.CrossEntropyLoss(), x, y, params, gamma=0.1, probes=1,
             generator=torch.Generator().manual_seed(0))
    assert seen == [(True, True)] and F.batch_norm is original
    assert not any("forward" in vars(m) for m in model.modules())


def test_progress_bars_show_in_a_terminal_or_a_notebook_only(monkeypatch):
    import htr_utils.study.training as tr
    assert tr._progress_disabled(False) is True
    monkeypatch.setattr(tr.sys.stderr, "isatty", lambda: False, raising=False)
    monkeypatch.setattr(tr, "_in_jupyter_kernel", lambda: False)
    assert tr._progress_disabled(True) is True         # a log file: no carriage-return junk
    monkeypatch.setattr(tr, "_in_jupyter_kernel", lambda: True)
    assert tr._progress_disabled(True) is None         # a notebook run alone: widget bars


def test_curvature_at_names_the_epochs_and_keeps_old_cache_keys():
    cfg = TrainConfig(epochs=10, curvature_every=1, curvature_at=(10, 0, 3, 3), curvature_kinds=("hessian", "ggn"),
                      curvature_kinds_epochs=(3,))
    assert cfg.curvature_epochs() == [0, 3, 10]
    assert cfg.kinds_at(3) == ("hessian", "ggn") and cfg.kinds_at(10) == ("hessian",) and cfg.kinds_at(1) == ()
    assert "curvature_at" not in TrainConfig(epochs=10).to_dict()  # configs without it keep their cache key
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="curvature_at"):
        TrainConfig(epochs=5, curvature_at=(0, 6))


def test_epoch_batches_are_the_seeded_permutation_of_the_training_set(monkeypatch):
    """run_epoch feeds sgd_step the examples in epoch_batch_indices(seed, epoch) order, however tqdm iterates."""
    from htr_utils.study import training
    from htr_utils.study.data import epoch_batch_indices
    cfg = TINY.replace(val_fraction=0.1, lr=1e-9, momentum=0.0)
    fed: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_step = training.sgd_step
    monkeypatch.setattr(training, "sgd_step", lambda m, o, f, x, y, *a: fed.append((x, y)) or real_step(m, o, f, x, y, *a))
    trainer = Trainer(cfg, device="cpu")
    trainer.run_epoch(2, progress=False)
    train = trainer.data.train
    batches = epoch_batch_indices(len(train), cfg.batch_size, cfg.seed, 2)
    assert len(fed) == len(batches) == 3
    for (xb, yb), positions in zip(fed, batches):
        assert torch.equal(xb, torch.stack([train[i][0] for i in positions.tolist()]))
        assert yb.tolist() == [int(train[i][1]) for i in positions.tolist()]


def test_evaluate_matches_float64_reference_at_any_batch_size():
    """Loss and accuracy from a float64 copy of the model on all examples at once; the batch size is irrelevant."""
    import copy
    from htr_utils.study.training import evaluate
    trainer = Trainer(TINY.replace(val_fraction=0.1), device="cpu")
    trainer.run_epoch(1, progress=False)
    val = trainer.data.val
    x = torch.stack([val[i][0] for i in range(len(val))]).double()
    y = torch.tensor([int(val[i][1]) for i in range(len(val))])
    ref_model = copy.deepcopy(trainer.model).double().eval()
    with torch.no_grad():
        out = ref_model(x)
    ref_loss, ref_acc = float(F.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean())
    for bs in (7, 50, 1000):
        loss, acc = evaluate(trainer.model, val, bs)
        assert loss == pytest.approx(ref_loss, rel=1e-5) and acc == pytest.approx(ref_acc, abs=1 / len(y))
    assert trainer.model.training  # the mode is restored


def test_eval_every_evaluates_every_kth_and_the_last_epoch(tmp_path):
    cfg = TrainConfig(dataset="digits", train_size=120, test_size=60, val_fraction=0.2, batch_size=40, epochs=5,
                      eval_every=2)
    assert [e for e in range(1, 6) if cfg.evaluates(e)] == [2, 4, 5]
    assert "eval_every" not in TrainConfig(epochs=5).to_dict() and cfg.to_dict()["eval_every"] == 2
    trainer = Trainer(cfg, str(tmp_path))
    rows = [trainer.run_epoch(e, progress=False) for e in range(1, 6)]
    for row in rows:
        evaluated = cfg.evaluates(row["epoch"])
        assert all(np.isfinite(row[k]) == evaluated for k in ("test_acc", "test_loss", "val_acc", "val_loss"))
    every = Trainer(cfg.replace(eval_every=1), str(tmp_path))
    last = [every.run_epoch(e, progress=False) for e in range(1, 6)][-1]
    assert last["test_acc"] == rows[-1]["test_acc"]  # evaluation never changes training
    with pytest.raises(ValueError, match="eval_every"):
        TrainConfig(eval_every=0)
