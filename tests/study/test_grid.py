"""The run grid: its plan is what the notebooks ask for, and Dask workers (two, or one killed mid-run)
give the same runs as one process."""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from htr_utils.study import grid, profiles, regularisation, runs
from htr_utils.study.hashing import config_hash
from htr_utils.study.profiles import Profile, RegStudy, SpectraReading
from htr_utils.study.regularisation_arms import dose_candidate_configs
from htr_utils.study.training import TIMING_COLUMNS, TrainConfig

TINY = TrainConfig(dataset="digits", model="mlp", width=0.25, train_size=60, test_size=30, batch_size=30, epochs=2,
                   curvature_every=2, curvature_init=False, lanczos_iters=4, examples_per_class=1, trace_probes=2,
                   layerwise=False)
TINY_REG = TINY.replace(val_fraction=0.2, htr_freq=1, htr_start_epoch=1, htr_probes=2)


def tiny_profile(root: Path, epochs: int = 2) -> Profile:
    reg = TINY_REG.replace(epochs=epochs)
    return Profile(
        name="tiny", description="test grid", runs_root=str(root),
        spectra_runs={"spectra": TINY.replace(keep_checkpoints=True, epochs=epochs)},
        spectra_reading={"spectra": SpectraReading(class_epochs=(1,), distance_epochs=(epochs,), examples_per_class=1,
                                                      large_examples_per_class=2, slq_probes=2, null_subsets=1,
                                                      lanczos_iters=4)},
        sweep_runs={"base": reg, "lr_high": reg.replace(lr=reg.lr * 5)}, sweep_seeds=(0,),
        regularisation={"reg": RegStudy(base=reg, seeds=(1, 2), l2=1e-4, gamma=1e-3, middle_gamma=1e-4,
                                               gamma_grid=(1e-3, 1e-2), middle_gamma_grid=(1e-3,),
                                               middle_rules=("middle",), cost_rules=("middle",))})


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory) -> tuple[Profile, list[dict]]:
    """The tiny grid trained once by the local executor (one thread): the reference the Dask tests compare with."""
    P = tiny_profile(tmp_path_factory.mktemp("seq"))
    return P, grid.train(P, threads=1, progress=False)


def _numbers(root: Path, h: str) -> tuple:
    run = runs.Run(root / h)
    return run.metrics.drop(columns=list(TIMING_COLUMNS)).to_json(), [
        v.tolist() for v in run.load_model().state_dict().values()]


def test_plan_selects_by_setting_and_names_unknown_ones(tmp_path):
    P = tiny_profile(tmp_path)
    everything = grid.plan(P)
    assert len({t.hash for t in everything}) == len(everything)
    assert [t.setting for t in grid.plan(P, ["spectra"])] == ["spectra"]
    assert {t.setting for t in grid.plan(P, ["spectra", "reg"])} == {"spectra", "reg"}
    assert {t.setting for t in grid.plan(P, ["sweep"])} == {"sweep"}
    with pytest.raises(ValueError, match=r"--select nope: not a setting of profile 'tiny'; choose from spectra, reg, sweep"):
        grid.plan(P, ["nope"])


def test_runs_whose_data_is_not_on_disk_are_skipped_with_how_to_get_it(tmp_path):
    P = Profile(name="t", description="", runs_root=str(tmp_path), spectra_runs={"m": TINY.replace(dataset="svhn")},
                sweep_runs={}, regularisation={})
    (task,) = grid.plan(P, data_root=tmp_path / "nodata")
    assert task.skipped and "train_32x32.mat" in task.skipped and "Ways to get it" in task.skipped
    (outcome,) = grid.train(P, progress=False)  # the repository's data/ has no SVHN either
    assert outcome["hash"] == task.hash and outcome["status"] == "skipped" and "train_32x32.mat" in outcome["why"]
    assert not list(tmp_path.iterdir())[1:]  # nothing trained: only nodata/ could be there


