"""The study's run grid: plan every run a profile's notebooks need, then train the missing ones here or
on a Dask cluster, with one progress bar over the grid.

    python -m htr_utils.study.grid plan  --profile cpu [--select NAME ...]
    python -m htr_utils.study.grid train --profile cpu [--select NAME ...] [--workers N | --scheduler ADDRESS]
                                         [--threads T] [--device D]

The plan is the notebooks' own requests, deduplicated by run hash: the spectra runs of 01-05 (each
with its readings, :mod:`.spectra_readings`), the sweep of 06, and the regularisation studies of
07-08, whose HTR arms wait for γ to be chosen on the selection grid: they start as soon as their
study's grid is done, and notebook 07's acting-dose arm candidate by candidate, while the workers
train the rest (the longest runs first, :func:`rough_cost`). ``--select`` keeps the named settings:
a spectra run's or a regularisation study's label (both, where they share one, e.g.
``lenet_fashionmnist``) or ``sweep``. A run whose data set is not
on disk is listed as skipped, with how to get the data.

Executors: ``local`` (default; in this process, one run after another, epochs shown beneath the
grid's bar) and Dask (``--workers N``: a ``LocalCluster`` of N processes, the CPU threads split
among them; ``--scheduler ADDRESS``: any running Dask cluster, e.g. a SLURM one, whose workers must
see the same run cache). A run is trained by one process at a time (the run folder's OS lock,
:mod:`.runs`), resumes from its last finished epoch when its worker dies (Dask retries the task),
and its numbers depend only on its config and the thread count, so a grid gives the same runs
on any executor at the same threads per run.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from .data import missing_data
from .hashing import config_hash
from .files import write_json
from .paths import data_root as default_data_root
from .paths import GRID_TIMING_FILE, figures_dir
from .profiles import Profile, RegStudy, SpectraReading, get_profile
from .regularisation import choose_gammas, describe_config, select_gamma, study_runs
from .regularisation_arms import dose_candidate_configs, dose_next, has_dose_arm
from .runs import finished, run_path, train_run
from .spectra_readings import read_run
from .time_estimate import estimate, table
from .training import TrainConfig, TrainingDiverged

SWEEP = "sweep"


@dataclass(frozen=True)
class GridTask:
    """One run of the grid: the setting that asks for it, its config, and the readings taken after it."""
    setting: str
    config: TrainConfig
    readings: SpectraReading | None = None
    skipped: str | None = None  # why it cannot run here (data not on disk, with the ways to get it)
    priority: float = 0.0       # executors start the highest first (:func:`rough_cost`; runs others wait on, more)

    @property
    def hash(self) -> str:
        return config_hash(self.config)


# ---------------------------------------------------------------------------------------------- plan
def settings(P: Profile) -> list[str]:
    """The names ``--select`` accepts for profile ``P``."""
    return list(dict.fromkeys([*P.spectra_runs, *P.regularisation, SWEEP]))


def _check_select(P: Profile, select: Sequence[str] | None) -> set[str]:
    known = settings(P)
    if select is None:
        return set(known)
    unknown = [s for s in select if s not in known]
    if unknown:
        raise ValueError(f"--select {' '.join(unknown)}: not a setting of profile {P.name!r}; "
                         f"choose from {', '.join(known)}")
    return set(select)


# Rough cost of one image-epoch relative to LeNet's, only to order the grid (longest first keeps two workers busy
# to the end: VGG11_bn w0.125's cpu run took 2300 s against LeNet's 1448 s for a third of the image-epochs).
MODEL_COST = {"vgg11_bn": 8.0, "vgg11": 8.0, "vgg13": 10.0, "resnet18": 10.0}
UNLOCKS = 3.0  # a run that other runs wait for (a γ grid, the acting-dose arm's next step) counts this many times


def rough_cost(cfg: TrainConfig, readings: SpectraReading | None = None) -> float:
    """Image-epochs × the model's :data:`MODEL_COST`, doubled for a run with spectra readings: an order, not a time."""
    images = cfg.train_size or 60000
    return images * cfg.epochs * MODEL_COST.get(cfg.model, 1.0) * (2.0 if readings is not None else 1.0)


