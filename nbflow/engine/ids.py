"""Fast construction of ids and models on the engine's hot path (no validation)."""

from __future__ import annotations

import os
import random
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel

__all__ = ["fast_model", "fast_uuid4", "set_fields"]

M = TypeVar("M", bound=BaseModel)

# os.urandom per id is slow on some hosts (tens of microseconds); a generator seeded from
# it once (and again in a forked child) gives the same 122 random bits per UUID.
_random = random.Random()
os.register_at_fork(after_in_child=_random.seed)
_VERSION_MASK = ~((0xF000 << 64) | (0xC000 << 48))
_VERSION_BITS = (0x4000 << 64) | (0x8000 << 48)
_new = object.__new__
_setattr = object.__setattr__
_UNKNOWN = uuid.SafeUUID.unknown


def fast_uuid4() -> uuid.UUID:
    """Return a random (version 4) UUID."""
    value = _new(uuid.UUID)
    _setattr(value, "int", (_random.getrandbits(128) & _VERSION_MASK) | _VERSION_BITS)
    _setattr(value, "is_safe", _UNKNOWN)
    return value


_mutable_fields: dict[int, tuple[str, ...]] = {}


def fast_model(cls: type[M], template: M, fields: dict[str, Any]) -> M:
    """Return a ``cls`` with ``template``'s values overridden by ``fields``, unvalidated.

    ``template`` supplies every field the schema has, so a field added later keeps working;
    mutable defaults (lists, dicts) not given in ``fields`` are copied.
    """
    values = template.__dict__.copy()
    mutable = _mutable_fields.get(id(template))
    if mutable is None:
        mutable = tuple(k for k, v in values.items() if type(v) in (list, dict))
        _mutable_fields[id(template)] = mutable
    for key in mutable:
        if key not in fields:
            values[key] = values[key].copy()
    values.update(fields)
    model = _new(cls)
    _setattr(model, "__dict__", values)
    # Every field counts as set, so ``model_dump(exclude_unset=True)`` keeps them all.
    _setattr(model, "__pydantic_fields_set__", set(values))
    _setattr(model, "__pydantic_extra__", None)
    _setattr(model, "__pydantic_private__", None)
    return model


def set_fields(model: BaseModel, **fields: Any) -> None:
    """Set fields of a (non-frozen) model without pydantic's per-assignment checks."""
    model.__dict__.update(fields)
