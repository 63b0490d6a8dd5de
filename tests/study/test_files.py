"""The one writer: atomic, readable as the umask allows, strict JSON by default."""
import json
import math
import os
import stat

import numpy as np
import pytest

from htr_utils.study.files import atomic_write, read_json, write_json


def test_atomic_write_leaves_no_temporary_file_and_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write(tmp_path / "a" / "x.bin", b"abc")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"abc" and os.listdir(path.parent) == ["x.bin"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_write_json_strict_and_lenient(tmp_path):
    obj = {"a": np.float32(1.5), "b": np.arange(2), "c": float("nan"), "d": (1, 2)}
    assert read_json(write_json(obj, tmp_path / "s.json")) == {"a": 1.5, "b": [0, 1], "c": None, "d": [1, 2]}
    lenient = read_json(write_json(obj, tmp_path / "l.json", strict=False))
    assert math.isnan(lenient["c"])
    with pytest.raises(TypeError, match="cannot write an object of type object"):
        write_json({"x": object()}, tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()
    json.loads((tmp_path / "s.json").read_text())  # strict JSON: no NaN token