def _task(setting: str, cfg: TrainConfig, data_root: Path, readings: SpectraReading | None = None,
          unlocks: bool = False) -> GridTask:
    return GridTask(setting, cfg, readings, missing_data(cfg.dataset, data_root),
                    rough_cost(cfg, readings) * (UNLOCKS if unlocks else 1.0))


def _dedup(tasks: Sequence[GridTask], seen: set[str] | None = None) -> list[GridTask]:
    seen = set() if seen is None else seen
    out = []
    for t in tasks:
        if t.hash not in seen:
            seen.add(t.hash)
            out.append(t)
    return out


def plan(profile: str | Profile | None = None, select: Sequence[str] | None = None,
         data_root: str | Path | None = None) -> list[GridTask]:
    """The runs that wait on nothing (spectra runs, γ selection grids, plain arms, sweep, side studies),
    each once (a run several settings share keeps the first setting's name)."""
    P = get_profile(profile) if not isinstance(profile, Profile) else profile
    keep = _check_select(P, select)
    droot = Path(data_root) if data_root is not None else default_data_root()
    tasks = [_task(label, cfg, droot, P.spectra_reading.get(label))
             for label, cfg in P.spectra_runs.items() if label in keep]
    for name, study in P.regularisation.items():
        if name in keep:
            grids = _grid_hashes(study)
            tasks += [_task(name, cfg, droot, unlocks=config_hash(cfg) in grids) for cfg in study_runs(study)]
    if SWEEP in keep:
        tasks += [_task(SWEEP, cfg.replace(seed=s), droot) for cfg in P.sweep_runs.values() for s in P.sweep_seeds]
    return _dedup(tasks)


def _grid_hashes(study: RegStudy) -> set[str]:
    """The runs at the selection seed that choosing ``study``'s γ (and its acting-dose arm's first step) waits for."""
    return {config_hash(c) for rule in ("all", *study.middle_rules) if study.grid(rule)
            for c in study.grid_configs(rule).values()}


def _waits_for_gamma(study: RegStudy) -> bool:
    return study.decides or bool(study.grid("all"))


def gamma_arms(profile: str | Profile | None = None, select: Sequence[str] | None = None,
               data_root: str | Path | None = None, done: Sequence[GridTask] = ()) -> list[GridTask]:
    """The HTR arms of the deciding studies at the γ their selection grid chose (read from the cache,
    so after :func:`plan`'s runs), minus those in ``done``."""
    P = get_profile(profile) if not isinstance(profile, Profile) else profile
    keep = _check_select(P, select)
    droot = Path(data_root) if data_root is not None else default_data_root()
    tasks = []
    for name, study in P.regularisation.items():
        if name not in keep or missing_data(study.base.dataset, droot) or not _waits_for_gamma(study):
            continue  # a side study without a γ grid is trained at the published γ by plan()
        if study.decides:  # notebook 08: every rule's γ
            _, gammas = choose_gammas(study, P.runs_dir(), droot)
        else:  # notebook 07 only: full HTR's γ
            gammas = {"all": select_gamma(study, "all", P.runs_dir(), droot)[1]}
        tasks += [_task(name, c.replace(seed=s), droot) for c in study.arms(gammas).values() for s in study.seeds]
    return _dedup(tasks, {t.hash for t in done})


def expected_gamma_arms(profile: str | Profile | None = None, select: Sequence[str] | None = None) -> list[TrainConfig]:
    """The HTR arm runs :func:`gamma_arms` will add once γ is chosen, at the published γ (same number of runs, same
    cost per run: known before the selection grid has run, for the progress bar and the time estimate)."""
    P = get_profile(profile) if not isinstance(profile, Profile) else profile
    keep = _check_select(P, select)
    cfgs = []
    for name, study in P.regularisation.items():
        if name in keep and _waits_for_gamma(study):
            rules = ("all", *study.middle_rules) if study.decides else ("all",)
            for arm, c in study.arms().items():
                penalised = "all" if arm in ("htr", "l2_htr") else arm.removeprefix("htr_")
                if c.htr_gamma > 0 and penalised in rules:
                    cfgs += [c.replace(seed=s) for s in study.seeds]
    return cfgs


