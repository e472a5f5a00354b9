"""The dispatcher: claim due runs within concurrency limits and hand them to their runner.

Each pass reads the runs that are due (``Scheduled``, ``Late`` or ``AwaitingRetry`` with
``expected_start_time <= now``) whose runner is one this server dispatches
(``NbflowApp.dispatch_runners``; other runners' runs are left to ``nbflow worker``
processes).  A run is claimed by proposing ``Pending`` through the orchestration gate,
which accepts one claim only, so a run is submitted once even when several servers or
workers race for it.  Claims respect the global limit (``global_concurrency_limit``) and
each deployment's ``concurrency_limit``, counted over the batch runs that are Pending,
Running or Cancelling; a run over a limit stays as it is and gets one log line saying it
waits for a slot.

Submitting (in a thread pool, never on the event loop): propose ``Submitting``, build the
job configuration (runner defaults, then the deployment's job variables; the runner puts
the run's own on top, ``env`` merged key by key), give the process the server's API URL
and a per-run token, call ``runner.submit`` and record the infrastructure id.  A failed
submission is ``Crashed`` with the reason.  ``nbflow execute`` proposes Running itself.
The runner's watcher (the subprocess runner has one) reports a non-zero exit of an
unfinished run as Crashed; the dispatcher waits on it to announce the change and to free
the slot at once.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime
from typing import Any
from uuid import UUID

from nbflow.client.base import Client
from nbflow.exceptions import NotFound
from nbflow.runners import Runner, merge_job_variables
from nbflow.schemas import Deployment, FlowRun, FlowRunFilter, Log, SetStateStatus
from nbflow.states import Crashed, Pending, State, StateType, Submitting, now
from nbflow_server.services.base import PeriodicService

__all__ = [
    "ACTIVE_TYPES",
    "Dispatcher",
    "DispatcherService",
    "RunnerFactory",
    "RunnerPool",
    "iter_runs",
]

logger = logging.getLogger("nbflow.server.dispatcher")

#: State types that hold a concurrency slot.
ACTIVE_TYPES = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
_PAGE = 500
#: Most due runs looked at in one pass.
_MAX_DUE = 5000

#: Builds the runner registered under a name.
RunnerFactory = Callable[[str], Runner]
#: Receives a run whose state changed (to announce it on the event stream).
Publish = Callable[[FlowRun], None]


def iter_runs(client: Client, flt: FlowRunFilter, *, most: int = 100_000) -> Iterator[FlowRun]:
    """Yield every run matching ``flt`` page by page (at most ``most``)."""
    offset, seen = 0, 0
    while seen < most:
        page = client.read_flow_runs(flt.model_copy(update={"limit": _PAGE, "offset": offset}))
        yield from page
        seen += len(page)
        if len(page) < _PAGE:
            return
        offset += _PAGE


class RunnerPool:
    """One runner instance per runner name, built on first use and closed together."""

    def __init__(self, factory: RunnerFactory) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._runners: dict[str, Runner] = {}

    def get(self, name: str) -> Runner:
        """Return the runner called ``name`` (raises the registry's error for unknown names)."""
        with self._lock:
            runner = self._runners.get(name)
            if runner is None:
                runner = self._runners[name] = self._factory(name)
            return runner

    def existing(self, name: str) -> Runner | None:
        """Return the runner called ``name`` if it was built already."""
        with self._lock:
            return self._runners.get(name)

    def close(self) -> None:
        """Close every runner (their launched processes keep running)."""
        with self._lock:
            runners, self._runners = list(self._runners.values()), {}
        for runner in runners:
            try:
                runner.close()
            except Exception:
                logger.exception("closing the %s runner failed", runner.name)


class Dispatcher:
    """The dispatcher's blocking work: :meth:`claim` due runs, :meth:`submit` one run."""

    def __init__(
        self,
        client: Client,
        runners: RunnerPool,
        *,
        dispatch_runners: frozenset[str] | set[str] | list[str],
        default_runner: str = "subprocess",
        runner_defaults: dict[str, dict[str, Any]] | None = None,
        global_limit: int | None = None,
        root_dir: str | None = None,
        publish: Publish | None = None,
    ) -> None:
        self.client = client
        self.runners = runners
        self.dispatch_runners = frozenset(dispatch_runners)
        self.default_runner = default_runner
        self.runner_defaults = runner_defaults or {}
        self.global_limit = global_limit
        self.root_dir = root_dir
        self._publish = publish
        #: Run id -> the waiting message already logged for it (logged once per change).
        self._waiting: dict[UUID, str] = {}
        #: Deployments read in this pass (their limits and job variables).
        self._deployments: dict[UUID, Deployment | None] = {}
        #: Whether the last pass left due runs unexamined.
        self.more = False

    def runner_name(self, run: FlowRun) -> str:
        """Return the runner that executes ``run``."""
        return run.runner or self.default_runner

    def _announce(self, run: FlowRun, state: State | None = None) -> None:
        if self._publish is not None:
            self._publish(run.model_copy(update={"state": state}) if state else run)

    def _ours(self, run: FlowRun) -> bool:
        return run.mode == "batch" and self.runner_name(run) in self.dispatch_runners

    # -- claiming ------------------------------------------------------------------------
    def claim(self, at: datetime | None = None) -> list[FlowRun]:
        """Claim the due runs that fit the concurrency limits; return them (now Pending).

        One pass looks at up to ``_PAGE`` due runs of its runners; :attr:`more` tells
        whether there may be more (the service then passes again at once).
        """
        at = at or now()
        self._deployments = {}
        due: list[FlowRun] = []
        flt = FlowRunFilter(
            state_types=[StateType.SCHEDULED], start_before=at, sort="expected_start_asc"
        )
        for run in iter_runs(self.client, flt, most=_MAX_DUE):
            if self._ours(run):
                due.append(run)
                if len(due) >= _PAGE:
                    break
        self.more = len(due) >= _PAGE
        if not due:
            self._waiting.clear()
            return []
        running = self._running_batch_runs() if self.global_limit is not None else 0
        per_deployment: dict[UUID, int] = {}
        claimed: list[FlowRun] = []
        waiting: dict[UUID, str] = {}
        for run in due:
            reason = None
            if self.global_limit is not None and running >= self.global_limit:
                reason = (
                    f"waiting for a concurrency slot ({running}/{self.global_limit} runs "
                    "running across deployments)"
                )
            elif run.deployment_id is not None:
                limit = self._deployment_limit(run.deployment_id)
                if limit is not None:
                    used = per_deployment.get(run.deployment_id)
                    if used is None:
                        used = per_deployment[run.deployment_id] = self.client.count_flow_runs(
                            FlowRunFilter(
                                deployment_ids=[run.deployment_id], state_types=ACTIVE_TYPES
                            )
                        )
                    if used >= limit:
                        reason = (
                            f"waiting for a concurrency slot ({used}/{limit} runs of its "
                            "deployment running)"
                        )
            if reason is not None:
                waiting[run.id] = reason
                continue
            state = Pending(message="claimed by the server's dispatcher")
            result = self.client.set_flow_run_state(run.id, state)
            if result.status is not SetStateStatus.ACCEPT:
                logger.debug("flow run %s: claim %s (%s)", run.id, result.status, result.reason)
                continue
            running += 1
            if run.deployment_id in per_deployment:
                per_deployment[run.deployment_id] += 1
            claimed.append(run.model_copy(update={"state": result.state or state}))
            self._announce(run, result.state or state)
        self._log_waiting(waiting)
        return claimed

    def _running_batch_runs(self) -> int:
        """Count the batch runs holding a slot (interactive and in-process runs do not)."""
        active = iter_runs(self.client, FlowRunFilter(state_types=ACTIVE_TYPES))
        return sum(1 for r in active if r.mode == "batch")

    def _deployment(self, deployment_id: UUID) -> Deployment | None:
        """Return the deployment (read once per pass), None if it was deleted."""
        cache = self._deployments
        if deployment_id not in cache:
            try:
                cache[deployment_id] = self.client.read_deployment(deployment_id)
            except NotFound:
                cache[deployment_id] = None
        return cache[deployment_id]

    def _deployment_limit(self, deployment_id: UUID) -> int | None:
        deployment = self._deployment(deployment_id)
        return deployment.concurrency_limit if deployment is not None else None

    def _log_waiting(self, waiting: dict[UUID, str]) -> None:
        new = [(rid, msg) for rid, msg in waiting.items() if self._waiting.get(rid) != msg]
        self._waiting = waiting
        if not new:
            return
        logger.info("%d due run(s) wait for a concurrency slot", len(waiting))
        logs = [
            Log(flow_run_id=rid, level=logging.INFO, logger="nbflow.dispatcher", message=msg)
            for rid, msg in new
        ]
        try:
            self.client.write_logs(logs)
        except Exception:
            logger.warning("could not log the waiting runs", exc_info=True)

    @property
    def waiting(self) -> dict[UUID, str]:
        """Due runs held back by a concurrency limit, with the reason (from the last pass)."""
        return dict(self._waiting)

    # -- submitting ----------------------------------------------------------------------
    def job_variables(self, run: FlowRun, runner: Runner) -> dict[str, Any]:
        """Return runner defaults ⊕ deployment job variables (the runner adds the run's)."""
        name = self.runner_name(run)
        deployment = self._deployment(run.deployment_id) if run.deployment_id else None
        deployment_vars = deployment.job_variables if deployment is not None else {}
        merged = merge_job_variables(self.runner_defaults.get(name), deployment_vars)
        fields = runner.job_variables_model.model_fields
        ad_hoc = run.deployment_id is None and bool(run.notebook_path)
        chosen = merged.get("working_dir") or run.job_variables.get("working_dir")
        if ad_hoc and self.root_dir and "working_dir" in fields and not chosen:
            # Ad-hoc notebook paths are relative to the server root.
            merged["working_dir"] = self.root_dir
        return merged

    def submit(self, run: FlowRun) -> str | None:
        """Start a claimed run on its runner; return the infrastructure id (None: not started)."""
        state = Submitting()
        result = self.client.set_flow_run_state(run.id, state)
        if result.status is not SetStateStatus.ACCEPT:
            logger.info("flow run %s: not submitted: %s", run.id, result.reason)
            return None
        self._announce(run, result.state or state)
        name = self.runner_name(run)
        try:
            runner = self.runners.get(name)
            infrastructure_id = runner.submit(run, self.job_variables(run, runner))
        except Exception as exc:
            logger.warning("flow run %s: the %s runner failed: %s", run.id, name, exc)
            crashed = Crashed(message=f"the {name} runner could not start the run: {exc}")
            if self.client.set_flow_run_state(run.id, crashed).status is SetStateStatus.ACCEPT:
                self._announce(run, crashed)
            return None
        self.client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
        logger.info("flow run %s: submitted to %s as %s", run.id, name, infrastructure_id)
        return infrastructure_id

    def wait(self, run: FlowRun, infrastructure_id: str) -> None:
        """Wait for a submitted run's process to exit, then announce the run's state."""
        runner = self.runners.get(self.runner_name(run))
        try:
            runner.wait(infrastructure_id)
        except Exception:
            logger.debug("cannot wait for %s", infrastructure_id, exc_info=True)
            return
        try:
            self._announce(self.client.read_flow_run(run.id))
        except NotFound:
            pass


class DispatcherService(PeriodicService):
    """Claim due runs every ``interval`` seconds and submit them from a thread pool."""

    name = "dispatcher"

    def __init__(self, dispatcher: Dispatcher, *, interval: float, workers: int = 4) -> None:
        super().__init__(interval)
        self.dispatcher = dispatcher
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None
        self._pending: set[Future[Any]] = set()
        self._event_loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        """Create the submission pool and start the loop."""
        self._event_loop = asyncio.get_running_loop()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="nbflow-dispatch")
        await super().start()

    async def tick(self) -> None:
        """Claim what is due and fits, then submit the claimed runs off the event loop."""
        loop = asyncio.get_running_loop()
        claimed = await loop.run_in_executor(self._pool, self.dispatcher.claim)
        for run in claimed:
            self._track(self._pool_or_fail().submit(self._submit_and_watch, run))
        if self.dispatcher.more:
            self.wake()

    def _pool_or_fail(self) -> ThreadPoolExecutor:
        if self._pool is None:
            raise RuntimeError("the dispatcher is not started")
        return self._pool

    def _track(self, future: Future[Any]) -> None:
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    def _submit_and_watch(self, run: FlowRun) -> None:
        infrastructure_id = self.dispatcher.submit(run)
        if infrastructure_id is None:
            self._wake_soon()
            return
        # Waiting takes as long as the run: a thread of its own, not one of the pool's.
        threading.Thread(
            target=self._watch, args=(run, infrastructure_id), name="nbflow-wait", daemon=True
        ).start()

    def _watch(self, run: FlowRun, infrastructure_id: str) -> None:
        self.dispatcher.wait(run, infrastructure_id)
        self._wake_soon()

    def _wake_soon(self) -> None:
        """Dispatch again at once: a slot may have been freed."""
        loop = self._event_loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self.wake)
            except RuntimeError:
                pass

    async def stop(self) -> None:
        """Stop the loop and wait for submissions in progress (not for the runs)."""
        await super().stop()
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        self._event_loop = None
