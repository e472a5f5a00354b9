"""Result storage, and the task identity part of cache keys.

A result is one file named by its key under a store: a local directory by default
(``settings.results_url``) or any fsspec URL (``s3://bucket/prefix``; fsspec is imported
only then).  The file holds the cloudpickled value and its expiration, so a cache lookup
needs no database query and works the same from a Dask worker that shares the storage.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import pickle
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from nbflow.exceptions import NbflowError
from nbflow.states import now

__all__ = ["ResultRecord", "ResultStore", "get_result_store", "task_source_hash"]


@dataclass(frozen=True)
class ResultRecord:
    """A persisted value with its expiration (None: never expires)."""

    value: Any
    expires: datetime | None
    created: datetime

    @property
    def is_expired(self) -> bool:
        """Whether the record is past its expiration."""
        return self.expires is not None and self.expires <= now()


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


class ResultStore:
    """Read and write results by key under a directory or fsspec URL."""

    def __init__(self, location: str) -> None:
        self.location = location.rstrip("/")
        self._fs: Any = None
        if _is_url(self.location):
            try:
                import fsspec
            except ImportError as exc:  # pragma: no cover - depends on the extra
                raise NbflowError(
                    f"result storage {location!r} needs fsspec: pip install 'nbflow[fsspec]'"
                ) from exc
            self._fs, self._root = fsspec.core.url_to_fs(self.location)
        else:
            self._root = self.location.removeprefix("file://")

    def _path(self, key: str) -> str:
        if not key or "/" in key or key.startswith("."):
            raise NbflowError(f"result key {key!r} is not a plain file name")
        return f"{self._root}/{key}"

    def write(self, key: str, value: Any, expiration: timedelta | None = None) -> str:
        """Persist ``value`` under ``key``; return where it went."""
        created = now()
        record = ResultRecord(value, created + expiration if expiration else None, created)
        import cloudpickle  # here, not at the top: most flows never persist a result

        payload = cloudpickle.dumps(record)
        path = self._path(key)
        if self._fs is not None:
            self._fs.makedirs(self._root, exist_ok=True)
            with self._fs.open(path, "wb") as fh:
                fh.write(payload)
            return f"{self.location}/{key}"
        Path(self._root).mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees a half-written result.
        fd, tmp = tempfile.mkstemp(dir=self._root, prefix=f".{key}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
        return path

    def read(self, key: str) -> ResultRecord | None:
        """Return the record under ``key``, or None when there is none or it is unreadable."""
        path = self._path(key)
        try:
            if self._fs is not None:
                with self._fs.open(path, "rb") as fh:
                    data = fh.read()
            else:
                with open(path, "rb") as fh:
                    data = fh.read()
        except (FileNotFoundError, OSError):
            return None
        try:
            record = pickle.loads(data)  # what cloudpickle.loads is
        except Exception:
            return None
        return record if isinstance(record, ResultRecord) else None

    def delete(self, key: str) -> bool:
        """Delete the result under ``key`` (retention); False when there was none."""
        path = self._path(key)
        try:
            if self._fs is not None:
                if not self._fs.exists(path):
                    return False
                self._fs.rm(path)
            else:
                os.unlink(path)
        except FileNotFoundError:
            return False
        return True

    def read_valid(self, key: str) -> ResultRecord | None:
        """Return the record under ``key`` when it exists and has not expired."""
        record = self.read(key)
        return None if record is None or record.is_expired else record


_lock = threading.Lock()
_stores: dict[str, ResultStore] = {}


def get_result_store(location: str | None = None) -> ResultStore:
    """Return the store at ``location`` (None: ``settings.results_url``)."""
    if location is None:
        from nbflow.settings import get_settings

        location = get_settings().results_url
    store = _stores.get(location)
    if store is None:
        with _lock:
            store = _stores.setdefault(location, ResultStore(location))
    return store


def task_source_hash(fn: Any) -> str:
    """Hash a task's identity: its qualified name and source (bytecode when no source)."""
    target = inspect.unwrap(fn)
    try:
        source = inspect.getsource(target)
    except (OSError, TypeError):
        code = getattr(target, "__code__", None)
        source = repr(code.co_code + repr(code.co_consts).encode()) if code else repr(target)
    name = f"{getattr(target, '__module__', '')}.{getattr(target, '__qualname__', '')}"
    return hashlib.sha256(f"{name}\n{source}".encode()).hexdigest()