def stages(profile: str | Profile | None = None, select: Sequence[str] | None = None,
           data_root: str | Path | None = None) -> list[tuple[str, list[TrainConfig]]]:
    """The grid's runs by stage, as ``make reproduce`` trains them: spectra runs, each regularisation study's first
    wave, the sweep, then the HTR arms at the chosen γ."""
    P = get_profile(profile) if not isinstance(profile, Profile) else profile
    out: dict[str, list[TrainConfig]] = {}
    for t in plan(P, select, data_root):
        if t.skipped:
            continue
        name = ("spectra runs (C1-C5)" if t.readings is not None else "sweep (C6a)" if t.setting == SWEEP
                else f"{t.setting}: runs before γ is chosen")
        out.setdefault(name, []).append(t.config)
    arms = expected_gamma_arms(P, select)
    if arms:
        out["HTR arms at the chosen γ"] = arms
    dose = worst_case_dose_arm(P, select, {config_hash(c) for cfgs in out.values() for c in cfgs})
    if dose:
        out["acting-dose arm (worst case: no candidate acts before the last)"] = dose
    return list(out.items())


def worst_case_dose_arm(P: Profile, select: Sequence[str] | None, planned: set[str]) -> list[TrainConfig]:
    """The runs the acting-dose arm (notebook 07's, trained by the grid) needs at most: every candidate not already in
    the grid, then the last candidate at every evaluation seed (it stops at the first that acts, so usually fewer)."""
    keep = _check_select(P, select)
    cfgs = []
    for name, study in P.regularisation.items():
        if name in keep and has_dose_arm(study):
            candidates = [c for _, c in dose_candidate_configs(study)]
            cfgs += [c for c in candidates if config_hash(c) not in planned]
            cfgs += [candidates[-1].replace(seed=s) for s in study.seeds]
    return cfgs


def describe(tasks: Sequence[GridTask], root: Path) -> str:
    """One line per run: cached / to train / skipped, then the counts."""
    lines, counts = [], {"cached": 0, "to train": 0, "skipped": 0}
    for t in tasks:
        state = "skipped" if t.skipped else "cached" if (root / t.hash / "done.json").is_file() else "to train"
        counts[state] += 1
        lines.append(f"  {t.hash}  {state:8s}  {t.setting}: {describe_config(t.config)}")
    why = {t.config.dataset: t.skipped for t in tasks if t.skipped}  # one message per missing data set
    for dataset, message in why.items():
        n = sum(1 for t in tasks if t.skipped and t.config.dataset == dataset)
        lines.append(f"skipped {n} run(s) on {dataset}: {message}")
    return "\n".join(lines + [", ".join(f"{n} {k}" for k, n in counts.items())])


# ---------------------------------------------------------------------------------------------- one run
def worker_device(device: str | None) -> str | None:
    """The device of this process's runs: ``device`` if given; with several GPUs, a Dask worker takes
    GPU (its number mod the GPU count); else None (CUDA if available, else CPU)."""
    if device is not None:
        return device
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n > 1:
        try:  # distributed: the optional 'cluster' extra, present where Dask runs this
            from distributed import get_worker
            name = get_worker().name
        except (ImportError, ValueError):
            return None
        return f"cuda:{int(name) % n}" if str(name).isdigit() else None
    return None


MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"


