"""Confine notebook paths to the server's root directory.

A path from a request must be relative, must not climb out with ``..`` and, once symlinks
are resolved, must still lie under the root.  Violations raise :class:`PathOutsideRoot`
naming the path and the rule it broke; handlers turn that into 400 or 403.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from nbflow.exceptions import ValidationError

__all__ = ["PathOutsideRoot", "confine_path"]


class PathOutsideRoot(ValidationError):
    """A notebook path that escapes the server root (answered with 403)."""


def confine_path(root_dir: str | os.PathLike[str], path: str, *, field: str) -> str:
    """Return ``path`` normalized (POSIX, relative) after checking it stays under ``root_dir``.

    Raises ``ValidationError`` (400) for a malformed path and :class:`PathOutsideRoot` (403)
    for one that leaves the root, directly or through a symlink.
    """
    if not path or not path.strip():
        raise ValidationError(field, path, "is empty", "give a path relative to the server root")
    if "\x00" in path:
        raise ValidationError(field, path, "contains a NUL byte")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute():
        raise PathOutsideRoot(
            field, path, "is absolute", "give a path relative to the server root directory"
        )
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        raise PathOutsideRoot(
            field, path, "climbs out with '..'", "give a path inside the server root directory"
        )
    relative = PurePosixPath(*[p for p in parts if p not in ("", ".")])
    if not relative.parts:
        raise ValidationError(field, path, "names the root directory, not a notebook")
    root = Path(root_dir).resolve()
    resolved = (root / relative).resolve()
    if resolved != root and root not in resolved.parents:
        raise PathOutsideRoot(
            field,
            path,
            "resolves (through a symlink) to a file outside the server root",
            "copy the notebook into the server root directory",
        )
    return relative.as_posix()
