"""Atomic files: everything the study writes appears whole or not at all.

One writer for bytes (:func:`atomic_write`) and one for JSON (:func:`write_json`), used by the
run cache, the notebooks' outputs, the verdicts and the report.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder, fsync, then rename.

    The file gets the permissions the umask allows (mkstemp alone would leave it 0600, unreadable
    to the rest of a group sharing a cache).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def to_jsonable(obj: Any, strict: bool = True) -> Any:
    """``obj`` as plain JSON types: numpy / torch scalars and arrays, Paths, dataclasses, sets, tuples.

    With ``strict``, non-finite floats (nan, ±inf) become None so the file is strict JSON;
    otherwise they are kept (written as NaN / Infinity, which Python's json reads back).
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, bool):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) or not strict else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v, strict) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v, strict) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), strict)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if hasattr(obj, "to_json"):  # the study's records
        return to_jsonable(obj.to_json(), strict)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(obj.to_dict() if hasattr(obj, "to_dict") else dataclasses.asdict(obj), strict)
    if hasattr(obj, "to_dict"):  # pandas objects, SpectralDensity, ...
        return to_jsonable(obj.to_dict(), strict)
    if hasattr(obj, "tolist"):  # torch tensors
        return to_jsonable(obj.tolist(), strict)
    if hasattr(obj, "item"):
        return to_jsonable(obj.item(), strict)
    raise TypeError(f"cannot write an object of type {type(obj).__name__} as JSON")


def write_json(obj: Any, path: str | Path, strict: bool = True) -> Path:
    """Write ``obj`` (see :func:`to_jsonable`) as indented JSON, atomically. ``strict``: nan/inf -> null."""
    text = json.dumps(to_jsonable(obj, strict), indent=1, allow_nan=not strict, ensure_ascii=False) + "\n"
    return atomic_write(path, text.encode("utf-8"))


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))
