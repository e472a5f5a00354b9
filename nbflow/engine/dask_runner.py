"""``DaskTaskRunner``: run task runs on a ``dask.distributed`` cluster.

Each task run executes the task engine on a worker with a collecting sink; its states,
logs and result come back with the Dask future and are replayed into the flow's recorder,
so the store holds worker-side runs like local ones.  Arguments and functions travel with
cloudpickle (Dask's serialization).  ``dask.distributed`` is imported only here.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any

from nbflow.engine.futures import OutcomeFuture
from nbflow.engine.task_engine import DetachedOutcome, Outcome, TaskCall, fast_state, run_detached
from nbflow.engine.task_runners import TaskRunner
from nbflow.exceptions import NbflowError
from nbflow.states import StateType

__all__ = ["DaskTaskRunner"]


def _distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise NbflowError(
            "DaskTaskRunner needs dask.distributed: pip install 'nbflow[dask]'"
        ) from exc
    return distributed


class DaskTaskRunner(TaskRunner):
    """Submit task runs to a Dask cluster: an existing one (``address``) or a new LocalCluster."""

    name = "dask"

    def __init__(
        self,
        address: str | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
    ) -> None:
        self.address = address
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self._client: Any = None
        self._cluster: Any = None

    def duplicate(self) -> DaskTaskRunner:
        """Return an unstarted runner with the same configuration."""
        return DaskTaskRunner(self.address, self.cluster_kwargs, self.client_kwargs)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` (after :meth:`start`)."""
        return self._client

    def start(self) -> None:
        """Connect to ``address`` or start a LocalCluster."""
        if self._client is not None:
            return
        distributed = _distributed()
        address = self.address
        if address is None:
            self._cluster = distributed.LocalCluster(**self.cluster_kwargs)
            address = self._cluster.scheduler_address
        self._client = distributed.Client(address, **self.client_kwargs)

    def shutdown(self) -> None:
        """Close the client, and the cluster when this runner started it."""
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()

    def _submit(self, call: TaskCall) -> OutcomeFuture:
        if any(not f.outcome().state.is_final_success for f in call.upstream.values()) or (
            call.is_cancelled is not None and call.is_cancelled()
        ):
            # Not going to run: record NotReady/Cancelled here, no worker needed.
            done: concurrent.futures.Future[Outcome] = concurrent.futures.Future()
            done.set_result(call.run_sync())
            return done
        if self._client is None:
            self.start()
        detached = call.detach()
        key = f"{call.options.name}-{call.task_run.id}"
        dask_future = self._client.submit(run_detached, detached, key=key, pure=False)
        outer: concurrent.futures.Future[Outcome] = concurrent.futures.Future()

        def finished(fut: Any) -> None:
            try:
                remote: DetachedOutcome = fut.result()
                outer.set_result(call.absorb(remote))
            except BaseException as exc:
                message = f"{type(exc).__name__}: {exc}"
                call.task_run.state = state = fast_state(StateType.CRASHED, "Crashed", message)
                call.sink.transition(call.task_run, state)
                outer.set_result(Outcome(state, None, exc))

        dask_future.add_done_callback(finished)
        return outer
