"""The run cache's key: a short hash of a training config (a run's folder is ``<runs dir>/<hash>``)."""
from __future__ import annotations

import hashlib
import json

from .training import TrainConfig

RUNS_VERSION = 4  # bump when training/curvature code changes the numbers a config produces
# (3: bumped for batched HTR probes, which then stayed optional and off; the training code is unchanged,
# so v2 and v3 runs of one config agree where machine and thread count are the same;
# 4: the batch order is a permutation seeded by (seed, epoch) and gathered from tensors instead of a DataLoader's
# order, which drew extra seeds from its generator, so every run's batches, and hence its numbers, changed)


def config_hash(config: TrainConfig) -> str:
    """12 hex characters of sha256 over the canonical JSON (sorted keys) of the config and RUNS_VERSION."""
    payload = json.dumps({"config": config.to_dict(), "version": RUNS_VERSION}, sort_keys=True,
                         separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:12]
