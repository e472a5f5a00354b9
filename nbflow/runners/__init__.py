"""Runners: launch ``nbflow execute <run-id>`` on some infrastructure and kill it.

Runners are found through the entry-point group ``nbflow.runners``; the built-in ones
(``subprocess``; ``docker`` and ``kubernetes`` with their extras) register there exactly
like third-party runners.  Runners import the domain and the client interface only,
never the engine.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

from nbflow.exceptions import ValidationError
from nbflow.runners.base import JobVariables, Runner

__all__ = [
    "ENTRY_POINT_GROUP",
    "JobVariables",
    "Runner",
    "available_runners",
    "get_runner",
]

ENTRY_POINT_GROUP = "nbflow.runners"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_runners() -> list[str]:
    """Return the names of the installed runners, sorted."""
    return sorted(_entry_points())


def get_runner(name: str) -> type[Runner]:
    """Return the runner class registered as ``name``; an unknown name lists the known ones."""
    eps = _entry_points()
    ep = eps.get(name)
    if ep is None:
        known = ", ".join(sorted(eps)) or "none installed"
        raise ValidationError(
            "runner",
            name,
            "is not an installed runner",
            f"Available runners: {known}. Install the extra that provides it "
            f"(e.g. pip install 'nbflow[{name}]') or pick one of those.",
        )
    try:
        cls = ep.load()
    except ImportError as exc:
        raise ValidationError(
            "runner",
            name,
            f"cannot be loaded ({exc})",
            f"Install its dependencies: pip install 'nbflow[{name}]'",
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Runner)):
        raise ValidationError(
            "runner", name, f"entry point {ep.value} is not a Runner subclass", None
        )
    return cls
