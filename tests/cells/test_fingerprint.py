"""Fingerprints: equal content gives equal digests, any change gives another."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pandas as pd
import pytest

from nbflow.engine.fingerprint import (
    Unfingerprintable,
    cell_cache_key,
    fingerprint,
    fingerprint_inputs,
)


def _f(x: int) -> int:
    return x + 1


def _g(x: int) -> int:
    return x + 2


class _Point:
    def __init__(self, x: int) -> None:
        self.x = x


SAME: list[tuple[str, Any, Any]] = [
    ("int", 1, 1),
    ("str", "abc", "ab" + "c"),
    ("list", [1, "a", None], [1, "a", None]),
    ("dict", {"a": 1, "b": [2]}, {"a": 1, "b": [2]}),
    ("set order", {"x", "y", "z"}, {"z", "y", "x"}),
    ("ndarray", np.arange(10), np.arange(10)),
    ("ndarray view", np.arange(20)[::2], np.arange(0, 20, 2)),
    (
        "dataframe",
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}),
    ),
    ("series", pd.Series([1.0, 2.0], name="s"), pd.Series([1.0, 2.0], name="s")),
    ("object", _Point(3), _Point(3)),
    ("function", _f, _f),
    ("module", np, np),
]

DIFFERENT: list[tuple[str, Any, Any]] = [
    ("int vs float", 1, 1.0),
    ("int vs bool", 1, True),
    ("str vs bytes", "a", b"a"),
    ("list vs tuple", [1], (1,)),
    ("nested change", {"a": [1, 2]}, {"a": [1, 3]}),
    ("ndarray value", np.zeros(5), np.ones(5)),
    ("ndarray dtype", np.zeros(5, dtype=np.int32), np.zeros(5, dtype=np.int64)),
    ("ndarray shape", np.zeros((2, 3)), np.zeros((3, 2))),
    ("dataframe value", pd.DataFrame({"a": [1, 2]}), pd.DataFrame({"a": [1, 3]})),
    ("dataframe column name", pd.DataFrame({"a": [1]}), pd.DataFrame({"b": [1]})),
    ("dataframe index", pd.DataFrame({"a": [1]}, index=[0]), pd.DataFrame({"a": [1]}, index=[5])),
    ("dataframe dtype", pd.DataFrame({"a": [1]}), pd.DataFrame({"a": [1.0]})),
    ("object attribute", _Point(3), _Point(4)),
    ("function code", _f, _g),
]


@pytest.mark.parametrize(("a", "b"), [c[1:] for c in SAME], ids=[c[0] for c in SAME])
def test_same_content_same_fingerprint(a: Any, b: Any) -> None:
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize(("a", "b"), [c[1:] for c in DIFFERENT], ids=[c[0] for c in DIFFERENT])
def test_different_content_different_fingerprint(a: Any, b: Any) -> None:
    assert fingerprint(a) != fingerprint(b)


def test_dataframe_with_unhashable_cells_falls_back_to_pickle() -> None:
    a = pd.DataFrame({"a": [[1], [2]]})
    assert fingerprint(a) == fingerprint(pd.DataFrame({"a": [[1], [2]]}))
    assert fingerprint(a) != fingerprint(pd.DataFrame({"a": [[1], [3]]}))


def test_cycles_terminate() -> None:
    a: list[Any] = [1]
    a.append(a)
    assert fingerprint(a) == fingerprint(a)


def test_unpicklable_value_names_the_input() -> None:
    with pytest.raises(Unfingerprintable) as info:
        fingerprint_inputs({"ok": 1, "lock": threading.Lock()})
    assert info.value.name == "lock"
    assert "not picklable" in str(info.value)


def test_unpicklable_inside_a_container() -> None:
    with pytest.raises(Unfingerprintable) as info:
        fingerprint({"k": [threading.Lock()]}, "cfg")
    assert info.value.name.startswith("cfg")


def test_large_array_is_fingerprinted() -> None:
    big = np.random.default_rng(0).random(5_000_000)
    first = fingerprint(big)
    big[-1] += 1
    assert fingerprint(big) != first


def test_cell_cache_key() -> None:
    base = cell_cache_key("x = a + 1", {"a": fingerprint(1)}, {"n": 3})
    assert base == cell_cache_key("x = a + 1", {"a": fingerprint(1)}, {"n": 3})
    assert base != cell_cache_key("x = a + 2", {"a": fingerprint(1)}, {"n": 3})
    assert base != cell_cache_key("x = a + 1", {"a": fingerprint(2)}, {"n": 3})
    assert base != cell_cache_key("x = a + 1", {"a": fingerprint(1)}, {"n": 4})
    assert base.startswith("cell-") and "/" not in base