@pytest.mark.slow
def test_the_plan_is_what_the_notebooks_ask_for(trained_tiny, monkeypatch):
    """Train the plan, then make the notebooks' requests (the calls notebooks 01-08 make) against the
    cache: they must find every run there, and use every planned run."""
    from htr_utils.study.outputs import data_root
    from htr_utils.study.spectra_analysis import spectra_runs
    from htr_utils.study.spectra_readings import spectra_readings
    P, outcomes = trained_tiny
    monkeypatch.setitem(profiles.PROFILES, "tiny", P)
    planned = {o["hash"] for o in outcomes}
    assert all(o["status"] == "trained" for o in outcomes) and len(planned) == len(outcomes)

    asked: set[str] = set()
    real = runs.train_run

    def must_be_cached(cfg, root=runs.DEFAULT_ROOT, *args, **kwargs):
        asked.add(runs.config_hash(cfg))
        assert (runs.run_path(cfg, root) / "done.json").is_file(), f"a notebook needs a run the plan lacks: {cfg}"
        return real(cfg, root, *args, **kwargs)

    monkeypatch.setattr(runs, "train_run", must_be_cached)
    monkeypatch.setattr(regularisation, "train_run", must_be_cached)
    spectra_readings("tiny", progress=False)                                      # 01-04
    spectra_runs("tiny", progress=False)                                          # 05
    for cfg in P.sweep_runs.values():                                             # 06
        for seed in P.sweep_seeds:
            must_be_cached(cfg.replace(seed=seed), P.runs_dir(), data_root=data_root(), progress=False)
    root, droot = P.runs_dir(), data_root()
    for study in P.regularisation.values():                                       # 07
        _, g = regularisation.select_gamma(study, "all", root, droot)
        regularisation.train_arms(study, {"all": g}, root, droot, arms=("sgd", "sgd_l2", "htr", "l2_htr"))
    for study in (s for s in P.regularisation.values() if s.decides):             # 08
        _, gammas = regularisation.choose_gammas(study, root, droot)
        regularisation.train_arms(study, gammas, root, droot, arms=("sgd", "htr", "htr_middle"))
    assert asked == planned
    readings = list((P.runs_dir() / grid.plan(P, ["spectra"])[0].hash / "readings").glob("*.json"))
    assert len(readings) == 3  # class @1 per class, class @2 per class (last epoch), distance at the last epoch


def test_train_warns_once_about_a_worker_with_dask_malloc_trim(tmp_path, capsys):
    P = tiny_profile(tmp_path / "runs")

    def fake(ts, done):
        for t in list(ts) * 2:  # two outcomes, one warning
            done({"hash": t.hash, "setting": t.setting, "status": "trained", "seconds": 1.0, "pid": 7, "threads": 1,
                  "malloc_trim": "65536"})
    assert len(grid.train(P, ["spectra"], execute=fake, progress=False)) == 2
    assert capsys.readouterr().out.count("MALLOC_TRIM_THRESHOLD_=65536") == 1


@pytest.fixture(scope="module")
def client():
    """Two one-thread Dask worker processes for this module's tests (a killed worker is restarted by its nanny)."""
    pytest.importorskip("distributed", reason="the Dask executor needs the 'cluster' extra")
    # the grid's own LocalCluster, which closes its worker processes on exit
    with grid._dask_client(2, None, 1) as c:
        yield c


@pytest.mark.slow
def test_two_dask_workers_train_the_same_runs_as_one_process(tmp_path, trained_tiny, client):
    from htr_utils.study.outputs import data_root
    sequential, parallel = trained_tiny[0], tiny_profile(tmp_path / "dask")
    execute = grid.dask_executor(client, parallel.runs_dir(), data_root(), threads=1, device="cpu")
    outcomes = grid.train(parallel, execute=execute, threads=1, progress=False)
    assert len({o["pid"] for o in outcomes}) == 2 and {o["threads"] for o in outcomes} == {1}
    # without Dask's MALLOC_TRIM_THRESHOLD_, which halves a CPU worker's speed (benchmarks/RESULTS.md)
    assert {o["malloc_trim"] for o in outcomes} == {None} and grid.MALLOC_TRIM not in os.environ
    hashes = sorted(o["hash"] for o in outcomes)
    assert hashes == sorted(p.name for p in sequential.runs_dir().iterdir())
    for h in hashes:
        assert runs.Run(tmp_path / "dask" / h).verify()
        assert _numbers(tmp_path / "dask", h) == _numbers(sequential.runs_dir(), h), h  # bit-identical


