"""Profiles: selection by name / HTR_PROFILE, valid configs, small smoke sizes."""
from __future__ import annotations

import pytest

from htr_utils.study.data import DATASETS
from htr_utils.layers import layer_groups
from htr_utils.study.models import MODELS, build_model
from htr_utils.study.profiles import PROFILES, Profile, SpectraReading, get_profile
from htr_utils.study.training import TrainConfig


def _all_configs(p: Profile) -> list[TrainConfig]:
    cfgs = list(p.spectra_runs.values()) + list(p.sweep_runs.values())
    for study in p.regularisation.values():
        cfgs += study.all_configs()
    return cfgs


def test_get_profile_by_name_env_and_default(monkeypatch):
    monkeypatch.delenv("HTR_PROFILE", raising=False)
    assert get_profile().name == "cpu"
    assert get_profile("paper").name == "paper"
    monkeypatch.setenv("HTR_PROFILE", "smoke")
    assert get_profile().name == "smoke" and get_profile("cpu").name == "cpu"
    monkeypatch.setenv("HTR_PROFILE", "huge")
    with pytest.raises(ValueError, match="smoke, cpu, paper"):
        get_profile()
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        get_profile("gpu")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_configs_are_valid(name):
    p = get_profile(name)
    assert p.spectra_runs and p.regularisation
    # budget (issue 33): the cpu profile's C6a sweep moved to the paper profile (shown there, never deciding)
    assert bool(p.sweep_runs) == (name != "cpu")
    for cfg in _all_configs(p):
        assert isinstance(cfg, TrainConfig) and cfg.dataset in DATASETS and cfg.model in MODELS
        assert TrainConfig.from_dict(cfg.to_dict()) == cfg
        assert all(0 < m <= cfg.epochs for m in cfg.milestones)
    for label, cfg in p.spectra_runs.items():
        assert 1 <= cfg.curvature_every and cfg.layerwise and "hessian" == cfg.curvature_kinds[0]
        # C5 tests trends on at least 5 trained epochs (4 for the GELU extension); C1-C4 read the kept weights
        assert len([e for e in cfg.curvature_epochs() if e >= 1]) >= (4 if "gelu" in label else 5)
        assert cfg.keep_checkpoints and cfg.epochs in cfg.curvature_epochs()
        assert set(cfg.curvature_kinds) == {"hessian", "ggn", "residual"}
        assert set(cfg.curvature_kinds_epochs or cfg.curvature_epochs()) <= set(cfg.curvature_epochs())
    assert set(p.spectra_reading) == set(p.spectra_runs)
    for label, reading in p.spectra_reading.items():
        cfg = p.spectra_runs[label]
        assert all(1 <= e <= cfg.epochs for e in (*reading.class_epochs, *reading.distance_epochs))
        # C4 (issue 30, amendment 5): no random subsets, at least 2 epochs per network (the GELU extension: none in
        # the cpu profile, budget), the step check on a read epoch
        assert reading.null_subsets == 0
        assert len(reading.distance_epochs) >= 2 or (name != "paper" and "gelu" in label and not reading.distance_epochs)
        assert reading.step_check_epoch is None or reading.step_check_epoch in reading.distance_epochs
    assert any(r.step_check_epoch is not None for r in p.spectra_reading.values())
    for cfg in p.sweep_runs.values():
        assert cfg.epochs in cfg.curvature_epochs()
    assert len(p.sweep_runs) >= 6 or name == "cpu"
    assert any(s.decides for s in p.regularisation.values())
    for study in p.regularisation.values():
        arms = study.arms()
        assert {"sgd", "htr"} <= set(arms) and study.selection_seed not in study.seeds
        assert arms["sgd"].htr_gamma == 0 and arms["htr"].htr_gamma == study.gamma
        assert study.base.epochs in study.base.curvature_epochs()
        if study.decides:  # PROTOCOL.md: every arm, paired seeds (10 in the paper profile, 6 in cpu: budget)
            assert {"sgd", "sgd_l2", "htr", "l2_htr", *(f"htr_{r}" for r in study.middle_rules)} == set(arms)
            assert "middle" in study.middle_rules and set(study.middle_rules) <= set(study.cost_rules)
            assert arms["sgd_l2"].weight_decay == study.l2 and arms["htr_middle"].htr_params == "middle"
            assert len(study.seeds) >= {"smoke": 3, "cpu": 6}.get(name, 10)
    assert len(p.sweep_seeds) >= (2 if name == "smoke" else 3)


def test_cpu_budget_moves_shown_rows_to_the_paper_profile():
    cpu, paper = get_profile("cpu"), get_profile("paper")
    assert set(cpu.regularisation) == {"lenet_fashionmnist", "lenet_fashionmnist_authors_schedule"}
    assert cpu.regularisation["lenet_fashionmnist"].dose_arm and cpu.regularisation["lenet_fashionmnist"].decides
    for P in (cpu, paper):  # the authors' schedule: shown in both (regularisation amendment 6), scaled down in cpu
        authors = P.regularisation["lenet_fashionmnist_authors_schedule"]
        assert authors.base.epochs == 40 and not authors.decides and set(authors.arms()) == {"sgd", "htr"}
        assert len(authors.seeds) >= 3 and authors.base.htr_start_epoch == 20 and authors.base.milestones == (10, 20)
    assert cpu.regularisation["lenet_fashionmnist_authors_schedule"].base.train_size == 30000
    assert "lenet_fashionmnist_paper_setting" not in cpu.regularisation and not cpu.sweep_runs
    assert cpu.spectra_runs["lenet_fashionmnist"].epochs == 50  # the paper's LeNet setting is never cut (issue 33)
    assert cpu.spectra_runs["lenet_fashionmnist"].lanczos_iters == 128


