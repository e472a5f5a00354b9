"""Fingerprints of Python values, for cell and task cache keys.

A fingerprint is a short hex digest that changes when the value changes and does not
depend on the process (``PYTHONHASHSEED``, object ids): sets are hashed as the sorted
fingerprints of their items, never in iteration order.  Large numeric data is hashed from
its buffers without copying (numpy arrays, pandas objects through
``pandas.util.hash_pandas_object``); containers and plain objects (instances of Python
classes without their own pickling, dataclasses included) are walked; functions are
fingerprinted by their code; anything else is pickled and the pickle (with its
out-of-band buffers) is hashed.  A value that cannot be fingerprinted raises
:class:`Unfingerprintable`: the caller must then skip the cache rather than guess.

numpy and pandas are never imported here: a value is recognised by its type's module, so
fingerprinting costs nothing when they are not in use.
"""

from __future__ import annotations

import hashlib
import pickle
import types
from collections.abc import Mapping
from typing import Any

from nbflow.exceptions import NbflowError

__all__ = [
    "Unfingerprintable",
    "arguments_fingerprint",
    "cell_cache_key",
    "fingerprint",
    "fingerprint_inputs",
]

_MAX_DEPTH = 32
_HEAP_TYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class written in Python
_OBJECT_REDUCE_EX = object.__reduce_ex__
_OBJECT_REDUCE = object.__reduce__
_OBJECT_GETSTATE = getattr(object, "__getstate__", None)
#: Per class: whether its instances are plain (walked through ``__dict__``).
_plain_classes: dict[type, bool] = {}


class Unfingerprintable(NbflowError):
    """A value whose content cannot be hashed reliably (unpicklable, or a live resource)."""

    def __init__(self, name: str, type_name: str, reason: str) -> None:
        self.name, self.type_name, self.reason = name, type_name, reason
        super().__init__(f"cannot fingerprint {name} ({type_name}): {reason}")


def _new() -> Any:
    return hashlib.blake2b(digest_size=16)


def fingerprint(value: Any, name: str = "value") -> str:
    """Return a hex digest of ``value``'s content; raise Unfingerprintable when impossible."""
    digest = _new()
    _feed(digest, value, name, 0, set())
    return str(digest.hexdigest())


def fingerprint_inputs(values: Mapping[str, Any]) -> dict[str, str]:
    """Fingerprint each named value (raises Unfingerprintable naming the first failure)."""
    return {name: fingerprint(values[name], name) for name in sorted(values)}


def arguments_fingerprint(values: Mapping[str, Any]) -> str:
    """Return one digest of named values, in name order (a task call's arguments).

    Raises Unfingerprintable naming the first argument (or the part of it) that fails.
    """
    digest = _new()
    for name in sorted(values):
        _tag(digest, f"arg:{name}")
        _feed(digest, values[name], name, 0, set())
    return str(digest.hexdigest())


def cell_cache_key(
    normalized_source: str, input_fingerprints: Mapping[str, str], parameters: Mapping[str, Any]
) -> str:
    """Return the cache key of a cell: its code, its inputs' fingerprints, the parameters."""
    digest = hashlib.sha256()
    digest.update(b"nbflow-cell-v1\0" + normalized_source.encode() + b"\0")
    for name in sorted(input_fingerprints):
        digest.update(f"{name}={input_fingerprints[name]}\0".encode())
    digest.update(b"params\0")
    digest.update(fingerprint(dict(parameters), "parameters").encode())
    return f"cell-{digest.hexdigest()}"


def _tag(digest: Any, tag: str) -> None:
    digest.update(tag.encode() + b"\0")


def _feed(digest: Any, value: Any, name: str, depth: int, seen: set[int]) -> None:
    if depth > _MAX_DEPTH:
        raise Unfingerprintable(name, type(value).__name__, "nested too deeply")
    kind = type(value)
    if value is None or kind in (bool, int, float, complex):
        _tag(digest, f"{kind.__name__}:{value!r}")
        return
    if kind is str:
        data = value.encode("utf-8", "surrogatepass")
        _tag(digest, f"str:{len(data)}")
        digest.update(data)
        return
    if kind in (bytes, bytearray, memoryview):
        data = bytes(value) if kind is memoryview else value
        _tag(digest, f"bytes:{len(data)}")
        digest.update(data)
        return
    module = kind.__module__.split(".")[0]
    if module == "numpy" and kind.__name__ == "ndarray":
        _feed_ndarray(digest, value, name)
        return
    if module == "pandas" and kind.__name__ in ("DataFrame", "Series", "Index", "MultiIndex"):
        _feed_pandas(digest, value, name)
        return
    if isinstance(value, types.ModuleType):
        version = getattr(value, "__version__", "")
        _tag(digest, f"module:{value.__name__}:{version}")
        return
    if isinstance(value, types.FunctionType | types.MethodType):
        _feed_function(digest, value, name, depth, seen)
        return
    if isinstance(value, type) and value.__module__ != "__main__":
        _tag(digest, f"type:{value.__module__}.{value.__qualname__}")
        return
    if kind in (list, tuple, dict, set, frozenset):
        if id(value) in seen:
            _tag(digest, "cycle")
            return
        seen.add(id(value))
        if kind is dict:
            _tag(digest, f"dict:{len(value)}")
            for key, item in value.items():
                _feed(digest, key, name, depth + 1, seen)
                _feed(digest, item, f"{name}[{key!r}]", depth + 1, seen)
        elif kind in (set, frozenset):
            _tag(digest, f"{kind.__name__}:{len(value)}")
            for part in sorted(fingerprint(item, name) for item in value):
                digest.update(part.encode())
        else:
            _tag(digest, f"{kind.__name__}:{len(value)}")
            for i, item in enumerate(value):
                _feed(digest, item, f"{name}[{i}]", depth + 1, seen)
        seen.discard(id(value))
        return
    if _is_plain(kind) and type(getattr(value, "__dict__", None)) is dict:
        _tag(digest, f"object:{kind.__module__}.{kind.__qualname__}")
        _feed(digest, value.__dict__, name, depth + 1, seen)
        return
    _feed_pickle(digest, value, name)


