"""Tracebacks as users should read them: their own frames, not nbflow's machinery.

A task's failure is shown in the cell, in the run's logs and in the panel.  The frames of
nbflow's engine and notebook front end between the caller and the user's code say nothing
about the error, so they are left out, as IPython leaves out frames that set
``__tracebackhide__``.  When every frame is nbflow's (a bug in nbflow itself), all are kept.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from types import TracebackType

__all__ = ["format_user_exception", "user_traceback"]

#: Files under this folder are nbflow's own frames.
_PACKAGE = str(Path(__file__).resolve().parent.parent) + "/"


def _hidden(tb: TracebackType) -> bool:
    frame = tb.tb_frame
    if frame.f_locals.get("__tracebackhide__"):
        return True
    return frame.f_code.co_filename.startswith(_PACKAGE)


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """Return ``tb`` from its first frame that is not nbflow's (``tb`` itself if none is).

    Frames after that one are kept as they are: a user's function may call back into
    nbflow (a ``@task`` inside a cell), and the error is then where it happened.
    """
    current = tb
    while current is not None and _hidden(current):
        current = current.tb_next
    return current if current is not None else tb


def format_user_exception(exc: BaseException) -> str:
    """Format ``exc`` (and its causes) like ``traceback.format_exception``, user frames only."""
    tb = user_traceback(exc.__traceback__)
    lines = traceback.format_exception(type(exc), exc, tb)
    return "".join(lines).rstrip()