@pytest.mark.slow
def test_a_worker_killed_mid_run_leaves_no_corrupt_file_and_the_grid_finishes(tmp_path, client):
    P = tiny_profile(tmp_path / "dask", epochs=40)
    (task,) = grid.plan(P, ["spectra"])
    run_dir = tmp_path / "dask" / task.hash
    killed: list[int] = []

    def kill_when_epoch_3_is_saved() -> None:  # the holder of the run's lock is the worker training it
        deadline = time.time() + 90
        while time.time() < deadline and not killed:
            if (run_dir / "models" / "epoch_003.pt").is_file():
                pid = json.loads((run_dir / runs.LOCK_FILE).read_text())["pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    from htr_utils.study.outputs import data_root
    watcher = threading.Thread(target=kill_when_epoch_3_is_saved, daemon=True)
    execute = grid.dask_executor(client, P.runs_dir(), data_root(), threads=1, device="cpu")
    watcher.start()
    outcomes = grid.train(P, ["spectra"], execute=execute, threads=1, progress=False)
    watcher.join()
    assert killed, "the run finished before the worker could be killed"
    (outcome,) = outcomes
    assert outcome["status"] == "trained" and outcome["pid"] != killed[0]
    run = runs.Run(run_dir)
    assert run.verify() and not list(run_dir.rglob("*.tmp"))
    reference = grid.run_task(task, str(tmp_path / "seq"), str(data_root()), threads=1, device="cpu")
    assert reference["status"] == "trained"
    assert _numbers(run_dir.parent, task.hash) == _numbers(tmp_path / "seq", task.hash)


def test_stages_count_the_acting_dose_arm_at_its_worst_case():
    named = dict(grid.stages("cpu"))
    study = profiles.get_profile("cpu").regularisation["lenet_fashionmnist"]
    dose = named["acting-dose arm (worst case: no candidate acts before the last)"]
    first = {config_hash(c) for c in named["lenet_fashionmnist: runs before γ is chosen"]}
    candidates = [c for _, c in dose_candidate_configs(study)]
    new = [c for c in candidates if config_hash(c) not in first]
    assert 0 < len(new) < len(candidates)  # the γ grid already holds some candidates (shared cache)
    assert len(dose) == len(new) + len(study.seeds) and dose[-1] == candidates[-1].replace(seed=study.seeds[-1])
    assert all(c.htr_gamma > 0 for c in dose)


def test_htr_arms_and_the_acting_dose_arm_start_as_soon_as_their_gamma_grid_is_done(tmp_path, monkeypatch):
    """No barrier after the first wave: the outcome that completes a study's γ grid releases its HTR arms at the
    chosen γ and the acting-dose arm's next step while other first-wave runs still wait; the grid then holds every
    run notebook 07's acting-dose arm asks for."""
    from htr_utils.study import regularisation_arms
    from htr_utils.study.outputs import data_root
    base = tiny_profile(tmp_path / "runs")
    study = dataclasses.replace(base.regularisation["reg"], dose_arm=True)
    P = dataclasses.replace(base, regularisation={"reg": study})
    root, droot = P.runs_dir(), data_root()
    first = {t.hash for t in grid.plan(P)}
    log: list[tuple[str, list[str]]] = []
    real = grid.local_executor(root, droot, 1, "cpu")

    def spy_executor(tasks, done):
        def spy(outcome):
            new = list(done(outcome) or ())
            log.append((outcome["hash"], [t.hash for t in new]))
            return new
        real(tasks, spy)

    grid.train(P, execute=spy_executor, threads=1, progress=False)
    needs = grid._grid_hashes(study)
    completes = max(i for i, (h, _) in enumerate(log) if h in needs)
    assert any(h in first and h not in needs for h, _ in log[completes + 1:]), "released only after the first wave"
    _, gammas = regularisation.choose_gammas(study, root, droot)
    arms = {config_hash(c.replace(seed=s)) for c in study.arms(gammas).values() if c.htr_gamma > 0
            for s in study.seeds}
    assert arms - first <= set(log[completes][1])
    assert regularisation_arms.dose_next(study, root) == []  # the arm is complete

    def must_be_cached(cfg, root=runs.DEFAULT_ROOT, *args, **kwargs):
        assert (runs.run_path(cfg, root) / "done.json").is_file(), f"the grid lacks an acting-dose run: {cfg}"
        return runs.train_run(cfg, root, *args, **kwargs)

    results = regularisation.train_arms(study, gammas, root, droot, arms=("sgd",))
    monkeypatch.setattr(regularisation_arms, "train_run", must_be_cached)
    arm = regularisation_arms.acting_dose_arm(study, results, root, droot)
    assert arm is not None and len(arm["selection"]) == len(regularisation_arms.ACTING_DOSE_CANDIDATES)


@pytest.mark.slow
def test_the_grids_dask_workers_hold_only_the_run_they_train(client):
    """Worker saturation 1.0: waiting runs stay in the scheduler's priority queue, not behind a long run on a worker."""
    assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.WORKER_SATURATION) == 1.0
