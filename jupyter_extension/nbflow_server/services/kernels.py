"""The server owns the interactive runs of its kernels: cancel interrupts, death crashes.

A kernel this server started knows its id (``NBFLOW__KERNEL_ID``, see
:mod:`nbflow_server.services.kernel_env`) and records ``kernel:<id>`` as the
infrastructure of each interactive run it starts.  This service acts on those runs:

- **Cancel.** A run that becomes Cancelling (any path: the API, the CLI, the panel, the
  widget — every cancel goes through the lifecycle and the handlers publish the change on
  the event bus; a pass every ``interval`` seconds catches cancels made by other processes
  on the same store) has its kernel interrupted through the kernel manager.  The running
  ``%%task`` cell gets a ``KeyboardInterrupt``; the kernel ends the task run and the run
  Cancelled.  A kernel that is idle (no cell to interrupt) has its run Cancelled here.  A
  kernel still busy ``interrupt_grace`` seconds later ignored the interrupt: the run is
  Cancelled anyway, its state's data and the published event say ``kernel_stopped:
  false`` (a front end can offer a restart).
- **Death and restart.** A kernel the server shuts down or restarts (the kernels API,
  JupyterLab's menu), or that dies (the kernel restarter's ``restart``/``dead`` callbacks;
  its poll, every ``KernelRestarter.time_to_dead`` = 3 s by default, is shortened to
  ``death_poll`` for the kernels watched here), has its in-progress runs Crashed, or
  Cancelled when they were Cancelling.  Runs of kernels of
  other servers are left to the heartbeat monitor.

Nothing in ``nbflow`` knows about this: the lifecycle only sets Cancelling.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any
from uuid import UUID

from jupyter_core.utils import ensure_async

from nbflow.client.base import Client
from nbflow.schemas import FlowRun, FlowRunFilter, SetStateStatus
from nbflow.states import Cancelled, Crashed, State, StateType
from nbflow_server.services.base import PeriodicService
from nbflow_server.services.dispatcher import iter_runs

__all__ = ["KERNEL_PREFIX", "KernelRunsService", "kernel_of"]

logger = logging.getLogger("nbflow.server.kernels")

#: Prefix of the infrastructure id of an interactive run in a kernel of a Jupyter server.
KERNEL_PREFIX = "kernel:"
_MARK = "_nbflow_kernel_runs"
_IN_PROGRESS = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
#: Seconds between two looks at a run being interrupted.
_POLL = 0.1

#: Publishes an event dict on the server's event bus.
Publish = Callable[[dict[str, Any]], None]
#: Builds the flow_run_state event of a run.
RunEvent = Callable[[FlowRun], dict[str, Any]]


def kernel_of(run: FlowRun | dict[str, Any]) -> str | None:
    """Return the kernel id of an interactive run in a server's kernel, else None."""
    if isinstance(run, dict):
        mode, infrastructure = run.get("mode"), run.get("infrastructure_id")
    else:
        mode, infrastructure = run.mode, run.infrastructure_id
    if mode != "interactive" or not isinstance(infrastructure, str):
        return None
    if not infrastructure.startswith(KERNEL_PREFIX):
        return None
    return infrastructure[len(KERNEL_PREFIX) :] or None