def test_profiles_have_deep_models_for_layerwise_claims():
    for name in PROFILES:
        depths = [len(layer_groups(build_model(c.model, 1, 10, width=c.width)))
                  for c in get_profile(name).spectra_runs.values()]
        assert max(depths) >= 8, f"{name}: C4 needs a model with >= 8 weight layers"


def test_smoke_sizes_are_small():
    p = get_profile("smoke")
    for cfg in _all_configs(p):  # the authors'-schedule row needs its 40 epochs (tiny ones)
        assert cfg.dataset == "digits" and cfg.epochs <= (40 if cfg.epochs == 40 else 5)
        assert (cfg.train_size or 10**9) <= 500
        assert cfg.lanczos_iters <= 16 and cfg.examples_per_class <= 5 and cfg.width <= 0.5
    assert not p.runs_root.startswith("data/")  # smoke runs stay out of the cpu cache
    assert p.runs_dir().is_absolute() and p.runs_dir().name == "runs"


def test_runs_dir_env_moves_the_cache(tmp_path, monkeypatch):
    from htr_utils.study.outputs import repo_root
    from htr_utils.study.profiles import RUNS_DIR_ENV
    p = get_profile("cpu")
    monkeypatch.delenv(RUNS_DIR_ENV, raising=False)
    assert p.runs_dir() == repo_root() / "data/runs"
    monkeypatch.setenv(RUNS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert p.runs_dir() == tmp_path / "elsewhere"
    monkeypatch.setenv(RUNS_DIR_ENV, "build/other_runs")  # relative: from the repository root
    assert p.runs_dir() == repo_root() / "build/other_runs"


def test_paper_profile_settings():
    p = get_profile("paper")
    fm = p.regularisation["lenet_fashionmnist"]
    assert (fm.base.lr, fm.base.batch_size, fm.base.milestones, fm.base.lr_gamma) == (1e-2, 256, (10, 20), 0.25)
    assert (fm.gamma, fm.middle_gamma, fm.base.htr_start_epoch, fm.base.htr_probes, fm.base.htr_freq) == \
        (1e-5, 1e-6, 20, 10, 50)
    mn = p.regularisation["lenet_mnist"]
    assert (mn.gamma, mn.base.htr_start_epoch, mn.base.dataset) == (1e-3, 10, "mnist")
    assert p.spectra_runs["vgg11_bn_fashionmnist"].lr == 1e-3 and p.spectra_runs["lenet_fashionmnist"].epochs == 50
    r18 = p.spectra_runs["resnet18_fashionmnist"]
    assert (r18.lr, r18.weight_decay, r18.batch_size) == (5e-3, 5e-5, 128)
    # every published spectra setting: LeNet / VGG11_bn / ResNet18 on MNIST, FashionMNIST, SVHN, CIFAR-10
    assert {f"{m}_{d}" for m in ("lenet", "vgg11_bn", "resnet18") for d in ("mnist", "fashionmnist", "svhn", "cifar10")
            } <= set(p.spectra_runs)
    assert set(p.spectra_reading) == set(p.spectra_runs)
    # and every published HTR comparison, the ones beyond PAPER.md shown beside the verdicts
    assert {"vgg11_bn_cifar100", "resnet18_cifar10", "vgg11_cifar10", "lenet_svhn", "vgg13_svhn"} <= set(p.regularisation)
    c100 = p.regularisation["vgg11_bn_cifar100"]
    assert (c100.gamma, c100.base.htr_start_epoch, c100.base.htr_probes, c100.base.epochs, c100.decides) == \
        (1e-6, 30, 5, 100, False)
    assert c100.base.curvature_every == c100.base.epochs and set(c100.arms()) == {"sgd", "sgd_l2", "htr"}
    assert p.regularisation["vgg11_cifar10"].gamma == 1e-8 and p.regularisation["resnet18_cifar10"].gamma == 1e-5


def test_c4_readings_follow_amendment_5():
    """cpu profile: LeNet 10, 30, 50; VGG11_bn 15, 30 (step check at 30); LeNet-GELU (extension) none (budget); 5
    probes, 32 steps for the distances while the class readings keep 128; the reading settings
    leave the runs' hashes alone."""
    p = get_profile("cpu")
    r = p.spectra_reading
    assert r["lenet_fashionmnist"].distance_epochs == (10, 30, 50)
    assert r["vgg11_bn_fashionmnist"].distance_epochs == (15, 30) and r["vgg11_bn_fashionmnist"].step_check_epoch == 30
    assert r["lenet_gelu_fashionmnist"].distance_epochs == ()
    for label, reading in r.items():
        assert (reading.slq_probes, reading.distance_iters) == (5, 32)
        assert reading.lanczos_iters == 128  # amendment S4: G_within's top 3C Ritz values must converge
    assert SpectraReading((1,), (1,)).distance_iters == 128   # no own field: the class readings' steps
    assert not any("reading" in f or "distance" in f for f in TrainConfig.__dataclass_fields__)
