"""Every local process of a flow run, found and killed together.

A run's processes are ``nbflow execute``, its kernel and whatever the notebook started.
jupyter_client starts the kernel in a session of its own (so an interrupt reaches the
kernel's children, not the executor), which means a signal to the executor's process
group does not reach the kernel's; and a child that ignores SIGTERM outlives both. So a
run's processes are collected from three places, each catching what the others miss:

- the process groups of the executor and of every descendant (a kernel and its children);
- the descendants of the executor, while it lives (a child that made its own session);
- every process whose environment carries a marker: the runner gives each executor a
  unique ``NBFLOW__EXECUTOR_ID`` (:func:`executor_marker`), the executor itself looks for
  its run's ``NBFLOW__FLOW_RUN_ID`` (:func:`flow_run_marker`).  The environment is
  inherited, so this still finds the notebook's children after the executor and the
  kernel are gone, e.g. after ``kill -9`` of the executor.  The runner's marker is one
  per process, so a sweep after an exit never reaches a later executor of the same run.

The kernel also gets a parent-death signal (``nbflow.execution.kernels``), so it dies
with its executor even when nothing else is watching.  Everything here reads
``/proc``: on systems without it only process groups are signalled.
"""

from __future__ import annotations

import logging
import os
import signal
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from uuid import UUID

__all__ = [
    "EXECUTOR_ID_VARIABLE",
    "KERNEL_FILE_PREFIX",
    "descendants",
    "executor_marker",
    "flow_run_marker",
    "kill_processes",
    "remove_kernel_files",
    "run_processes",
    "terminate_run_processes",
]

logger = logging.getLogger("nbflow.runners.processes")

#: The name prefix of a batch kernel's files in the Jupyter runtime directory; the
#: executor's pid follows.  ``nbflow.execution.kernels`` names them (it keeps its own copy
#: of this constant: it must not import this package before the kernel starts).
KERNEL_FILE_PREFIX = "nbflow-kernel-"

#: The variable a runner sets, unique per executor process, to find its processes later.
EXECUTOR_ID_VARIABLE = "NBFLOW__EXECUTOR_ID"

_PROC = Path("/proc")


def _stat(pid: int) -> tuple[int, int] | None:
    """Return ``(ppid, pgid)`` of ``pid`` from /proc (None: gone or a zombie)."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None  # a zombie holds no resources and cannot be killed again
    return int(fields[1]), int(fields[2])


def _pids() -> list[int]:
    try:
        return [int(p.name) for p in _PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def _table() -> dict[int, tuple[int, int]]:
    """Return ``{pid: (ppid, pgid)}`` of the live processes."""
    table = {}
    for pid in _pids():
        found = _stat(pid)
        if found is not None:
            table[pid] = found
    return table


def descendants(pid: int, table: dict[int, tuple[int, int]] | None = None) -> set[int]:
    """Return the live descendants of ``pid`` (children, their children, ...)."""
    table = table if table is not None else _table()
    children: dict[int, list[int]] = {}
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


def executor_marker() -> tuple[str, str]:
    """Return a new ``(variable, value)`` to put in one executor's environment."""
    return EXECUTOR_ID_VARIABLE, uuid.uuid4().hex


def flow_run_marker(flow_run_id: UUID) -> str:
    """Return the environment entry every process of this flow run inherits."""
    return f"NBFLOW__FLOW_RUN_ID={flow_run_id}"


def _marked(marker_text: str, pids: Iterable[int]) -> set[int]:
    """Return the processes whose environment holds ``NAME=value`` ``marker_text``."""
    marker = marker_text.encode()
    found = set()
    for pid in pids:
        try:
            environ = (_PROC / str(pid) / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.add(pid)
    return found


def run_processes(roots: Iterable[int] = (), marker: str | None = None) -> set[int]:
    """Return the live processes of a run: see the module docstring.

    ``roots`` are executor pids (each leads its process group when a runner started it);
    ``marker`` (``NAME=value``) adds the processes whose environment holds it.  The
    calling process, its ancestors and their process groups are never included.
    """
    table = _table()
    members: set[int] = set()
    for root in roots:
        if root in table:
            members.add(root)
        members |= descendants(root, table)
    if marker is not None:
        members |= _marked(marker, table)
    groups = {table[p][1] for p in members if p in table} | set(roots)
    # Never this process, its ancestors or their groups (a run started without a session
    # of its own shares its caller's group).
    own, mine = os.getpid(), set()
    while own > 1:
        mine.add(own)
        own = table.get(own, (1, 0))[0]
    groups -= {table[p][1] for p in mine if p in table}
    members |= {pid for pid, (_, pgid) in table.items() if pgid in groups}
    return members - mine - {1}


def kill_processes(pids: Iterable[int], sig: int = signal.SIGKILL) -> None:
    """Send ``sig`` to each process, ignoring those already gone."""
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _alive(pids: Iterable[int]) -> set[int]:
    return {pid for pid in pids if _stat(pid) is not None}


def terminate_run_processes(
    roots: Iterable[int] = (),
    marker: str | None = None,
    grace_seconds: float = 2.0,
    *,
    known: Iterable[int] = (),
) -> set[int]:
    """SIGTERM every process of the run, SIGKILL what is left after ``grace_seconds``.

    ``known``: processes found earlier (a tree seen before its root died).  Return the
    processes that were signalled.  On systems without ``/proc`` only the roots' process
    groups are signalled.
    """
    roots = list(roots)
    if not _PROC.is_dir():
        for root in roots:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(root, sig)
                except (ProcessLookupError, PermissionError):
                    break
        return set(roots)
    found = run_processes(roots, marker) | _alive(known)
    if not found:
        return found
    kill_processes(found, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while _alive(found) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Look again: a process may have started a child while it was being terminated.
    left = _alive(found) | run_processes(roots, marker)
    if left:
        logger.info("SIGKILL to %d process(es) of the run left after SIGTERM", len(left))
        kill_processes(left, signal.SIGKILL)
    return found


def remove_kernel_files(executor_pid: int, runtime_dir: Path) -> list[Path]:
    """Remove the connection files and IPC sockets left by the kernels of a dead executor."""
    removed = []
    for path in runtime_dir.glob(f"{KERNEL_FILE_PREFIX}{executor_pid}-*"):
        try:
            path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed
