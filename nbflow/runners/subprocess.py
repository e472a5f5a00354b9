"""The subprocess runner: ``python -m nbflow execute <id>`` in its own process group.

The interpreter is this one, or the job variables' ``python``, ``virtualenv`` or
``conda_env``.  The process gets its own session (``start_new_session=True``).
:meth:`SubprocessRunner.kill` sends SIGTERM to that group (``nbflow execute`` then stops
its kernel and what the notebook started), gives it ``grace_seconds`` to exit, then
SIGKILLs the group and every other process of the run: the kernel's process group, the
processes below the executor, and those whose environment carries the executor's
``NBFLOW__EXECUTOR_ID``, unique per process (:mod:`nbflow.runners.processes`).  When the
process exits for any reason (``kill -9`` included), the watcher stops what is left of
the run the same way and removes the kernel files a killed executor could not.

Its output goes to the parent's stdout/stderr (or, line by line, to an ``output``
callback).  A watcher thread per process records the exit code and, with a client,
reports a non-zero exit of an unfinished run as Crashed.

The infrastructure id is ``<hostname>:<pid>``; a runner in another process on the same
host can kill it (it then polls for the group's exit instead of waiting on a child).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

from pydantic import Field

from nbflow.exceptions import ValidationError
from nbflow.runners.base import JobVariables, Runner
from nbflow.runners.processes import (
    executor_marker,
    remove_kernel_files,
    run_processes,
    terminate_run_processes,
)
from nbflow.runners.standby import StandbyPool
from nbflow.schemas import FlowRun

__all__ = ["SubprocessJobVariables", "SubprocessRunner"]

logger = logging.getLogger("nbflow.runners.subprocess")


class SubprocessJobVariables(JobVariables):
    """Job variables of the subprocess runner."""

    python: str | None = Field(
        default=None, description="the interpreter to run (default: the one running nbflow)"
    )
    virtualenv: str | None = Field(
        default=None, description="a virtualenv directory whose bin/python runs the notebook"
    )
    conda_env: str | None = Field(
        default=None, description="a conda environment name (run through `conda run -n`)"
    )
    working_dir: str | None = Field(default=None, description="the process's working directory")
    stream_output: bool = Field(
        default=True, description="forward the process's stdout/stderr to the runner's"
    )


@dataclass
class _Process:
    popen: subprocess.Popen[bytes]
    flow_run: FlowRun
    #: ``NAME=value`` in the environment of the executor and everything it started.
    marker: str | None = None
    done: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None
    readers: list[threading.Thread] = field(default_factory=list)
    #: Whether a pre-started executor took the run.
    warm: bool = False


#: Variables an interpreter reads only when it starts (``_read_at_startup``).
_STARTUP_PREFIXES = ("PYTHON", "LD_", "DYLD_", "JUPYTER", "IPYTHON", "LC_", "CONDA", "VIRTUAL_ENV")
_STARTUP_NAMES = frozenset(
    {"HOME", "LANG", "LANGUAGE", "TMPDIR", "TEMP", "TMP", "TZ", "MPLBACKEND"}
)


def _read_at_startup(name: str) -> bool:
    """Whether changing ``name`` in a running kernel would not have the effect it has at start."""
    return name in _STARTUP_NAMES or name.startswith(_STARTUP_PREFIXES)


class SubprocessRunner(Runner):
    """Run each flow run as ``python -m nbflow execute <id>`` in a local process group."""

    name: ClassVar[str] = "subprocess"
    shares_filesystem: ClassVar[bool] = True
    job_variables_model: ClassVar[type[JobVariables]] = SubprocessJobVariables

    def __init__(
        self,
        *,
        output: Callable[[str], None] | None = None,
        prestart: int = 0,
        replenish: bool = True,
        prestart_total: int | None = None,
        min_available_memory_mb: float = 0.0,
        **kwargs: Any,
    ) -> None:
        """Create the runner.

        ``output`` receives the processes' output lines instead of stdout.  ``prestart``
        keeps that many executors started ahead of time (``nbflow execute --standby``:
        imports done, kernel booted; :mod:`nbflow.runners.standby`); each takes exactly
        one run and is replaced at once, so a kernel is never reused (``replenish=False``:
        not replaced, for a one-run command; ``prestart_total``: start at most that many
        in all, for a batch of known size; ``min_available_memory_mb``: start none while
        less memory is available).  Runs a pre-started executor cannot honour start cold:
        see :meth:`cold_start_reason`.
        """
        super().__init__(**kwargs)
        self._output = output
        self._lock = threading.Lock()
        self._processes: dict[str, _Process] = {}
        self._pool = StandbyPool(
            prestart,
            replenish=replenish,
            total=prestart_total,
            min_available_mb=min_available_memory_mb,
            pipe_output=output is not None,
            http=bool(self.api_url),
        )
        self._pool.fill()

    @property
    def standby_pids(self) -> list[int]:
        """The pids of the executors started ahead and waiting for a run."""
        return self._pool.idle

    def close(self) -> None:
        """Stop the pre-started executors (runs in progress keep running)."""
        self._pool.close()

    # -- submit -----------------------------------------------------------------------
    def interpreter(self, config: SubprocessJobVariables) -> list[str]:
        """Return the command prefix that runs Python for this job configuration."""
        chosen = [k for k in ("python", "virtualenv", "conda_env") if getattr(config, k)]
        if len(chosen) > 1:
            raise ValidationError(
                "job_variables",
                {k: getattr(config, k) for k in chosen},
                "give at most one of python, virtualenv and conda_env",
            )
        if config.virtualenv:
            python = Path(config.virtualenv).expanduser() / "bin" / "python"
            if not python.exists():
                raise ValidationError(
                    "job_variables.virtualenv",
                    config.virtualenv,
                    f"has no interpreter at {python}",
                    "give the virtualenv's directory (the one holding bin/python)",
                )
            return [str(python)]
        if config.conda_env:
            conda = shutil.which("conda") or shutil.which("mamba")
            if conda is None:
                raise ValidationError(
                    "job_variables.conda_env",
                    config.conda_env,
                    "conda is not on PATH",
                    "install conda or use the virtualenv/python job variable",
                )
            return [conda, "run", "--no-capture-output", "-n", config.conda_env, "python"]
        if config.python:
            found = shutil.which(config.python)
            if found is None:
                raise ValidationError(
                    "job_variables.python",
                    config.python,
                    "is not an executable interpreter",
                    "give a path or a name on PATH",
                )
            return [found]
        return [sys.executable]

    def process_environment(self, flow_run: FlowRun, config: JobVariables) -> dict[str, str]:
        """Return the process's environment: ours, the run's connection, the job's ``env``."""
        env = dict(os.environ)
        env.update(self.run_environment(flow_run))
        env.update(config.env)
        return env

    def cold_start_reason(self, config: SubprocessJobVariables) -> str | None:
        """Why this run cannot use a pre-started executor (None: it can).

        A pre-started executor and its kernel run this interpreter, started with the
        runner's environment: a run that chooses another interpreter, or sets a variable
        that only takes effect when an interpreter starts (``PYTHONPATH``, ``LD_*``,
        locale, ``HOME``, ...), starts cold.  Other variables, the working directory and
        the run's own connection (its token) are applied before the first cell.
        """
        chosen = [k for k in ("python", "virtualenv", "conda_env") if getattr(config, k)]
        if chosen:
            return f"job variable {chosen[0]} chooses the interpreter"
        for name, value in config.env.items():
            if os.environ.get(name) != value and _read_at_startup(name):
                return f"env variable {name} only takes effect when an interpreter starts"
        return None

    def started_warm(self, infrastructure_id: str) -> bool:
        """Whether the process was started ahead of its run (False: a cold start)."""
        with self._lock:
            proc = self._processes.get(infrastructure_id)
        return proc is not None and proc.warm

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        """Start ``nbflow execute`` for the run in a new process group; return ``host:pid``."""
        config = self.job_configuration(flow_run, job_variables)
        assert isinstance(config, SubprocessJobVariables)
        popen, marker = self._hand_to_standby(flow_run, config)
        warm = popen is not None
        if popen is not None:
            argv = ["nbflow execute --standby", str(flow_run.id)]
        else:
            argv = [*self.interpreter(config), *self.command(flow_run)[1:]]
            pipe = subprocess.PIPE if self._output is not None else None
            quiet = subprocess.DEVNULL if not config.stream_output else pipe
            name, value = executor_marker()
            marker = f"{name}={value}"
            popen = subprocess.Popen(
                argv,
                env={**self.process_environment(flow_run, config), name: value},
                cwd=config.working_dir or None,
                stdin=subprocess.DEVNULL,
                stdout=quiet,
                stderr=quiet,
                start_new_session=True,
            )
        infrastructure_id = f"{socket.gethostname()}:{popen.pid}"
        proc = _Process(popen=popen, flow_run=flow_run, marker=marker, warm=warm)
        for stream in (popen.stdout, popen.stderr):
            if stream is not None:
                reader = threading.Thread(
                    target=self._forward, args=(stream,), name="nbflow-output", daemon=True
                )
                reader.start()
                proc.readers.append(reader)
        with self._lock:
            self._processes[infrastructure_id] = proc
        threading.Thread(
            target=self._watch, args=(infrastructure_id, proc), name="nbflow-watch", daemon=True
        ).start()
        logger.info("flow run %s: started %s as %s", flow_run.id, argv, infrastructure_id)
        return infrastructure_id

    def _hand_to_standby(
        self, flow_run: FlowRun, config: SubprocessJobVariables
    ) -> tuple[subprocess.Popen[bytes] | None, str | None]:
        """Give the run to a pre-started executor; (None, None) when it must start cold."""
        if not self._pool.size:
            return None, None
        reason = self.cold_start_reason(config)
        if reason is not None:
            logger.info("flow run %s: cold start: %s", flow_run.id, reason)
            return None, None
        standby = self._pool.take()
        if standby is None:
            logger.info("flow run %s: cold start: no executor ready ahead", flow_run.id)
            return None, None
        job = {
            "flow_run_id": str(flow_run.id),
            # The run's own connection and token: never inherited from the standby.
            "env": {**self.run_environment(flow_run), **config.env},
            "cwd": config.working_dir,
            "quiet": not config.stream_output,
        }
        self._pool.fill_soon()
        try:
            assert standby.popen.stdin is not None
            standby.popen.stdin.write(json.dumps(job).encode() + b"\n")
            standby.popen.stdin.close()
        except OSError as exc:  # it died since it was taken
            logger.info("flow run %s: cold start: the executor ahead died (%s)", flow_run.id, exc)
            return None, None
        return standby.popen, standby.marker

    def _forward(self, stream: IO[bytes]) -> None:
        assert self._output is not None
        for raw in iter(stream.readline, b""):
            self._output(raw.decode("utf-8", "replace").rstrip("\n"))
        stream.close()

    def _watch(self, infrastructure_id: str, proc: _Process) -> None:
        code = proc.popen.wait()
        for reader in proc.readers:
            reader.join()
        _sweep(proc.popen.pid, proc)
        try:
            self.report_exit(proc.flow_run.id, code)
        except Exception:
            logger.exception("flow run %s: could not report the exit", proc.flow_run.id)
        finally:
            proc.exit_code = code
            proc.done.set()

    # -- wait and kill -----------------------------------------------------------------
    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        """Wait for a process this runner started; return its exit code (None on timeout)."""
        with self._lock:
            proc = self._processes.get(infrastructure_id)
        if proc is None:
            raise ValidationError(
                "infrastructure_id",
                infrastructure_id,
                "was not started by this runner",
                "wait on the runner that submitted the run",
            )
        if not proc.done.wait(timeout):
            return None
        return proc.exit_code

    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        """SIGTERM the process group, wait ``grace_seconds``, then SIGKILL it."""
        pid = _parse_id(infrastructure_id)
        with self._lock:
            proc = self._processes.get(infrastructure_id)
        marker = proc.marker if proc is not None else None
        # Seen while the executor lives: a child that left every process group is found
        # only below it.
        tree = run_processes([pid], marker)
        if not _signal_group(pid, signal.SIGTERM):
            terminate_run_processes([pid], marker, 0.0, known=tree)
            return
        if proc is not None:
            exited = _wait_child(proc, grace_seconds)
        else:
            exited = _wait_group_gone(pid, grace_seconds)
        if not exited:
            logger.info(
                "%s still running %g s after SIGTERM: SIGKILL", infrastructure_id, grace_seconds
            )
            _signal_group(pid, signal.SIGKILL)
        # Normally nothing is left: the executor stopped its kernel and the notebook's
        # processes.  After a forced kill, or for a child that ignores SIGTERM, no more
        # grace: the run had its grace period.
        terminate_run_processes([pid], marker, 0.0, known=tree)
        if proc is not None:
            proc.done.wait()