def run_task(task: GridTask, root: str, data_root: str, threads: int | None = None, device: str | None = None,
             progress: bool = False) -> dict[str, Any]:
    """Train (or resume, or find cached) one run and take its readings; what happened, as a dict.

    Runs in the grid's process (local) or on a Dask worker; a diverged run is an outcome, not an error.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    cached = (run_path(task.config, root) / "done.json").is_file()
    start = time.perf_counter()
    try:
        dev = worker_device(device)
        run = train_run(task.config, root=root, progress=progress, data_root=data_root, device=dev)
        if task.readings is not None:
            read_run(run, task.readings, progress=progress, data_root=data_root,
                     device=dev or ("cuda" if torch.cuda.is_available() else "cpu"))
        status = "cached" if cached else "trained"
    except TrainingDiverged as err:
        status = f"diverged ({' '.join(str(err).split())[:120]})"
    finally:
        used = torch.get_num_threads()
        torch.set_num_threads(before)  # the caller's setting, as it was (local executor)
    return {"hash": task.hash, "setting": task.setting, "status": status, "seconds": time.perf_counter() - start,
            "pid": os.getpid(), "threads": used, "malloc_trim": os.environ.get(MALLOC_TRIM)}


# ---------------------------------------------------------------------------------------------- executors
# ``done(outcome)`` may return follow-up tasks (the HTR arms once their γ is chosen, the acting-dose arm's next step),
# which the executor schedules at once: no worker waits for the whole first wave.
Done = Callable[[dict], Sequence[GridTask] | None]
Executor = Callable[[Sequence[GridTask], Done], None]


def local_executor(root: Path, data_root: Path, threads: int | None, device: str | None) -> Executor:
    """One run after another in this process, the highest priority first, each run's epoch bars beneath the grid's."""
    def execute(tasks: Sequence[GridTask], done: Done) -> None:
        queue = list(tasks)
        while queue:
            queue.sort(key=lambda t: -t.priority)  # stable: equal priorities keep the plan's order
            t = queue.pop(0)
            queue += list(done(run_task(t, str(root), str(data_root), threads, device, progress=True)) or ())
    return execute


def dask_executor(client: Any, root: Path, data_root: Path, threads: int | None, device: str | None,
                  retries: int = 3) -> Executor:
    """Every run as one Dask task (key: the run's hash, so a run is never submitted twice; Dask's priority: the
    task's), a task whose worker died is retried (``retries``) and resumes the run from its last finished epoch."""
    from distributed import as_completed  # the optional 'cluster' extra (only the Dask executor needs it)

    def submit(t: GridTask) -> Any:
        return client.submit(run_task, t, str(root), str(data_root), threads, device, key=f"run-{t.hash}",
                             retries=retries, pure=False, priority=t.priority)

    def execute(tasks: Sequence[GridTask], done: Done) -> None:
        # submitted highest priority first: idle workers take the first tasks that arrive, whatever their priority
        futures = as_completed([submit(t) for t in sorted(tasks, key=lambda t: -t.priority)])
        for future in futures:
            for t in done(future.result()) or ():
                futures.add(submit(t))
    return execute


def _dask_client(workers: int | None, scheduler: str | None, threads: int | None) -> Any:
    try:  # the optional 'cluster' extra (only the Dask executor needs it)
        from distributed import Client
    except ImportError:
        raise SystemExit("the Dask executor needs dask and distributed: pip install -e '.[cluster]' "
                         "(make setup installs them)") from None
    if scheduler:
        return Client(scheduler)
    import dask  # the optional 'cluster' extra, as above
    per_worker = threads or max(1, (os.cpu_count() or 1) // workers)
    # Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536; setting it at all turns off glibc's
    # adaptive mmap threshold, so every large tensor is mapped and unmapped afresh, and a CPU run takes
    # 2x as long (151 s against 78 s for one cpu-profile run, benchmarks/RESULTS.md). Ours go without it.
    spawn_env = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items() if k != MALLOC_TRIM}
    # worker-saturation 1.0: a one-thread worker holds only the run it trains. At Dask's default (1.1) it also holds
    # the next one, taken when submitted, so a γ-grid run queued behind VGG11_bn's 38 minutes kept the HTR arms
    # waiting (the timed run of b8ea41b); with 1.0 every waiting run stays in the scheduler's priority queue.
    with dask.config.set({"distributed.nanny.pre-spawn-environ": spawn_env,
                          "distributed.scheduler.worker-saturation": 1.0}):
        # the Client owns the LocalCluster it starts, so leaving the Client stops the workers too
        return Client(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                      env={"OMP_NUM_THREADS": str(per_worker), "MKL_NUM_THREADS": str(per_worker)})


class _FollowUps:
    """What the grid trains once other runs are done, as soon as they are: a study's HTR arms when its γ grid is
    finished, and its acting-dose arm step by step (:func:`~htr_utils.study.regularisation_arms.dose_next`)."""

    def __init__(self, P: Profile, select: Sequence[str] | None, root: Path, data_root: Path,
                 submitted: Sequence[GridTask]):
        self.P, self.root, self.data_root = P, root, data_root
        keep = _check_select(P, select)
        studies = {n: s for n, s in P.regularisation.items() if n in keep and not missing_data(s.base.dataset, data_root)}
        self.waiting = {n: _grid_hashes(s) for n, s in studies.items() if _waits_for_gamma(s)}
        self.expected = {n: sum(1 for c in expected_gamma_arms(P, [n]) if not finished(c, root)) for n in self.waiting}
        self.dose = {n: s for n, s in studies.items() if has_dose_arm(s)}
        self.dose_pending: dict[str, set[str]] = {}
        self.submitted = {t.hash: t for t in submitted}
        self.finished = {h for h in self.submitted if finished(self.submitted[h].config, root)}

    def expected_left(self) -> int:
        """HTR arm runs not submitted yet (their γ is not chosen yet): for the progress bar's total."""
        return sum(self.expected[n] for n in self.waiting)

    def after(self, outcome: dict) -> list[GridTask]:
        """The tasks ``outcome`` releases (none already submitted)."""
        self.finished.add(outcome["hash"])
        new: list[GridTask] = []
        for name, needs in list(self.waiting.items()):
            if needs <= self.finished:
                del self.waiting[name]
                new += [t for t in gamma_arms(self.P, [name], self.data_root, list(self.submitted.values()))
                        if not t.skipped]
                if name in self.dose:
                    self.dose_pending[name] = set()
        for name in list(self.dose_pending):
            pending = self.dose_pending[name]
            pending.discard(outcome["hash"])
            if not pending:
                nxt = [_task(name, c, self.data_root, unlocks=True) for c in dose_next(self.dose[name], self.root)]
                if not nxt:  # the arm is complete (or no candidate acts)
                    del self.dose_pending[name]
                pending.update(t.hash for t in nxt)
                new += nxt
        fresh = list({t.hash: t for t in new if t.hash not in self.submitted}.values())
        self.submitted.update((t.hash, t) for t in fresh)
        return fresh


def train(profile: str | Profile | None = None, select: Sequence[str] | None = None,
          execute: Executor | None = None, threads: int | None = None, device: str | None = None,
          progress: bool = True) -> list[dict]:
    """Plan, then train every missing run with ``execute`` (default: local), each study's HTR arms as soon as its
    γ grid is done and its acting-dose arm as its candidates finish; the outcomes of every run (skipped ones
    included), in the order they finished."""
    P = get_profile(profile) if not isinstance(profile, Profile) else profile
    root, droot = P.runs_dir(), default_data_root()
    execute = execute or local_executor(root, droot, threads, device)
    first = plan(P, select, droot)
    print(describe(first, root), flush=True)
    outcomes = [{"hash": t.hash, "setting": t.setting, "status": "skipped", "why": t.skipped}
                for t in first if t.skipped]
    runnable = [t for t in first if not t.skipped]
    follow = _FollowUps(P, select, root, droot, runnable)
    # the whole grid from the start (the HTR arms' count is known before γ is chosen), so the bar's
    # remaining time covers both waves; the acting-dose arm's runs are added as they are released
    bar = tqdm(total=len(runnable) + follow.expected_left(), desc="grid runs", unit="run", disable=not progress,
               initial=len(follow.finished))

    def done(outcome: dict) -> list[GridTask]:
        if outcome.get("malloc_trim") and not any(o.get("malloc_trim") for o in outcomes):
            bar.write(f"warning: worker pid {outcome['pid']} runs with {MALLOC_TRIM}={outcome['malloc_trim']} (Dask's "
                      "nanny default), which makes CPU training about 2x slower; start the workers without it "
                      "(docs/cluster.md)")
        outcomes.append(outcome)
        bar.update(1)
        bar.write(f"{outcome['hash']} {outcome['setting']}: {outcome['status']} ({outcome['seconds']:.0f} s)")
        new = follow.after(outcome)
        if new:
            bar.write(f"{outcome['hash']} releases {len(new)} run(s): " + ", ".join(sorted({t.setting for t in new})))
        bar.total = len(follow.submitted) + follow.expected_left()
        bar.refresh()
        return new

    execute(runnable, done)
    rest = [t for t in gamma_arms(P, select, droot, list(follow.submitted.values())) if not t.skipped]
    if rest:  # only if an executor returned before every follow-up ran (a custom one that ignores them)
        follow.submitted.update((t.hash, t) for t in rest)
        execute(rest, done)
    bar.total = bar.n
    bar.close()
    return outcomes


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m htr_utils.study.grid",
                                 description="plan and train the runs a profile's notebooks need")
    ap.add_argument("command", choices=("plan", "train"))
    ap.add_argument("--profile", default=None, help="smoke, cpu or paper (default: $HTR_PROFILE, else cpu)")
    ap.add_argument("--select", nargs="+", default=None, metavar="NAME", help="only these settings")
    ap.add_argument("--estimate", action="store_true",
                    help="plan: also time a short sample of each kind of run and reading here and print where an "
                         "empty-cache run spends its time (a few minutes)")
    ex = ap.add_mutually_exclusive_group()
    ex.add_argument("--workers", type=int, default=None, help="a Dask LocalCluster of N worker processes")
    ex.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads per run (default: local torch's choice; Dask: the cores split among workers)")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: CUDA if available; "
                                                   "Dask workers take one GPU each where several exist)")
    args = ap.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        ap.error(f"--workers {args.workers}: need at least 1")
    P = get_profile(args.profile)
    try:
        _check_select(P, args.select)
    except ValueError as err:
        ap.error(str(err))
    if args.command == "plan":
        print(describe(plan(P, args.select, default_data_root()), P.runs_dir()))
        if args.estimate:
            print(f"\nEstimated time of an empty-cache run of profile {P.name!r} on this machine "
                  f"({torch.get_num_threads()} threads), from a timed sample of each kind of run and reading:")
            rows = estimate(P, stages(P, args.select, default_data_root()), default_data_root(),
                            progress=lambda m: print(f"  {m}", flush=True))
            print(table(rows))
        return
    t0 = time.perf_counter()
    if args.workers is None and args.scheduler is None:
        outcomes = train(P, args.select, threads=args.threads, device=args.device)
        workers = 1
    else:
        with _dask_client(args.workers, args.scheduler, args.threads) as client:
            threads = args.threads or (max(1, (os.cpu_count() or 1) // args.workers) if args.workers else None)
            print(f"Dask scheduler {client.scheduler.address}; {threads or 'default'} threads per run", flush=True)
            outcomes = train(P, args.select, dask_executor(client, P.runs_dir(), default_data_root(), threads,
                                                           args.device), threads=threads, device=args.device)
            workers = args.workers or len(client.scheduler_info().get("workers", {}))
    if args.select is None:  # the whole grid: REPORT.md adds it to the notebooks' time
        write_grid_timing(P, outcomes, time.perf_counter() - t0, workers)


def write_grid_timing(P: Profile, outcomes: Sequence[dict], seconds: float, workers: int) -> Path:
    """``figures/<profile>/grid_timing.json``: the whole grid's wall time and how many of its runs were cached at
    the start, for REPORT.md's "Total wall time from an empty cache" line."""
    counts = {s: sum(1 for o in outcomes if o.get("status") == s) for s in {o.get("status") for o in outcomes}}
    path = figures_dir(P.name) / GRID_TIMING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json({"profile": P.name, "wall_s": seconds, "workers": workers, "runs": len(outcomes),
                "cached_at_start": counts.get("cached", 0), "statuses": counts,
                "date": time.strftime("%Y-%m-%dT%H:%M:%S")}, path)
    return path


if __name__ == "__main__":
    main()
