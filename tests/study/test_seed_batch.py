"""Seed batching: S members stacked along a leading axis train exactly as S separate runs (float32 rounding).

References are the existing per-model code paths (build_model, sgd_step with torch.optim.SGD,
trace_penalty, Trainer.run_epoch), each run on its own model; the stacked code shares none of them
except build_model and torch.optim.SGD's elementwise update.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from htr_utils.hutchinson import trace_penalty
from htr_utils.study.models import build_model
from htr_utils.study.seed_batch import (MemberDiverged, SeedBatch, build_members, dataset_tensors,
                                        member_batch_indices, member_losses, member_probes, stack_parameters,
                                        stacked_evaluate, stacked_forward, stacked_sgd_step, stacked_trace_penalty)
from htr_utils.study import training
from htr_utils.study.training import TrainConfig, Trainer, evaluate, sgd_step

CFG = TrainConfig(dataset="digits", model="lenet", width=0.5, train_size=120, test_size=60, batch_size=40, lr=0.05,
                  epochs=2)
SEEDS = (3, 1, 7)
B = 16


def _batches(steps: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(len(SEEDS), B, 1, 32, 32, generator=g), torch.randint(0, 10, (len(SEEDS), B), generator=g))
            for _ in range(steps)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


def _run_both(cfg: TrainConfig, steps: int, penalty: bool = False, gamma: float = 0.0):
    """Stacked and separate members after ``steps`` steps on the same batches: (start, stacked, separate list)."""
    members = build_members(cfg, SEEDS)
    start = [copy.deepcopy(m) for m in members]
    params = stack_parameters(members)
    opt = torch.optim.SGD(params.values(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(cfg.milestones), gamma=cfg.lr_gamma)
    names = [n for n, _ in members[0].named_parameters()] if penalty else None
    gens = [torch.Generator().manual_seed(100 + s) for s in SEEDS]
    pens = []
    for x, y in _batches(steps):
        probes = member_probes([params[n] for n in names], gens, 3) if penalty else None
        pens.append(stacked_sgd_step(members[0], params, opt, x, y, names, gamma, probes)[2])
        sched.step()
    separate, sep_pens = [], []
    for s, seed in enumerate(SEEDS):
        model = copy.deepcopy(start[s])
        o = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        sc = torch.optim.lr_scheduler.MultiStepLR(o, list(cfg.milestones), gamma=cfg.lr_gamma)
        gen = torch.Generator().manual_seed(100 + seed)
        for x, y in _batches(steps):
            pen = sgd_step(model, o, nn.CrossEntropyLoss(), x[s], y[s], list(model.parameters()) if penalty else None,
                           gamma, 3, gen)[2]
            sep_pens.append(pen)
            sc.step()
        separate.append(model)
    return start, params, separate, pens, sep_pens


def _check_updates(start, params, separate, tol: float = 2e-6, update_tol: float = 1e-4) -> None:
    """Each member's parameters match its separate run to ``tol`` relative (float32 rounding), and so does its
    total update θ_end − θ_start to ``update_tol`` (looser: forming the difference of two float32 values near
    0.1 that differ by ~1e-4 costs ~1e-5 relative by itself)."""
    for s, model in enumerate(separate):
        for n, p in model.named_parameters():
            p0 = dict(start[s].named_parameters())[n].detach()
            ref = p.detach() - p0
            assert ref.norm() > 0, f"parameter {n} did not move; the test would prove nothing"
            assert _rel(params[n][s].detach(), p.detach()) < tol, (s, n)
            assert _rel(params[n][s].detach() - p0, ref) < update_tol, (s, n)


def test_initialisation_equals_build_model_under_each_seed():
    params = stack_parameters(build_members(CFG, SEEDS))
    for s, seed in enumerate(SEEDS):
        torch.manual_seed(seed)
        ref = build_model("lenet", 1, 10, width=0.5)
        for n, p in ref.named_parameters():
            assert torch.equal(params[n][s], p.detach()), (seed, n)
    trainer_model = Trainer(CFG.replace(seed=SEEDS[1])).model
    for n, p in trainer_model.named_parameters():
        assert torch.equal(params[n][1], p.detach())
    assert not torch.equal(params["conv1.weight"][0], params["conv1.weight"][1])


def test_plain_sgd_step_equals_separate_steps():
    start, params, separate, _, _ = _run_both(CFG.replace(momentum=0.0, lr=0.1), steps=1)
    _check_updates(start, params, separate)


def test_momentum_weight_decay_and_schedule_over_several_steps():
    cfg = CFG.replace(momentum=0.9, weight_decay=1e-2, lr=0.05, milestones=(2, 3), lr_gamma=0.5)
    start, params, separate, _, _ = _run_both(cfg, steps=4)
    _check_updates(start, params, separate)


def test_htr_step_equals_separate_steps_with_the_same_probes():
    start, params, separate, pens, sep_pens = _run_both(CFG.replace(momentum=0.9, lr=0.05), steps=2, penalty=True,
                                                        gamma=0.05)
    _check_updates(start, params, separate)
    for k, pen in enumerate(pens):  # step k: member s's penalty equals its separate run's
        ref = torch.stack([sep_pens[s * len(pens) + k].detach() for s in range(len(SEEDS))])
        assert _rel(pen, ref) < 1e-5


def test_htr_changes_the_update():
    """Guard for the test above: with γ = 0.05 the penalty moves the parameters measurably."""
    _, p_htr, _, _, _ = _run_both(CFG, steps=1, penalty=True, gamma=0.05)
    _, p_sgd, _, _, _ = _run_both(CFG, steps=1)
    assert _rel(p_htr["fc1.weight"].detach(), p_sgd["fc1.weight"].detach()) > 1e-5


def test_library_trace_penalty_on_stacked_parameters_is_the_sum_of_member_penalties():
    """htr_utils.hutchinson.trace_penalty works on the stacked tensors (double backward through vmap):
    its value is Σ_s z_sᵀ H_s z_s, checked per member in float64 on separate models."""
    members = build_members(CFG, SEEDS)
    params = stack_parameters(members)
    x, y = _batches(1)[0]
    gens = [torch.Generator().manual_seed(s) for s in SEEDS]
    names = ["conv2.weight", "fc1.weight", "fc1.bias"]
    probes = member_probes([params[n] for n in names], gens, 2)
    total = member_losses(stacked_forward(members[0], params, x), y).sum()
    per_member = stacked_trace_penalty(total, [params[n] for n in names], probes)
    library = trace_penalty(total, [params[n] for n in names], probes=probes)
    assert _rel(library, per_member.sum()) < 1e-5
    for s, model in enumerate(members):
        m64 = copy.deepcopy(model).double()
        named = dict(m64.named_parameters())
        loss = nn.functional.cross_entropy(m64(x[s].double()), y[s])
        ref = trace_penalty(loss, [named[n] for n in names], probes=[[z[s].double() for z in pr] for pr in probes])
        ref, got = float(ref.detach()), float(per_member[s].detach())
        assert abs(got - ref) < 1e-4 * abs(ref) + 1e-6


def test_member_data_order_is_the_trainers(monkeypatch):
    """The batches Trainer.run_epoch hands to sgd_step, recorded, equal the members' batches."""
    cfg = CFG.replace(lr=1e-9, momentum=0.0)
    fed: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_step = training.sgd_step
    monkeypatch.setattr(training, "sgd_step", lambda m, o, f, x, y, *a: fed.append((x, y)) or real_step(m, o, f, x, y, *a))
    for seed in SEEDS[:2]:
        training.Trainer(cfg.replace(seed=seed)).run_epoch(2, progress=False)
    data = training.Trainer(cfg).data
    x, y = dataset_tensors(data.train)
    idx = list(member_batch_indices(len(y), cfg.batch_size, SEEDS[:2], epoch=2))
    assert len(fed) == 2 * len(idx)
    for s in range(2):
        for (xb, yb), i in zip(fed[s * len(idx):(s + 1) * len(idx)], idx):
            assert torch.equal(x[i[s]], xb) and torch.equal(y[i[s]], yb)
    assert not torch.equal(idx[0][0], idx[0][1])


