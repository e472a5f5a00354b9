"""The monitors: Late marking, crash detection, cancellation and start-up reconciliation.

One pass (every ``monitor_interval`` seconds, the first one as the server starts):

- **Late**: a plain ``Scheduled`` run still unclaimed ``late_after`` seconds after its
  expected start becomes ``Late`` (same expected start, so it is still dispatched).
- **Crashes**: a run in progress (Pending, Submitting, Running) whose process is known to
  be gone is ``Crashed`` with the infrastructure id in the message.  The first pass does
  this for the runs a previous server left behind: runs whose process still lives are
  kept, the others are Crashed "found at start-up"; runs whose liveness nobody can tell
  are judged by their heartbeats (below).  Liveness comes from the runner
  (``is_alive(infrastructure_id)`` when a runner has it; for ``subprocess`` ids on this
  host, the process group).  Runs this server's own runner watches are left to its
  watcher, which reports the exit code.
- **Heartbeats**: a Running batch run, or an interactive run (a live kernel), whose last
  heartbeat (or its Running state, if it never sent one) is older than
  ``heartbeat_timeout`` is Crashed.  For an interactive run a silent kernel is a dead or
  disconnected kernel.  Silence is counted from the server's start at the earliest: while
  the server was down no run could deliver a heartbeat (runs retry their writes for
  ``NBFLOW_API_RETRY_SECONDS`` and carry on).
- **Stuck claims**: a Pending run without an infrastructure id after ``heartbeat_timeout``
  (its claimer stopped before starting it), or with infrastructure of unknown liveness
  after ten times that, is Crashed.  Nothing stays in progress forever.
- **Cancelling**: stopping a run's process is the job of the dispatcher of its runner
  (:mod:`nbflow.dispatch`: the server's, or ``nbflow worker``).  Here, a Cancelling
  batch run with nothing to stop, or whose process is gone, is Cancelled at once
  (interactive runs' kernels notice on their next heartbeat), and after
  ``cancel_timeout`` any Cancelling run is Cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from nbflow.client.base import Client
from nbflow.schemas import FlowRun, FlowRunFilter, SetStateStatus
from nbflow.states import Cancelled, Crashed, Late, State, StateType, now
from nbflow_server.services.base import PeriodicService
from nbflow_server.services.dispatcher import RunnerPool, iter_runs

__all__ = ["Monitor", "MonitorService", "probe_subprocess"]

logger = logging.getLogger("nbflow.server.monitors")

Publish = Callable[[FlowRun], None]
#: How many heartbeat timeouts a claimed run of unknown liveness may stay Pending.
_PENDING_UNKNOWN_FACTOR = 10


def probe_subprocess(infrastructure_id: str) -> bool | None:
    """Return whether a ``host:pid`` process group lives (None: another host or bad id)."""
    host, _, pid_text = infrastructure_id.rpartition(":")
    if host != socket.gethostname():
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _since(run: FlowRun) -> datetime:
    """When the run entered its current state."""
    return run.state.timestamp if run.state is not None else run.updated


class Monitor:
    """The monitors' blocking work; :meth:`check` is one pass."""

    def __init__(
        self,
        client: Client,
        runners: RunnerPool,
        *,
        late_after: float,
        heartbeat_timeout: float,
        cancel_timeout: float,
        dispatch_runners: frozenset[str] | set[str] | list[str],
        default_runner: str = "subprocess",
        publish: Publish | None = None,
    ) -> None:
        self.client = client
        self.runners = runners
        self.late_after = timedelta(seconds=late_after)
        self.heartbeat_timeout = timedelta(seconds=heartbeat_timeout)
        self.cancel_timeout = timedelta(seconds=cancel_timeout)
        self.dispatch_runners = frozenset(dispatch_runners)
        self.default_runner = default_runner
        self._publish = publish
        self.first_pass = True
        #: When the first pass ran (the server's start): no run is silent before it.
        self.started_at: datetime | None = None

    # -- helpers ---------------------------------------------------------------------------
    def _propose(self, run: FlowRun, state: State) -> bool:
        result = self.client.set_flow_run_state(run.id, state)
        if result.status is not SetStateStatus.ACCEPT:
            logger.debug("flow run %s: %s %s (%s)", run.id, state, result.status, result.reason)
            return False
        logger.info("flow run %s: %s: %s", run.id, state.name, state.message)
        if self._publish is not None:
            self._publish(run.model_copy(update={"state": result.state or state}))
        return True

    def _runner_name(self, run: FlowRun) -> str:
        return run.runner or self.default_runner

    def _watched_here(self, run: FlowRun) -> bool:
        """Whether this server's runner started the run's process and watches its exit."""
        runner = self.runners.existing(self._runner_name(run))
        if runner is None or not run.infrastructure_id:
            return False
        try:
            return runner.wait(run.infrastructure_id, 0) is None
        except Exception:
            return False

    def alive(self, run: FlowRun) -> bool | None:
        """Whether the run's infrastructure still runs (None: cannot tell)."""
        if not run.infrastructure_id:
            return None
        name = self._runner_name(run)
        runner = self.runners.existing(name)
        probe = getattr(runner, "is_alive", None) if runner is not None else None
        if callable(probe):
            try:
                return bool(probe(run.infrastructure_id))
            except Exception:
                return None
        if name == "subprocess":
            return probe_subprocess(run.infrastructure_id)
        return None

    # -- one pass --------------------------------------------------------------------------
    def check(self, at: datetime | None = None) -> None:
        """Do one pass of every monitor."""
        at = at or now()
        startup, self.first_pass = self.first_pass, False
        if startup:
            self.started_at = at
        self.mark_late(at)
        self.check_in_progress(at, startup=startup)
        self.check_cancelling(at)

    def mark_late(self, at: datetime) -> int:
        """Mark plain Scheduled runs ``late_after`` past their expected start Late."""
        flt = FlowRunFilter(
            state_types=[StateType.SCHEDULED],
            state_names=["Scheduled"],
            start_before=at - self.late_after,
            sort="expected_start_asc",
        )
        marked = 0
        for run in list(iter_runs(self.client, flt, most=5000)):
            late = Late(
                scheduled_time=run.expected_start_time,
                message=f"not started {self.late_after.total_seconds():g} s after its time",
            )
            marked += self._propose(run, late)
        return marked

    def check_in_progress(self, at: datetime, *, startup: bool = False) -> None:
        """Crash runs whose process is gone, silent for too long or never started."""
        flt = FlowRunFilter(state_types=[StateType.PENDING, StateType.RUNNING])
        where = " (found at server start-up)" if startup else ""
        for run in list(iter_runs(self.client, flt)):
            if run.mode == "python" or self._watched_here(run):
                continue
            alive = self.alive(run)
            if alive is False:
                self._propose(
                    run,
                    Crashed(
                        message=f"the run's process {run.infrastructure_id} is gone while the "
                        f"run was {run.state}{where}"
                    ),
                )
                continue
            since = _since(run)
            if self.started_at is not None:
                # No run could report while the server was down: silence counts from its start.
                since = max(since, self.started_at)
            if run.state_type is StateType.RUNNING:
                last = max(_since(run), run.heartbeat) if run.heartbeat else _since(run)
                if at - max(last, since) > self.heartbeat_timeout:
                    what = (
                        "the kernel of this interactive run stopped sending heartbeats "
                        "(it died or lost its connection)"
                        if run.mode == "interactive"
                        else "the run's process stopped sending heartbeats"
                    )
                    self._propose(
                        run,
                        Crashed(
                            message=f"{what}: last one at {last.isoformat()}, more than "
                            f"{self.heartbeat_timeout.total_seconds():g} s ago{where}"
                        ),
                    )
            elif alive is None and run.mode == "batch":
                limit = self.heartbeat_timeout * (
                    _PENDING_UNKNOWN_FACTOR if run.infrastructure_id else 1
                )
                if at - since > limit:
                    started = (
                        f"its infrastructure {run.infrastructure_id} never started it"
                        if run.infrastructure_id
                        else "it was claimed but never started (its claimer stopped)"
                    )
                    self._propose(
                        run,
                        Crashed(
                            message=f"{run.state} for more than "
                            f"{limit.total_seconds():g} s: {started}{where}"
                        ),
                    )

    def check_cancelling(self, at: datetime) -> None:
        """End Cancelling runs that nothing stops; force Cancelled after ``cancel_timeout``.

        Stopping a run's process is the job of the dispatcher that runs its runner: the
        server's (``dispatch_runners``) or an ``nbflow worker`` (:mod:`nbflow.dispatch`).
        """
        flt = FlowRunFilter(state_types=[StateType.CANCELLING])
        for run in list(iter_runs(self.client, flt)):
            if at - _since(run) > self.cancel_timeout:
                self._propose(
                    run,
                    Cancelled(
                        message=f"cancelled: still Cancelling after "
                        f"{self.cancel_timeout.total_seconds():g} s"
                    ),
                )
            elif not run.infrastructure_id and run.mode == "batch":
                self._propose(run, Cancelled(message="cancelled before its process started"))
            elif run.infrastructure_id and self.alive(run) is False:
                self._propose(run, Cancelled(message="cancelled; the run's process is gone"))

    def close(self) -> None:
        """Release nothing: stopping processes is the dispatchers' job."""


class MonitorService(PeriodicService):
    """Run :meth:`Monitor.check` every ``interval`` seconds, off the event loop."""

    name = "monitors"

    def __init__(self, monitor: Monitor, *, interval: float) -> None:
        super().__init__(interval)
        self.monitor = monitor

    async def tick(self) -> None:
        """Do one pass of the monitors in a thread."""
        await asyncio.get_running_loop().run_in_executor(None, self.monitor.check)

    async def stop(self) -> None:
        """Stop the loop, then wait for kills in progress."""
        await super().stop()
        await asyncio.get_running_loop().run_in_executor(None, self.monitor.close)
