"""Interleaved timing: candidates run in turn, round after round, so load on the machine hits all alike."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_medians(candidates: dict[str, Callable[[], object]], repeats: int = 5,
                        warmup: int = 1) -> dict[str, float]:
    """Median wall seconds of each candidate over ``repeats`` rounds (after ``warmup`` untimed rounds)."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}