@pytest.mark.slow
def test_epochs_with_htr_equal_trainer_runs():
    """Two epochs (HTR in the second, LR milestone, weight decay) match Trainer.run_epoch seed by seed."""
    cfg = CFG.replace(epochs=2, milestones=(1,), weight_decay=1e-3, htr_gamma=1e-2, htr_start_epoch=1, htr_freq=2,
                      htr_probes=2, htr_params="middle", val_fraction=0.1)
    batch = SeedBatch(cfg, SEEDS)
    rows = [batch.run_epoch(e) for e in (1, 2)]
    for s, seed in enumerate(SEEDS):
        trainer = Trainer(cfg.replace(seed=seed))
        for e in (1, 2):
            ref, got = trainer.run_epoch(e, progress=False), rows[e - 1][s]
            assert got["penalty_steps"] == ref["penalty_steps"] and got["lr"] == ref["lr"]
            for k in ("train_loss", "train_acc", "test_loss", "test_acc", "val_loss", "val_acc", "penalty_mean"):
                if k == "penalty_mean" and e == 1:
                    continue
                assert got[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6), (seed, e, k)
        for n, p in trainer.model.named_parameters():
            assert _rel(batch.params[n][s].detach(), p.detach()) < 1e-5


def test_stacked_evaluate_equals_evaluate():
    members = build_members(CFG, SEEDS)
    params = stack_parameters(members)
    data = Trainer(CFG).data
    x, y = dataset_tensors(data.test)
    losses, accs = stacked_evaluate(members[0], params, x, y, batch_size=25)
    for s, m in enumerate(members):
        ref_loss, ref_acc = evaluate(m, data.test, batch_size=25)
        assert float(losses[s]) == pytest.approx(ref_loss, rel=1e-5)
        assert float(accs[s]) == ref_acc


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="buffers"):
        stack_parameters([build_model("vgg11_bn", 1, 10, width=0.125)])
    with pytest.raises(ValueError, match="distinct"):
        build_members(CFG, [1, 1])
    members = build_members(CFG, SEEDS)
    params = stack_parameters(members)
    opt = torch.optim.SGD(params.values(), lr=0.1)
    x, y = _batches(1)[0]
    x[1, 0, 0, 0, 0] = float("nan")
    before = params["fc3.bias"].detach().clone()
    with pytest.raises(MemberDiverged, match=r"member\(s\) \[1\]"):
        stacked_sgd_step(members[0], params, opt, x, y)
    assert torch.equal(params["fc3.bias"].detach(), before)
    with pytest.raises(ValueError, match="probes"):
        stacked_sgd_step(members[0], params, opt, x, y, ["fc3.bias"], 0.1)
