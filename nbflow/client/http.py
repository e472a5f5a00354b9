"""The HTTP client: the :class:`~nbflow.client.base.Client` interface over the server's REST API.

Every method is one request to ``<api_url>/...`` (the server extension's ``/nbflow/api/v1``),
sent with ``Authorization: token <token>`` (the user's Jupyter token, or inside a run the
per-run token).  Server errors come back as the exceptions the embedded client raises:
400 → :class:`~nbflow.exceptions.ValidationError` naming the field, 404 →
:class:`~nbflow.exceptions.NotFound` (``FlowRunNotFound`` for runs), 409 →
:class:`~nbflow.exceptions.ObjectAlreadyExists`; anything else → :class:`APIError`.
Batches larger than the server accepts are split.  Thread-safe (one ``httpx.Client``).
While the server is unreachable or answers 502/503/504, requests are retried with backoff
for ``NBFLOW_API_RETRY_SECONDS`` (see :mod:`nbflow.client.transport`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote
from uuid import UUID

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic_core import to_jsonable_python

from nbflow.client.base import Client, LogPage
from nbflow.client.transport import RetryingTransport, RetryMode
from nbflow.exceptions import (
    FlowRunNotFound,
    NbflowError,
    NotFound,
    ObjectAlreadyExists,
    TransitionRejected,
    ValidationError,
)
from nbflow.schemas import (
    Artifact,
    ClaimedRun,
    ConcurrencyLimit,
    Deployment,
    DeploymentCreate,
    Flow,
    FlowRun,
    FlowRunCreate,
    FlowRunFilter,
    Log,
    OrchestrationResult,
    TaskRun,
    TaskRunFilter,
)
from nbflow.settings import get_settings
from nbflow.states import State

__all__ = ["APIError", "HTTPClient", "RemoteValidationError"]

#: The most records the server takes in one batch request.
BATCH_SIZE = 5_000

_flows = TypeAdapter(list[Flow])
_deployments = TypeAdapter(list[Deployment])
_flow_runs = TypeAdapter(list[FlowRun])
_task_runs = TypeAdapter(list[TaskRun])
_states = TypeAdapter(list[State])
_logs = TypeAdapter(list[Log])
_artifacts = TypeAdapter(list[Artifact])
_claimed = TypeAdapter(list[ClaimedRun])
_limits = TypeAdapter(list[ConcurrencyLimit])


#: Longest long poll of a claim (well inside the client's 30 s request timeout).
MAX_CLAIM_WAIT = 20.0

#: How a run token starts (``nbflow_server.tokens`` mints them; a process holding one is a
#: run the server dispatched).
RUN_TOKEN_PREFIX = "nbflow-run."


class APIError(NbflowError):
    """The server refused a request for a reason with no nbflow exception (403, 5xx, ...).

    ``status_code`` is 0 when the server could not be reached at all.
    """

    def __init__(self, status_code: int, method: str, url: str, message: str) -> None:
        self.status_code, self.method, self.url, self.message = status_code, method, url, message
        hint = ""
        if status_code in (401, 403):
            hint = " (check NBFLOW_API_TOKEN: a Jupyter token, or the run's own token inside a run)"
        super().__init__(f"{method} {url} -> {status_code}: {message}{hint}")


class RemoteValidationError(ValidationError):
    """A 400 answer of the server, naming the request field at fault."""

    def __init__(self, field: str, problem: str, message: str) -> None:
        self.field, self.value, self.problem, self.fix = field, None, problem, None
        Exception.__init__(self, message)


def _replayed(response: httpx.Response) -> bool:
    """Whether an earlier attempt of this request may have reached the server."""
    return bool(response.extensions.get("nbflow_replayed"))


def _query(model: BaseModel) -> dict[str, Any]:
    """Turn a filter model into query parameters (lists become repeated keys)."""
    data = model.model_dump(mode="json", exclude_none=True)
    return {k: v for k, v in data.items() if v != []}


class HTTPClient(Client):
    """Talk to an nbflow server at ``api_url`` (``http://host:8888/nbflow/api/v1``)."""

    def __init__(
        self,
        api_url: str,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        """Connect to ``api_url``; ``retry_seconds`` (default: the setting) bounds retrying."""
        if not api_url.startswith(("http://", "https://")):
            raise ValidationError(
                "api_url",
                api_url,
                "is not an http(s) URL",
                "set NBFLOW_API_URL to e.g. http://127.0.0.1:8888/nbflow/api/v1",
            )
        headers = {"Authorization": f"token {token}"} if token else {}
        self.api_url = api_url.rstrip("/")
        if retry_seconds is None:
            retry_seconds = get_settings().api_retry_seconds
        self.transport = RetryingTransport(
            transport or httpx.HTTPTransport(retries=retries), retry_seconds=retry_seconds
        )
        self._http = httpx.Client(
            base_url=self.api_url + "/", headers=headers, timeout=timeout, transport=self.transport
        )

    # -- plumbing ------------------------------------------------------------------------
    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        kind: str = "object",
        key: Any = None,
        retry: RetryMode = "always",
    ) -> Any:
        """Send one request; return the decoded JSON (None for 204) or raise the mapped error.

        ``retry="connect"`` for a request that is not idempotent (it creates something new
        each time): it is then sent again only when it certainly never reached the server.
        """
        try:
            response = self._http.request(
                method,
                path.lstrip("/"),
                json=to_jsonable_python(json) if json is not None else None,
                params=params,
                extensions={"nbflow_retry": retry},
            )
        except httpx.TransportError as exc:
            raise APIError(
                0,
                method,
                f"{self.api_url}/{path.lstrip('/')}",
                f"cannot reach the nbflow server ({type(exc).__name__}: {exc}), retried for "
                f"{self.transport.retry_seconds:g} s (NBFLOW_API_RETRY_SECONDS); is it running "
                "and is NBFLOW_API_URL right?",
            ) from exc
        if response.status_code < 400:
            return response.json() if response.content else None
        if method == "DELETE" and response.status_code == 404 and _replayed(response):
            return None  # an earlier attempt deleted it before the connection dropped
        try:
            body = response.json()
        except ValueError:
            body = {"message": response.text or response.reason_phrase}
        message = str(body.get("message") or response.reason_phrase)
        errors = body.get("errors") or []
        status = response.status_code
        if status == 400:
            first = errors[0] if errors else {"field": "request", "problem": message}
            raise RemoteValidationError(first["field"], first["problem"], message)
        if status == 404:
            if kind == "flow run":
                raise FlowRunNotFound(key)
            raise NotFound(kind, key if key is not None else path)
        if status == 409:
            raise ObjectAlreadyExists(message)
        raise APIError(status, method, str(response.url), message)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        kind: str = "object",
        key: Any = None,
        retry: RetryMode = "always",
    ) -> Any:
        """Call a route outside the :class:`Client` interface (``/automations``): the same
        retries and error mapping as every method here."""
        return self._request(
            method, path, json=json, params=params, kind=kind, key=key, retry=retry
        )

    # -- flows ---------------------------------------------------------------------------
    def create_flow(self, flow: Flow) -> Flow:
        """Register ``flow`` by name, or update the registered one; return the stored flow."""
        return Flow.model_validate(self._request("POST", "flows", json=flow.model_dump()))

    def read_flow(self, flow_id: UUID) -> Flow:
        """Return the flow with this id (``NotFound`` if none)."""
        return Flow.model_validate(
            self._request("GET", f"flows/{flow_id}", kind="flow", key=flow_id)
        )

    def read_flow_by_name(self, name: str) -> Flow:
        """Return the flow with this name (``NotFound`` if none)."""
        data = self._request("GET", "flows", params={"name": name}, kind="flow", key=name)
        return _flows.validate_python(data["items"])[0]

    def read_flows(self, *, limit: int = 100, offset: int = 0) -> list[Flow]:
        """Return flows ordered by name."""
        data = self._request("GET", "flows", params={"limit": limit, "offset": offset})
        return _flows.validate_python(data["items"])

    # -- deployments ---------------------------------------------------------------------
    def create_deployment(self, deployment: DeploymentCreate) -> Deployment:
        """Create the deployment, or update the one with the same flow and name."""
        data = self._request(
            "POST",
            "deployments",
            json=deployment.model_dump(exclude_unset=True),
            kind="flow",
            key=deployment.flow_id,
        )
        return Deployment.model_validate(data)

    def read_deployment(self, deployment_id: UUID) -> Deployment:
        """Return the deployment with this id (``NotFound`` if none)."""
        data = self._request(
            "GET", f"deployments/{deployment_id}", kind="deployment", key=deployment_id
        )
        return Deployment.model_validate(data)

    def read_deployments(
        self, *, flow_id: UUID | None = None, limit: int = 100, offset: int = 0
    ) -> list[Deployment]:
        """Return deployments, optionally of one flow."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if flow_id is not None:
            params["flow_id"] = str(flow_id)
        data = self._request("GET", "deployments", params=params)
        return _deployments.validate_python(data["items"])

    def update_deployment(self, deployment_id: UUID, **changes: Any) -> Deployment:
        """Change fields of a deployment (paused, schedules, parameters, ...)."""
        data = self._request(
            "PATCH",
            f"deployments/{deployment_id}",
            json=changes,
            kind="deployment",
            key=deployment_id,
        )
        return Deployment.model_validate(data)

    def delete_deployment(self, deployment_id: UUID) -> None:
        """Delete a deployment and its future scheduled runs."""
        self._request(
            "DELETE", f"deployments/{deployment_id}", kind="deployment", key=deployment_id
        )

    def run_deployment(
        self, deployment_id: UUID, parameters: dict[str, Any] | None = None, **options: Any
    ) -> FlowRun:
        """Create a Scheduled run of a deployment now (server only: merges its defaults)."""
        body = {"parameters": parameters or {}, **options}
        data = self._request(
            "POST",
            f"deployments/{deployment_id}/runs",
            json=body,
            kind="deployment",
            key=deployment_id,
            retry="always" if options.get("idempotency_key") else "connect",
        )
        return FlowRun.model_validate(data)

    # -- flow runs -----------------------------------------------------------------------
    def create_flow_run(self, flow_run: FlowRunCreate) -> FlowRun:
        """Create a flow run; with an idempotency key already used, return the existing run."""
        data = self._request(
            "POST",
            "flow_runs",
            json=flow_run.model_dump(),
            kind="flow",
            key=flow_run.flow_id,
            retry="always" if flow_run.idempotency_key else "connect",
        )
        return FlowRun.model_validate(data)

    def read_flow_run(self, flow_run_id: UUID) -> FlowRun:
        """Return the flow run with this id (``FlowRunNotFound`` if none)."""
        data = self._request("GET", f"flow_runs/{flow_run_id}", kind="flow run", key=flow_run_id)
        return FlowRun.model_validate(data)

    def _flow_run_page(self, flow_run_filter: FlowRunFilter | None) -> dict[str, Any]:
        params = _query(flow_run_filter or FlowRunFilter())
        return self._request("GET", "flow_runs", params=params)  # type: ignore[no-any-return]

    def read_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> list[FlowRun]:
        """Return flow runs matching the filter (newest first by default)."""
        return _flow_runs.validate_python(self._flow_run_page(flow_run_filter)["items"])

    def count_flow_runs(self, flow_run_filter: FlowRunFilter | None = None) -> int:
        """Count flow runs matching the filter (ignoring limit and offset)."""
        flt = (flow_run_filter or FlowRunFilter()).model_copy(update={"limit": 1, "offset": 0})
        return int(self._flow_run_page(flt)["total"])

    def set_flow_run_state(
        self, flow_run_id: UUID, state: State, *, force: bool = False
    ) -> OrchestrationResult:
        """Propose ``state`` through the orchestration gate; return its answer."""
        data = self._request(
            "POST",
            f"flow_runs/{flow_run_id}/set_state",
            json={"state": state.model_dump(), "force": force},
            kind="flow run",
            key=flow_run_id,
        )
        return OrchestrationResult.model_validate(data)

    def read_flow_run_states(self, flow_run_id: UUID) -> list[State]:
        """Return the run's state history, oldest first."""
        data = self._request(
            "GET", f"flow_runs/{flow_run_id}/states", kind="flow run", key=flow_run_id
        )
        return _states.validate_python(data["items"])

    def update_flow_run(self, flow_run_id: UUID, **changes: Any) -> FlowRun:
        """Set non-state fields: infrastructure_id, output_path, name, tags, job_variables."""
        data = self._request(
            "PATCH", f"flow_runs/{flow_run_id}", json=changes, kind="flow run", key=flow_run_id
        )
        return FlowRun.model_validate(data)

    def heartbeat(self, flow_run_id: UUID) -> None:
        """Record that the process executing the run is alive."""
        self._request(
            "POST", f"flow_runs/{flow_run_id}/heartbeat", kind="flow run", key=flow_run_id
        )

    def delete_flow_run(self, flow_run_id: UUID) -> None:
        """Delete a flow run with its task runs, logs and artifacts."""
        self._request("DELETE", f"flow_runs/{flow_run_id}", kind="flow run", key=flow_run_id)

    def cancel_flow_run(
        self, flow_run_id: UUID, *, message: str | None = None
    ) -> OrchestrationResult:
        """Cancel a run: Cancelled if it has not started, else Cancelling for its owner to stop."""
        try:
            data = self._request(
                "POST",
                f"flow_runs/{flow_run_id}/cancel",
                json={"message": message} if message is not None else None,
                kind="flow run",
                key=flow_run_id,
                retry="connect",  # a replayed cancel of a run it just Cancelled would be a 409
            )
        except ObjectAlreadyExists as exc:  # 409: the lifecycle's TransitionRejected
            raise TransitionRejected(flow_run_id, "Cancelled", None, str(exc)) from None
        return OrchestrationResult.model_validate(data)

    def retry_flow_run(
        self,
        flow_run_id: UUID,
        *,
        parameters: dict[str, Any] | None = None,
        from_failed: bool = False,
    ) -> FlowRun:
        """Create a new Scheduled run retrying a finished batch run (``retry_of`` set)."""
        try:
            data = self._request(
                "POST",
                f"flow_runs/{flow_run_id}/retry",
                json={"parameters": parameters or {}, "from_failed": from_failed},
                kind="flow run",
                key=flow_run_id,
                retry="connect",  # each retry creates a new run
            )
        except ObjectAlreadyExists as exc:  # 409: the run has not finished
            raise TransitionRejected(flow_run_id, "retry", None, str(exc)) from None
        return FlowRun.model_validate(data)

    def start_child_run(self, parent_flow_run_id: UUID, request: dict[str, Any]) -> FlowRun:
        """Ask the server to start a child run of a running pipeline run (Scheduled, for
        its dispatcher): ``POST /flow_runs/{id}/children``.  Send an ``idempotency_key``:
        the request is then safe to replay after a lost answer."""
        data = self._request(
            "POST",
            f"flow_runs/{parent_flow_run_id}/children",
            json=request,
            kind="flow run",
            key=parent_flow_run_id,
            retry="always" if request.get("idempotency_key") else "connect",
        )
        return FlowRun.model_validate(data)

    def mint_run_token(self, flow_run_id: UUID) -> str:
        """Return a token that lets the run's process report on this run only (server only)."""
        data = self._request(
            "POST", f"flow_runs/{flow_run_id}/token", kind="flow run", key=flow_run_id
        )
        return str(data["token"])

    def claim_flow_runs(
        self,
        runners: Sequence[str],
        *,
        claimer: str,
        limit: int | None = None,
        wait_seconds: float = 0.0,
    ) -> list[ClaimedRun]:
        """Claim due runs of ``runners`` within every concurrency limit (``POST /flow_runs/claim``).

        Not idempotent (each call claims new runs), so it is resent only when it certainly
        never reached the server.  ``wait_seconds`` (at most :data:`MAX_CLAIM_WAIT`): when
        none is due, the server holds the request until one is, or that long.
        """
        body: dict[str, Any] = {"runners": list(runners), "claimer": claimer, "limit": limit}
        if wait_seconds > 0:
            body["wait_seconds"] = min(wait_seconds, MAX_CLAIM_WAIT)
        data = self._request("POST", "flow_runs/claim", json=body, retry="connect")
        return _claimed.validate_python(data["items"])

    def read_concurrency_limits(self) -> list[ConcurrencyLimit]:
        """Return the flow and tag concurrency limits (``GET /concurrency_limits``)."""
        return _limits.validate_python(self._request("GET", "concurrency_limits")["items"])

    def set_concurrency_limit(self, key: str, limit: int) -> ConcurrencyLimit:
        """Create or change the limit of ``flow:<name>`` or ``tag:<tag>``."""
        data = self._request(
            "PUT", f"concurrency_limits/{quote(key, safe='')}", json={"limit": limit}
        )
        return ConcurrencyLimit.model_validate(data)

    def delete_concurrency_limit(self, key: str) -> None:
        """Remove a concurrency limit (``NotFound`` if there is none)."""
        self._request(
            "DELETE",
            f"concurrency_limits/{quote(key, safe='')}",
            kind="concurrency limit",
            key=key,
        )

    # -- task runs -----------------------------------------------------------------------
    def write_task_runs(
        self, task_runs: Sequence[TaskRun], states: Sequence[tuple[UUID, State]] = ()
    ) -> None:
        """Upsert task runs (latest snapshot wins) and append their state history, in batches."""
        runs, history = list(task_runs), list(states)
        while runs or history:
            chunk_runs, runs = runs[:BATCH_SIZE], runs[BATCH_SIZE:]
            chunk_states, history = history[:BATCH_SIZE], history[BATCH_SIZE:]
            body = {
                "task_runs": [t.model_dump() for t in chunk_runs],
                "states": [{"task_run_id": i, "state": s.model_dump()} for i, s in chunk_states],
            }
            self._request("POST", "task_runs/batch", json=body)

    def read_task_runs(self, task_run_filter: TaskRunFilter | None = None) -> list[TaskRun]:
        """Return task runs matching the filter, oldest first."""
        params = _query(task_run_filter or TaskRunFilter())
        return _task_runs.validate_python(self._request("GET", "task_runs", params=params)["items"])

    def read_task_run_states(self, task_run_id: UUID) -> list[State]:
        """Return a task run's state history, oldest first."""
        data = self._request(
            "GET", f"task_runs/{task_run_id}/states", kind="task run", key=task_run_id
        )
        return _states.validate_python(data["items"])

    # -- logs and artifacts --------------------------------------------------------------
    def write_logs(self, logs: Sequence[Log]) -> None:
        """Append a batch of log records (split into several requests when large)."""
        records = list(logs)
        for start in range(0, len(records), BATCH_SIZE):
            chunk = [log.model_dump() for log in records[start : start + BATCH_SIZE]]
            self._request("POST", "logs/batch", json={"logs": chunk})

    def read_logs(
        self,
        flow_run_id: UUID,
        *,
        cursor: int = 0,
        limit: int = 1000,
        task_run_id: UUID | None = None,
    ) -> LogPage:
        """Return the run's logs after ``cursor`` (0: from the start), oldest first."""
        params: dict[str, Any] = {"flow_run_id": str(flow_run_id), "cursor": cursor, "limit": limit}
        if task_run_id is not None:
            params["task_run_id"] = str(task_run_id)
        data = self._request("GET", "logs", params=params)
        return LogPage(logs=_logs.validate_python(data["logs"]), cursor=int(data["cursor"]))

    def create_artifact(self, artifact: Artifact) -> Artifact:
        """Store an artifact (an output notebook, a result reference)."""
        try:
            data = self._request("POST", "artifacts", json=artifact.model_dump())
        except ObjectAlreadyExists:
            return artifact  # ids are client-made: an earlier attempt stored this very one
        return Artifact.model_validate(data)

    def read_artifacts(
        self, *, flow_run_id: UUID | None = None, key: str | None = None
    ) -> list[Artifact]:
        """Return artifacts of a run and/or with a key, oldest first."""
        params: dict[str, Any] = {}
        if flow_run_id is not None:
            params["flow_run_id"] = str(flow_run_id)
        if key is not None:
            params["key"] = key
        data = self._request("GET", "artifacts", params=params)
        return _artifacts.validate_python(data["items"])

    def read_output_notebook(self, flow_run_id: UUID) -> dict[str, Any]:
        """Return the run's output notebook as nbformat JSON (server only)."""
        data = self._request(
            "GET",
            f"flow_runs/{flow_run_id}/output",
            kind="output notebook of flow run",
            key=flow_run_id,
        )
        return data  # type: ignore[no-any-return]

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()
