"""``nbflow worker``: claim due runs of one runner from a server, submit and watch them.

A worker is the server's dispatcher living elsewhere (near a Docker daemon or inside a
cluster).  It talks to the server over its REST API only (``NBFLOW_API_URL`` and the
user's token).  Each pass:

1. reads the due runs: ``Scheduled`` with ``expected_start_time <= now``, batch mode, whose
   runner is this worker's (the run's ``runner``, else its deployment's);
2. claims each by proposing ``Pending`` through the orchestration gate, which accepts one
   claim only: a run is claimed exactly once, even when the server's dispatcher
   (``NbflowApp.dispatch_runners``) or other workers race for it;
3. proposes ``Submitting``, submits the run with its deployment's job variables (the
   runner adds the run's own), records the infrastructure id, and watches the run in a
   thread (the runner reports a non-zero exit of an unfinished run as Crashed).

``limit`` caps the runs this worker has in flight.  Each run's process gets a per-run
token that the server mints for it (``POST /flow_runs/{id}/token``): it may report on its
own run only, and never sees the worker's (the user's) token.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any
from uuid import UUID

from nbflow.client.base import Client
from nbflow.exceptions import NotFound, ValidationError
from nbflow.runners.base import Runner, TokenFactory
from nbflow.schemas import FlowRun, FlowRunFilter, SetStateStatus
from nbflow.states import Crashed, Pending, StateType, Submitting, now

__all__ = ["Worker", "server_token_factory"]

logger = logging.getLogger("nbflow.worker")

_PAGE = 200


def server_token_factory(client: Any) -> TokenFactory:
    """Return a factory of per-run tokens minted by the server (``POST /flow_runs/{id}/token``).

    A run's process then holds a token for its own run only, never the worker's token.
    """
    return lambda run: str(client.mint_run_token(run.id))


class Worker:
    """Poll a server for due runs of one runner, claim them once, submit and watch them."""

    def __init__(
        self,
        client: Client,
        runner: Runner,
        *,
        runner_name: str | None = None,
        limit: int | None = None,
        name: str | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        """Create a worker for ``runner`` (its registered name, or ``runner_name``)."""
        if limit is not None and limit < 1:
            raise ValidationError("limit", limit, "must be at least 1", "or None for no limit")
        self.client = client
        self.runner = runner
        self.runner_name = runner_name or runner.name
        self.limit = limit
        self.name = name or f"{socket.gethostname()}/{self.runner_name}"
        self._on_event = on_event
        self._lock = threading.Lock()
        self._active: dict[UUID, str | None] = {}
        self._deployment_runners: dict[UUID, str | None] = {}
        #: Runs this worker claimed (and then submitted or crashed), oldest first.
        self.claimed: list[UUID] = []

    def _event(self, text: str) -> None:
        logger.info("%s", text)
        if self._on_event is not None:
            self._on_event(text)

    @property
    def active(self) -> int:
        """How many runs this worker has in flight (claimed and not yet exited)."""
        with self._lock:
            return len(self._active)

    # -- claiming --------------------------------------------------------------------------
    def _runner_of(self, run: FlowRun) -> str | None:
        if run.runner:
            return run.runner
        if run.deployment_id is None:
            return None
        if run.deployment_id not in self._deployment_runners:
            try:
                runner = self.client.read_deployment(run.deployment_id).runner
            except NotFound:
                runner = None
            self._deployment_runners[run.deployment_id] = runner
        return self._deployment_runners[run.deployment_id]

    def due_runs(self) -> list[FlowRun]:
        """Return the due Scheduled batch runs of this worker's runner, oldest first."""
        flt = FlowRunFilter(
            state_types=[StateType.SCHEDULED],
            start_before=now(),
            sort="expected_start_asc",
            limit=_PAGE,
        )
        return [
            run
            for run in self.client.read_flow_runs(flt)
            if run.mode == "batch" and self._runner_of(run) == self.runner_name
        ]

    def claim(self) -> list[FlowRun]:
        """Claim due runs (propose Pending) up to the limit; return the claimed ones."""
        claimed: list[FlowRun] = []
        for run in self.due_runs():
            if self.limit is not None and self.active + len(claimed) >= self.limit:
                break
            result = self.client.set_flow_run_state(
                run.id, Pending(message=f"claimed by worker {self.name}")
            )
            if result.status is not SetStateStatus.ACCEPT:
                logger.debug("flow run %s: claim %s (%s)", run.id, result.status, result.reason)
                continue
            with self._lock:
                self._active[run.id] = None
                self.claimed.append(run.id)
            claimed.append(run.model_copy(update={"state": result.state}))
        return claimed

    # -- submitting ------------------------------------------------------------------------
    def job_variables(self, run: FlowRun) -> dict[str, Any]:
        """Return the deployment's job variables (the runner puts the run's on top)."""
        if run.deployment_id is None:
            return {}
        try:
            return dict(self.client.read_deployment(run.deployment_id).job_variables)
        except NotFound:
            return {}

    def submit(self, run: FlowRun) -> str | None:
        """Submit a claimed run; start watching it; return the infrastructure id."""
        result = self.client.set_flow_run_state(run.id, Submitting())
        if result.status is not SetStateStatus.ACCEPT:
            self._done(run.id)
            self._event(f"flow run {run.id}: not submitted ({result.reason})")
            return None
        try:
            infrastructure_id = self.runner.submit(run, self.job_variables(run))
        except Exception as exc:
            self._done(run.id)
            self._event(f"flow run {run.id}: the {self.runner_name} runner failed: {exc}")
            self.client.set_flow_run_state(
                run.id, Crashed(message=f"the {self.runner_name} runner could not start it: {exc}")
            )
            return None
        with self._lock:
            self._active[run.id] = infrastructure_id
        self.client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
        self._event(f"flow run {run.id} ({run.name}): submitted as {infrastructure_id}")
        threading.Thread(
            target=self._watch,
            args=(run, infrastructure_id),
            name="nbflow-worker-watch",
            daemon=True,
        ).start()
        return infrastructure_id

    def _watch(self, run: FlowRun, infrastructure_id: str) -> None:
        try:
            code = self.runner.wait(infrastructure_id)
            state = self.client.read_flow_run(run.id).state
            self._event(f"flow run {run.id}: exited with {code}; {state.name if state else '-'}")
        except Exception:
            logger.exception("flow run %s: lost track of %s", run.id, infrastructure_id)
        finally:
            self._done(run.id)

    def _done(self, run_id: UUID) -> None:
        with self._lock:
            self._active.pop(run_id, None)

    # -- the loop ----------------------------------------------------------------------------
    def run_once(self) -> list[str]:
        """One pass: claim and submit; return the infrastructure ids submitted."""
        started = []
        for run in self.claim():
            infrastructure_id = self.submit(run)
            if infrastructure_id is not None:
                started.append(infrastructure_id)
        return started

    def serve(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Pass every ``interval`` seconds until ``stop`` is set."""
        self._event(
            f"worker {self.name}: polling for {self.runner_name} runs"
            + (f" (at most {self.limit} at once)" if self.limit else "")
        )
        while not stop.is_set():
            try:
                self.run_once()
            except Exception:
                logger.exception("worker pass failed; retrying in %g s", interval)
            stop.wait(interval)

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until no run is in flight; False when ``timeout`` passed first."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True