def _sweep(pid: int, proc: _Process) -> None:
    """Stop what is left of a run whose executor exited; remove its kernel files."""
    try:
        left = terminate_run_processes([pid], proc.marker, 2.0)
        if left:
            logger.info(
                "flow run %s: stopped %d process(es) left by its executor",
                proc.flow_run.id,
                len(left),
            )
        try:
            from jupyter_core.paths import jupyter_runtime_dir
        except ImportError:
            return
        remove_kernel_files(pid, Path(jupyter_runtime_dir()))
    except Exception:
        logger.exception("flow run %s: could not clean up after its process", proc.flow_run.id)


def _parse_id(infrastructure_id: str) -> int:
    host, _, pid_text = infrastructure_id.rpartition(":")
    if host and host != socket.gethostname():
        raise ValidationError(
            "infrastructure_id",
            infrastructure_id,
            f"runs on host {host!r}, not on this one ({socket.gethostname()!r})",
            "kill it from a runner on that host",
        )
    try:
        return int(pid_text)
    except ValueError:
        raise ValidationError(
            "infrastructure_id", infrastructure_id, "is not '<host>:<pid>'", None
        ) from None


def _signal_group(pid: int, sig: int) -> bool:
    """Signal the process group led by ``pid``; False when it is already gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _wait_child(proc: _Process, timeout: float) -> bool:
    try:
        proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def _wait_group_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _signal_group(pid, 0):
            return True
        time.sleep(0.05)
    return not _signal_group(pid, 0)