def _is_plain(kind: type) -> bool:
    """Whether pickling ``kind`` would just save its ``__dict__`` (so walk that instead).

    Only classes written in Python all the way up to ``object``, without ``__slots__`` or
    pickling methods of their own: walking such an instance sorts the sets it holds,
    where its pickle would keep their per-process order.
    """
    plain = _plain_classes.get(kind)
    if plain is None:
        plain = (
            kind.__reduce_ex__ is _OBJECT_REDUCE_EX  # type: ignore[comparison-overlap]
            and kind.__reduce__ is _OBJECT_REDUCE  # type: ignore[comparison-overlap]
            and getattr(kind, "__getstate__", None) is _OBJECT_GETSTATE
            and all(
                c is object or (c.__flags__ & _HEAP_TYPE and "__slots__" not in vars(c))
                for c in kind.__mro__
            )
        )
        _plain_classes[kind] = plain
    return plain


def _feed_ndarray(digest: Any, array: Any, name: str) -> None:
    if array.dtype.hasobject:
        _tag(digest, f"ndarray-object:{array.shape}")
        for i, item in enumerate(array.ravel().tolist()):
            _feed(digest, item, f"{name}[{i}]", 1, set())
        return
    _tag(digest, f"ndarray:{array.dtype.str}:{array.shape}")
    if array.flags.c_contiguous:
        digest.update(memoryview(array).cast("B"))
    else:
        digest.update(array.tobytes())


def _feed_pandas(digest: Any, obj: Any, name: str) -> None:
    kind = type(obj).__name__
    _tag(digest, f"pandas:{kind}:{obj.shape}")
    if kind == "DataFrame":
        _tag(digest, repr(list(obj.columns)))
        _feed_pandas_values(digest, obj.index, f"{name}.index")
        for i, column in enumerate(obj.columns):
            _feed_pandas_values(digest, obj.iloc[:, i], f"{name}[{column!r}]")
    elif kind == "Series":
        _tag(digest, repr(obj.name))
        _feed_pandas_values(digest, obj.index, f"{name}.index")
        _feed_pandas_values(digest, obj, name)
    else:
        _feed_pandas_values(digest, obj, name)


def _feed_pandas_values(digest: Any, values: Any, name: str) -> None:
    """Hash one column or index: raw buffers for numpy dtypes, else the pickle.

    (``hash_pandas_object`` is fast for numbers but ten times slower than pickling for
    string columns, so numbers go through the buffer and everything else is pickled.)
    """
    dtype = values.dtype
    _tag(digest, f"dtype:{dtype}")
    if type(values).__name__ == "RangeIndex":
        _tag(digest, f"range:{values.start}:{values.stop}:{values.step}")
        return
    numpy_kind = getattr(dtype, "kind", "O")
    if type(dtype).__module__.startswith("numpy") and numpy_kind in "biufcmM":
        _feed_ndarray(digest, values.to_numpy(), name)
        return
    _feed_pickle(digest, values, name)


def _feed_function(digest: Any, fn: Any, name: str, depth: int, seen: set[int]) -> None:
    if isinstance(fn, types.MethodType):
        _feed(digest, fn.__self__, name, depth + 1, seen)
        fn = fn.__func__
    _tag(digest, f"function:{fn.__module__}.{fn.__qualname__}")
    _feed_code(digest, fn.__code__)
    _feed(digest, fn.__defaults__, name, depth + 1, seen)
    if fn.__closure__:
        for cell in fn.__closure__:
            try:
                contents = cell.cell_contents
            except ValueError:  # empty cell
                continue
            _feed(digest, contents, name, depth + 1, seen)


def _feed_code(digest: Any, code: types.CodeType) -> None:
    digest.update(code.co_code)
    _tag(digest, repr(code.co_names) + repr(code.co_varnames))
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            _tag(digest, repr(const))


def _feed_pickle(digest: Any, value: Any, name: str) -> None:
    buffers: list[pickle.PickleBuffer] = []
    try:
        data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    except Exception as exc:
        raise Unfingerprintable(
            name, type(value).__name__, f"not picklable ({type(exc).__name__}: {exc})"
        ) from exc
    _tag(digest, f"pickle:{len(data)}")
    digest.update(data)
    for buffer in buffers:
        digest.update(buffer.raw())
