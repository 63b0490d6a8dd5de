"""The per-epoch curvature record of a training run, as frozen dataclasses with a JSON form.

    CurvatureRecord (one epoch)
      .kinds[kind]            kind: "hessian" | "ggn" | "residual"  ->  KindCurvature
        .full                 the block of all Conv/Linear weights  ->  BlockCurvature
        .layers[layer]        each layer's diagonal block           ->  BlockCurvature
    BlockCurvature: .density (SLQ), .top (largest Ritz values, descending), .dim, .trace (Hutchinson)

On disk a density is stored compactly (quadrature nodes and weights, grid range, sigma) and
rebuilt exactly on load; :meth:`CurvatureRecord.to_json` / :meth:`CurvatureRecord.from_json`
convert both ways.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..hutchinson import TraceEstimate
from ..lanczos import SpectralDensity, gaussian_density


def density_to_json(d: SpectralDensity) -> dict:
    return {"grid_range": [float(d.grid[0]), float(d.grid[-1]), int(len(d.grid))], "nodes": d.nodes.tolist(),
            "weights": d.weights.tolist(), "sigma": d.sigma, "meta": d.meta}


def density_from_json(d: dict) -> SpectralDensity:
    lo, hi, n = d["grid_range"]
    grid = np.linspace(lo, hi, int(n))
    nodes, weights = np.asarray(d["nodes"], dtype=float), np.asarray(d["weights"], dtype=float)
    return SpectralDensity(grid, gaussian_density(nodes, weights, grid, d["sigma"]), nodes, weights,
                           float(d["sigma"]), dict(d["meta"]))


@dataclass(frozen=True)
class TraceRecord:
    """A Hutchinson trace estimate: mean, standard error, number of probes."""
    mean: float
    stderr: float
    num_probes: int

    @classmethod
    def from_estimate(cls, est: TraceEstimate) -> "TraceRecord":
        return cls(float(est.mean), float(est.stderr), int(len(est.samples)))


@dataclass(frozen=True)
class BlockCurvature:
    """One block (the full network or one layer) of one curvature kind at one epoch."""
    density: SpectralDensity
    top: tuple[float, ...]           # largest Ritz values of the density's first Lanczos run, descending
    dim: int
    trace: TraceRecord | None = None

    @property
    def lambda_max(self) -> float:
        return float(self.top[0]) if self.top else float("nan")

    def to_json(self) -> dict:
        out: dict[str, Any] = {"density": density_to_json(self.density), "top": list(self.top), "dim": self.dim}
        if self.trace is not None:
            out["trace"] = {"mean": self.trace.mean, "stderr": self.trace.stderr, "num_probes": self.trace.num_probes}
        return out

    @classmethod
    def from_json(cls, d: dict) -> "BlockCurvature":
        trace = d.get("trace")
        return cls(density_from_json(d["density"]), tuple(float(v) for v in d["top"]), int(d["dim"]),
                   TraceRecord(float(trace["mean"]), _float(trace["stderr"]), int(trace["num_probes"]))
                   if trace else None)


@dataclass(frozen=True)
class KindCurvature:
    """One curvature kind at one epoch: the full block and every layer block (empty if not layerwise)."""
    full: BlockCurvature
    layers: dict[str, BlockCurvature] = field(default_factory=dict)
    seconds: float = float("nan")

    def block(self, part: str) -> BlockCurvature:
        """``"full"`` or a layer name."""
        if part == "full":
            return self.full
        if part not in self.layers:
            raise KeyError(f"no layer {part!r} in this record; layers: {list(self.layers)}")
        return self.layers[part]

    def to_json(self) -> dict:
        return {"full": self.full.to_json(), "layers": {k: v.to_json() for k, v in self.layers.items()},
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> "KindCurvature":
        return cls(BlockCurvature.from_json(d["full"]),
                   {k: BlockCurvature.from_json(v) for k, v in d.get("layers", {}).items()},
                   _float(d.get("seconds", float("nan"))))


@dataclass(frozen=True)
class CurvatureRecord:
    """Everything measured about the curvature at one epoch (0 = initialisation)."""
    epoch: int
    num_examples: int
    params: tuple[str, ...]
    layers: tuple[str, ...]
    kinds: dict[str, KindCurvature]
    seconds: float = float("nan")

    def to_json(self) -> dict:
        return {"epoch": self.epoch, "num_examples": self.num_examples, "params": list(self.params),
                "layers": list(self.layers), "kinds": {k: v.to_json() for k, v in self.kinds.items()},
                "seconds": self.seconds}

    @classmethod
    def from_json(cls, d: dict) -> "CurvatureRecord":
        return cls(int(d["epoch"]), int(d["num_examples"]), tuple(d["params"]), tuple(d["layers"]),
                   {k: KindCurvature.from_json(v) for k, v in d["kinds"].items()}, _float(d.get("seconds", math.nan)))


def _float(v: Any) -> float:
    return float("nan") if v is None else float(v)
