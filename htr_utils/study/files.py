"""Atomic files: everything the study writes appears whole or not at all.

One writer for bytes (:func:`atomic_write`) and one for JSON (:func:`write_json`), used by the
run cache, the notebooks' outputs, the verdicts and the report; :func:`remove_orphan_temps` clears
what a killed writer left; :class:`FileLock` is the one inter-process lock (run folders, timings.json).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock
    fcntl = None


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


# -- orphans and locks -----------------------------------------------------------------------
def remove_orphan_temps(folder: str | Path) -> list[Path]:
    """Delete the temporary files (``.<name>.<random>.tmp``) that a killed :func:`atomic_write` left under
    ``folder``; returns them. Call it only while no writer can be active there (holding its :class:`FileLock`)."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    return removed


class LockTimeout(TimeoutError):
    """A :class:`FileLock` was still held by another process after the timeout."""


class FileLock:
    """An exclusive OS lock (``fcntl.flock``) on ``path``, released by the kernel when its holder dies.

    So a lock left by a killed process never blocks: the file may remain, with its last holder's host
    and pid in it (informational), but nobody holds the flock. While waiting, one message says who
    holds it; ``timeout`` (seconds, None = wait forever) raises :class:`LockTimeout`. Linux and macOS
    (and NFS where the server supports locks); where ``fcntl`` is missing (Windows) it warns once and
    does not lock, so two processes must then not write the same thing.
    """

    def __init__(self, path: str | Path, timeout: float | None = None, poll: float = 0.2, what: str | None = None):
        self.path, self.timeout, self.poll = Path(path), timeout, poll
        self.what = what or str(self.path)
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds (or last held) the lock, from the file: ``pid N on HOST since T``, or ``unknown``."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
            return f"pid {info['pid']} on {info['host']} since {info['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "an unknown process"

    def acquire(self) -> "FileLock":
        if fcntl is None:  # pragma: no cover
            warnings.warn(f"no fcntl on {sys.platform}: {self.what} is not locked; do not write it from two processes")
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies: a group can share it
        start, told = time.monotonic(), False
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    waited = time.monotonic() - start
                    if self.timeout is not None and waited >= self.timeout:
                        raise LockTimeout(f"{self.what} is still locked by {self.holder()} after {waited:.0f} s "
                                          f"(lock file {self.path}); wait longer (timeout=None) or stop that "
                                          "process. A lock whose holder died is free: the kernel releases it.")
                    if not told:
                        limit = "no timeout" if self.timeout is None else f"timeout {self.timeout:g} s"
                        print(f"{self.what} is locked by {self.holder()}; waiting ({limit})", file=sys.stderr,
                              flush=True)
                        told = True
                    time.sleep(self.poll)
            stamp = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(stamp) + "\n").encode(), 0)
        except BaseException:
            os.close(fd)  # closing releases the flock if it was taken
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)  # nobody holds it now
            os.close(fd)  # closing the descriptor releases the flock

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
