"""Map a function over independent items on every core, each worker with one BLAS thread.

The spiked-model calibrations (C1, C3 (a)) spend their time in one 400 × 400 ``scipy.linalg.eigh`` after another;
scipy holds the GIL there, so threads do not help, and one eigh of that size gains little from a second BLAS
thread. Worker processes (forked: no re-import of torch) each running one BLAS thread split the items over the
cores. Every item carries its own seed, so the results are those of the serial loop, in order.
"""
from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from threadpoolctl import threadpool_limits

WORKERS_ENV = "HTR_WORKERS"   # set to 1 to run serially (e.g. under a debugger)


def _one_blas_thread() -> None:
    threadpool_limits(1)


def workers() -> int:
    """The number of worker processes: ``HTR_WORKERS`` if set, else the cores this process may use."""
    env = os.environ.get(WORKERS_ENV)
    if env is not None:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"{WORKERS_ENV}={env!r}: set a positive whole number of worker processes (1: serial)")
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pool_map(func: Callable[..., Any], items: Iterable[tuple], processes: int | None = None) -> list[Any]:
    """[func(*item) for item in items], split over ``processes`` forked workers (default :func:`workers`);
    serial where one worker or one item. ``func`` must be a module-level function."""
    items = list(items)
    n = min(workers() if processes is None else processes, len(items))
    if n <= 1 or "fork" not in mp.get_all_start_methods():
        return [func(*item) for item in items]
    with ProcessPoolExecutor(n, mp_context=mp.get_context("fork"), initializer=_one_blas_thread) as pool:
        return list(pool.map(func, *zip(*items)))
