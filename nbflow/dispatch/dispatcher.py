"""The dispatcher: claim due runs, submit them to their runner, watch them, stop them.

One class serves the server (``services/dispatcher.py`` drives it over the embedded
client) and ``nbflow worker`` (over the HTTP client).  Each pass:

1. **Stop** the Cancelling runs of its runners that have infrastructure:
   ``runner.kill(infrastructure id, grace)`` in a thread (Docker: stop and remove the
   container; Kubernetes: delete the Job with propagation, its pods and its Secret), then
   propose ``Cancelled`` unless ``nbflow execute`` got there first.
2. **Claim** through ``client.claim_flow_runs``: the store picks the due runs that fit
   every concurrency limit inside one transaction (see
   :mod:`nbflow.orchestration.store.claims`) and returns each with its merged job
   variables and its run token.
3. **Submit** each claimed run from a small thread pool: propose ``Submitting``, call
   ``runner.submit(run, job variables)``, record the infrastructure id.  A submission that
   raises is ``Crashed`` with the reason.
4. **Watch** each submitted process in a thread: ``runner.wait``; a non-zero exit of a run
   that is not terminal is ``Crashed`` (``Cancelled`` when it was Cancelling).  The slot is
   free at once, so the next pass starts (``wake``).

Between passes :meth:`Dispatcher.serve` (``nbflow worker``) waits ``interval`` seconds, or
until the soonest Scheduled run's expected start (:meth:`Dispatcher.next_due`); the
server's loop also wakes when a run becomes due (``services/dispatcher.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from nbflow.client.base import Client
from nbflow.exceptions import NbflowError, NotFound, ValidationError
from nbflow.runners.base import Runner
from nbflow.schemas import ClaimedRun, FlowRun, FlowRunFilter, SetStateStatus
from nbflow.states import Cancelled, Crashed, State, StateType, Submitting, now

__all__ = ["CLAIM_BATCH", "DUE_SLACK", "Announce", "Dispatcher", "RunnerFactory", "RunnerPool"]

logger = logging.getLogger("nbflow.dispatch")

#: Seconds past a run's expected start at which the pass that claims it runs (clock slack).
DUE_SLACK = 0.005
#: Most runs claimed in one pass (the next pass follows at once when it was full).
CLAIM_BATCH = 100
#: Builds the runner registered under a name.
RunnerFactory = Callable[[str], Runner]
#: Receives a run whose state changed (the server announces it on its event stream).
Announce = Callable[[FlowRun], None]


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


@dataclass
class _Owned:
    """A run this dispatcher claimed: its runner, its token and its infrastructure."""

    run: FlowRun
    runner: str
    token: str | None
    infrastructure_id: str | None = None


class Dispatcher:
    """Claim, submit, watch and stop the runs of some runners, over any client."""

    def __init__(
        self,
        client: Client,
        runners: RunnerPool,
        *,
        runner_names: Iterable[str],
        claimer: str,
        limit: int | None = None,
        kill_grace: float = 30.0,
        root_dir: str | None = None,
        announce: Announce | None = None,
        submit_threads: int = 4,
        claim_wait: float = 0.0,
    ) -> None:
        """Dispatch runs of ``runner_names``; ``limit`` caps the runs in flight (None: no cap).

        ``claim_wait`` > 0 makes each claim a long poll (a worker over the API): the server
        answers as soon as a run is due, so :meth:`serve` does not sleep after one.
        """
        if limit is not None and limit < 1:
            raise ValidationError("limit", limit, "must be at least 1", "or None for no limit")
        self.client = client
        self.runners = runners
        self.runner_names = frozenset(runner_names)
        self.claimer = claimer
        self.limit = limit
        self.kill_grace = kill_grace
        #: Ad-hoc notebook paths are relative to this folder (the server's root).
        self.root_dir = root_dir
        self._announce = announce
        self._lock = threading.Lock()
        self._owned: dict[UUID, _Owned] = {}
        self._killing: set[UUID] = set()
        self._submit_pool = ThreadPoolExecutor(submit_threads, thread_name_prefix="nbflow-submit")
        self._kill_pool = ThreadPoolExecutor(4, thread_name_prefix="nbflow-kill")
        self._wake = threading.Event()
        #: Every run this dispatcher claimed, oldest first.
        self.claimed: list[UUID] = []
        #: Whether the last claim was full (more runs may be due now).
        self.more = False
        self.claim_wait = claim_wait
        #: Whether the last pass already waited for due runs (a long-polling claim).
        self.long_polled = False
        #: Called when a slot frees up or a run needs attention (the server's loop wakes).
        self.on_wake: Callable[[], None] | None = None

    # -- bookkeeping --------------------------------------------------------------------
    @property
    def active(self) -> int:
        """How many runs this dispatcher has in flight (claimed and not yet exited)."""
        with self._lock:
            return len(self._owned)

    def owns(self, flow_run_id: UUID) -> bool:
        """Whether this dispatcher claimed the run and its process has not exited yet."""
        with self._lock:
            return flow_run_id in self._owned

    def token_for(self, flow_run: FlowRun) -> str | None:
        """Return the token the claim minted for the run (runners' ``token_factory``)."""
        with self._lock:
            owned = self._owned.get(flow_run.id)
        return owned.token if owned is not None else None

    def wake(self) -> None:
        """Make the next pass start now (a slot was freed, a run needs attention)."""
        self._wake.set()
        if self.on_wake is not None:
            self.on_wake()

    def _tell(self, run: FlowRun, state: State | None = None) -> None:
        if self._announce is None:
            return
        try:
            self._announce(run.model_copy(update={"state": state}) if state else run)
        except Exception:
            logger.exception("flow run %s: announcing its state failed", run.id)

    def _propose(self, run: FlowRun, state: State) -> bool:
        result = self.client.set_flow_run_state(run.id, state)
        if result.status is not SetStateStatus.ACCEPT:
            logger.info("flow run %s: %s %s (%s)", run.id, state.name, result.status, result.reason)
            return False
        self._tell(run, result.state or state)
        return True

    # -- one pass -----------------------------------------------------------------------
    def pass_once(self) -> list[Future[str | None]]:
        """Stop what is cancelled, claim what is due and fits, submit it (in threads)."""
        self.stop_cancelling()
        return [self._submit_pool.submit(self.submit, claimed) for claimed in self.claim()]

    def run_once(self) -> list[str]:
        """One pass, waiting for its submissions; return the infrastructure ids started."""
        return [i for f in self.pass_once() if (i := f.result()) is not None]

    def serve(self, stop: threading.Event, interval: float = 2.0) -> None:
        """Pass every ``interval`` seconds, at once after :meth:`wake`, and at the expected
        start of the next Scheduled run when that comes sooner, until ``stop`` is set."""
        while not stop.is_set():
            self._wake.clear()
            timeout = interval
            try:
                self.pass_once()
                timeout = self.wait_time(self.next_due(), interval)
            except Exception:
                logger.exception("dispatch pass failed; retrying in %g s", interval)
            if not self.more and not self.long_polled:
                self._wake.wait(timeout)

    def next_due(self) -> datetime | None:
        """Return when the soonest Scheduled run that is not due yet becomes due (None: none)."""
        upcoming = self.client.read_flow_runs(FlowRunFilter(view="upcoming", limit=1))
        return upcoming[0].expected_start_time if upcoming else None

    @staticmethod
    def wait_time(due: datetime | None, interval: float) -> float:
        """Seconds to wait before the next pass: ``interval``, or less to meet ``due``."""
        if due is None:
            return interval
        return max(0.0, min(interval, (due - now()).total_seconds() + DUE_SLACK))

    def wait_all(self, timeout: float | None = None) -> bool:
        """Wait until no run is in flight; False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.active:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def close(self) -> None:
        """Wait for submissions and kills in progress; submitted runs keep running."""
        self._submit_pool.shutdown(wait=True)
        self._kill_pool.shutdown(wait=True)

    # -- claiming -----------------------------------------------------------------------
    def claim(self) -> list[ClaimedRun]:
        """Claim due runs of this dispatcher's runners that fit every limit (now Pending)."""
        batch = CLAIM_BATCH if self.limit is None else min(CLAIM_BATCH, self.limit - self.active)
        self.long_polled = False
        if batch < 1:
            self.more = False
            return []
        if self.claim_wait > 0:
            claimed = self.client.claim_flow_runs(
                sorted(self.runner_names),
                claimer=self.claimer,
                limit=batch,
                wait_seconds=self.claim_wait,
            )
            self.long_polled = True
        else:
            claimed = self.client.claim_flow_runs(
                sorted(self.runner_names), claimer=self.claimer, limit=batch
            )
        self.more = len(claimed) >= batch and (self.limit is None or batch == CLAIM_BATCH)
        with self._lock:
            for c in claimed:
                run = c.flow_run
                self._owned[run.id] = _Owned(run, run.runner or "", c.token)
                self.claimed.append(run.id)
        for c in claimed:
            self._tell(c.flow_run)
        return claimed

    # -- submitting ---------------------------------------------------------------------
    def submit(self, claimed: ClaimedRun) -> str | None:
        """Start a claimed run on its runner; return the infrastructure id (None: not started)."""
        run = claimed.flow_run
        name = run.runner or ""
        if not self._propose(run, Submitting()):
            self._release(run.id)
            return None
        try:
            runner = self.runners.get(name)
            infrastructure_id = runner.submit(run, self._job_variables(claimed, runner))
        except Exception as exc:
            logger.warning("flow run %s: the %s runner failed: %s", run.id, name, exc)
            self._release(run.id)
            self._propose(run, Crashed(message=f"the {name} runner could not start the run: {exc}"))
            return None
        with self._lock:
            owned = self._owned.get(run.id)
            if owned is not None:
                owned.infrastructure_id = infrastructure_id
        recorded = self.client.update_flow_run(run.id, infrastructure_id=infrastructure_id)
        self._tell(recorded)
        logger.info(
            "flow run %s (%s): submitted to %s as %s", run.id, run.name, name, infrastructure_id
        )
        threading.Thread(
            target=self._watch,
            args=(run, runner, infrastructure_id),
            name="nbflow-dispatch-watch",
            daemon=True,
        ).start()
        return infrastructure_id

    def _job_variables(self, claimed: ClaimedRun, runner: Runner) -> dict[str, Any]:
        """Return the claim's job variables, with the server root for notebook paths (an
        ad-hoc run's, or a deployment's: its file-mode runs read the file at run time)."""
        variables = dict(claimed.job_variables)
        run = claimed.flow_run
        has_path = bool(run.notebook_path)
        fields = runner.job_variables_model.model_fields
        if (
            has_path
            and self.root_dir
            and runner.shares_filesystem
            and "working_dir" in fields
            and not variables.get("working_dir")
        ):
            variables["working_dir"] = self.root_dir
        return variables

    def _release(self, flow_run_id: UUID) -> None:
        with self._lock:
            self._owned.pop(flow_run_id, None)
        self.wake()

    # -- watching -----------------------------------------------------------------------
    def _watch(self, run: FlowRun, runner: Runner, infrastructure_id: str) -> None:
        """Wait for the process; a non-zero exit of an unfinished run is Crashed."""
        try:
            code = runner.wait(infrastructure_id)
            if code is not None:
                # The runner's own watcher usually reported it already (then a no-op).
                runner.report_exit(run.id, code)
            self._tell(self.client.read_flow_run(run.id))
        except NotFound:
            pass
        except Exception:
            logger.exception("flow run %s: lost track of %s", run.id, infrastructure_id)
        finally:
            self._release(run.id)

    # -- cancelling ---------------------------------------------------------------------
    def stop_cancelling(self) -> int:
        """Start stopping every Cancelling run of this dispatcher's runners; return how many."""
        flt = FlowRunFilter(state_types=[StateType.CANCELLING], limit=1000)
        started = 0
        for run in self.client.read_flow_runs(flt):
            if not run.infrastructure_id or run.mode != "batch":
                continue
            name = run.runner or self._owned_runner(run.id)
            if name not in self.runner_names:
                continue
            with self._lock:
                if run.id in self._killing:
                    continue
                self._killing.add(run.id)
            self._kill_pool.submit(self._kill, run, name)
            started += 1
        return started

    def _owned_runner(self, flow_run_id: UUID) -> str | None:
        with self._lock:
            owned = self._owned.get(flow_run_id)
        return owned.runner if owned is not None else None

    def _kill(self, run: FlowRun, name: str) -> None:
        assert run.infrastructure_id is not None
        try:
            runner = self.runners.get(name)
            try:
                runner.kill(run.infrastructure_id, self.kill_grace)
            except NbflowError as exc:
                logger.warning(
                    "flow run %s: cannot stop %s: %s", run.id, run.infrastructure_id, exc
                )
                return  # the monitors' cancel timeout ends it
            current = self.client.read_flow_run(run.id)
            if current.state is not None and not current.state.is_terminal:
                self._propose(
                    current, Cancelled(message="cancelled; the run's process was stopped")
                )
            else:
                self._tell(current)
        except Exception:
            logger.exception("flow run %s: stopping it failed", run.id)
        finally:
            with self._lock:
                self._killing.discard(run.id)