class KernelRunsService(PeriodicService):
    """Interrupt the kernel of a cancelled run; crash the runs of a kernel that goes away."""

    name = "kernel runs"

    def __init__(
        self,
        client: Client,
        kernel_manager: Any,
        *,
        subscribe: Callable[[Callable[[dict[str, Any]], None]], Callable[[], None]],
        publish: Publish,
        run_event: RunEvent,
        interrupt_grace: float,
        interval: float,
        death_poll: float | None = None,
    ) -> None:
        super().__init__(interval)
        self.client = client
        self.kernel_manager = kernel_manager
        self.interrupt_grace = interrupt_grace
        self.death_poll = death_poll
        self._subscribe = subscribe
        self._publish = publish
        self._run_event = run_event
        self._unsubscribe: Callable[[], None] | None = None
        self._server_loop: asyncio.AbstractEventLoop | None = None
        #: Runs whose kernel is being interrupted (each is interrupted once).
        self._interrupting: set[UUID] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._watched: set[str] = set()  # kernels with our restart callbacks
        self._callbacks: dict[tuple[str, str], Callable[[], None]] = {}

    # -- start and stop --------------------------------------------------------------------
    async def start(self) -> None:
        """Hook the kernel manager, listen to the event bus, start the periodic pass."""
        self._server_loop = asyncio.get_running_loop()
        self._hook_kernel_manager()
        for kernel_id in list(self.kernel_manager.list_kernel_ids()):
            self._watch(kernel_id)
        self._unsubscribe = self._subscribe(self._on_event)
        await super().start()

    async def stop(self) -> None:
        """Stop listening and the pending interrupts."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        await super().stop()
        for task in list(self._tasks):
            task.cancel()
        self._server_loop = None

    def _hook_kernel_manager(self) -> None:
        """Wrap start, restart and shutdown of the server's kernel manager (once)."""
        km = self.kernel_manager
        if getattr(km, _MARK, None) is not None:
            setattr(km, _MARK, self)  # a new service of the same server takes over
            return
        setattr(km, _MARK, self)
        start, restart, shutdown = km.start_kernel, km.restart_kernel, km.shutdown_kernel

        def service() -> KernelRunsService | None:
            current = getattr(km, _MARK, None)
            return (
                current if isinstance(current, KernelRunsService) and current._server_loop else None
            )

        @functools.wraps(start)
        async def start_kernel(*args: Any, **kwargs: Any) -> Any:
            kernel_id = await ensure_async(start(*args, **kwargs))
            if (svc := service()) is not None:
                svc._watch(kernel_id)
            return kernel_id

        @functools.wraps(restart)
        async def restart_kernel(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
            # Before the restart: the restarted kernel's first run must not be crashed.
            if (svc := service()) is not None:
                await svc.end_kernel_runs(kernel_id, "was restarted")
            result = await ensure_async(restart(kernel_id, *args, **kwargs))
            if (svc := service()) is not None:
                svc._watch(kernel_id, again=True)
            return result

        @functools.wraps(shutdown)
        async def shutdown_kernel(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
            # Before the shutdown: the kernel's exit must not end its run as it likes.
            if (svc := service()) is not None:
                svc._watched.discard(kernel_id)
                svc._callbacks.pop((kernel_id, "restart"), None)
                svc._callbacks.pop((kernel_id, "dead"), None)
                await svc.end_kernel_runs(kernel_id, "was shut down")
            return await ensure_async(shutdown(kernel_id, *args, **kwargs))

        km.start_kernel = start_kernel
        km.restart_kernel = restart_kernel
        km.shutdown_kernel = shutdown_kernel

    def _watch(self, kernel_id: str, *, again: bool = False) -> None:
        """Add restart callbacks to the kernel: a death crashes its runs."""
        if kernel_id in self._watched and not again:
            return
        try:
            kernel = self.kernel_manager.get_kernel(kernel_id)
        except KeyError:
            return
        if kernel_id in self._watched:
            kernel.remove_restart_callback(self._callback(kernel_id, "restart"), "restart")
            kernel.remove_restart_callback(self._callback(kernel_id, "dead"), "dead")
        kernel.add_restart_callback(self._callback(kernel_id, "restart"), "restart")
        kernel.add_restart_callback(self._callback(kernel_id, "dead"), "dead")
        self._watched.add(kernel_id)
        self._tune_restarter(kernel)

    def _tune_restarter(self, kernel: Any) -> None:
        """Poll the kernel's liveness every ``death_poll`` s (the restarter keeps the value
        across restarts; its timer takes a new period only when restarted)."""
        restarter = getattr(kernel, "_restarter", None)
        if self.death_poll is None or restarter is None:
            return
        if getattr(restarter, "time_to_dead", None) == self.death_poll:
            return
        restarter.time_to_dead = self.death_poll
        if getattr(restarter, "_pcallback", None) is not None:
            restarter.stop()
            restarter.start()

    def _callback(self, kernel_id: str, event: str) -> Callable[[], None]:
        """The restart callback of ``kernel_id`` for ``event`` (the same one each time)."""
        key = (kernel_id, event)
        if key not in self._callbacks:
            why = "died and is being restarted" if event == "restart" else "died"

            def on_death() -> None:
                self._spawn(self.end_kernel_runs(kernel_id, why))

            self._callbacks[key] = on_death
        return self._callbacks[key]

    def _spawn(self, coro: Any) -> None:
        """Run ``coro`` as a task of the server's loop (from any thread)."""
        loop = self._server_loop
        if loop is None or loop.is_closed():
            coro.close()
            return

        def create() -> None:
            task = loop.create_task(coro)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        try:
            if asyncio.get_running_loop() is loop:
                create()
                return
        except RuntimeError:
            pass
        loop.call_soon_threadsafe(create)

    # -- death and restart -----------------------------------------------------------------
    async def end_kernel_runs(self, kernel_id: str, why: str) -> list[FlowRun]:
        """End the in-progress runs of ``kernel_id``: Crashed (Cancelled if Cancelling)."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, self._end_kernel_runs, kernel_id, why)
        except Exception:
            logger.exception("nbflow: could not end the runs of kernel %s", kernel_id)
            return []

    def _end_kernel_runs(self, kernel_id: str, why: str) -> list[FlowRun]:
        ended = []
        for run in list(iter_runs(self.client, FlowRunFilter(state_types=_IN_PROGRESS))):
            if kernel_of(run) != kernel_id:
                continue
            state: State
            if run.state_type is StateType.CANCELLING:
                state = Cancelled(message=f"cancelled; its kernel {why}")
            else:
                state = Crashed(
                    message=f"the kernel running this interactive run {why} (kernel {kernel_id})"
                )
            done = self._propose(run, state)
            if done is not None:
                ended.append(done)
        return ended

    # -- cancel ----------------------------------------------------------------------------
    def _on_event(self, event: dict[str, Any]) -> None:
        """React to a run turning Cancelling (called on any thread: be quick)."""
        if event.get("type") != "flow_run_state":
            return
        state = event.get("state") or {}
        run = event.get("flow_run") or {}
        if state.get("type") != StateType.CANCELLING.value:
            return
        kernel_id = kernel_of(run)
        if kernel_id is None or kernel_id not in self.kernel_manager:
            return
        self._begin_interrupt(UUID(str(run["id"])), kernel_id)

    def _begin_interrupt(self, flow_run_id: UUID, kernel_id: str) -> None:
        if flow_run_id in self._interrupting:
            return
        self._interrupting.add(flow_run_id)
        self._spawn(self.interrupt(flow_run_id, kernel_id))

    async def tick(self) -> None:
        """Interrupt the kernels of Cancelling runs this server has not seen turn Cancelling."""
        loop = asyncio.get_running_loop()
        runs = await loop.run_in_executor(None, self._cancelling_runs)
        for run in runs:
            kernel_id = kernel_of(run)
            if kernel_id is not None and kernel_id in self.kernel_manager:
                self._begin_interrupt(run.id, kernel_id)

    def _cancelling_runs(self) -> list[FlowRun]:
        flt = FlowRunFilter(state_types=[StateType.CANCELLING])
        return [r for r in iter_runs(self.client, flt) if kernel_of(r) is not None]

    async def interrupt(self, flow_run_id: UUID, kernel_id: str) -> None:
        """Interrupt the run's kernel; end the run Cancelled if the kernel does not."""
        loop = asyncio.get_running_loop()
        try:
            kernel = self.kernel_manager.get_kernel(kernel_id)
            logger.info(
                "nbflow: flow run %s is cancelling: interrupting kernel %s", flow_run_id, kernel_id
            )
            await ensure_async(kernel.interrupt_kernel())
            end = loop.time() + self.interrupt_grace
            idle_since: float | None = None
            while True:
                run = await loop.run_in_executor(None, self.client.read_flow_run, flow_run_id)
                if run.state is None or run.state.type is not StateType.CANCELLING:
                    return  # the kernel ended it (or someone else did)
                # Idle for a moment: no cell was interrupted (the run was between cells).  A
                # cell the interrupt ended stores its own Cancelled before the kernel idles.
                if getattr(kernel, "execution_state", None) == "idle":
                    idle_since = idle_since if idle_since is not None else loop.time()
                    if loop.time() - idle_since >= 3 * _POLL:
                        await loop.run_in_executor(
                            None,
                            self._propose,
                            run,
                            Cancelled(
                                message="cancelled between cells (its kernel was idle)",
                                data={"kernel_id": kernel_id, "kernel_stopped": True},
                            ),
                        )
                        return
                else:
                    idle_since = None
                if loop.time() >= end:
                    break
                await asyncio.sleep(_POLL)
            message = (
                f"cancelled; its kernel {kernel_id} ignored the interrupt for "
                f"{self.interrupt_grace:g} s and may still be executing: restart the kernel "
                "to stop it"
            )
            state = Cancelled(
                message=message, data={"kernel_id": kernel_id, "kernel_stopped": False}
            )
            await loop.run_in_executor(
                None, self._propose, run, state, {"kernel_id": kernel_id, "stopped": False}
            )
        except KeyError:
            logger.info("nbflow: kernel %s of flow run %s is gone", kernel_id, flow_run_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception(
                "nbflow: interrupting kernel %s for flow run %s failed", kernel_id, flow_run_id
            )
        finally:
            self._interrupting.discard(flow_run_id)

    # -- proposing -------------------------------------------------------------------------
    def _propose(
        self, run: FlowRun, state: State, kernel: dict[str, Any] | None = None
    ) -> FlowRun | None:
        """Propose ``state``; publish the change (with ``kernel`` facts); None if refused."""
        result = self.client.set_flow_run_state(run.id, state)
        if result.status is not SetStateStatus.ACCEPT:
            logger.debug("flow run %s: %s %s (%s)", run.id, state, result.status, result.reason)
            return None
        logger.info("flow run %s: %s: %s", run.id, state.name, state.message)
        done = run.model_copy(update={"state": result.state or state})
        event = self._run_event(done)
        if kernel is not None:
            event["kernel"] = kernel
        self._publish(event)
        return done
