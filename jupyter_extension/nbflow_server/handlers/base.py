"""The base handler: authentication, run-token scoping, body parsing and error mapping.

Every endpoint method is wrapped by :func:`endpoint`, which

- with a run token (``Authorization: token nbflow-run.<id>.<sig>``) lets the call through
  only when :data:`~nbflow_server.capabilities.CAPABILITIES` lists the endpoint, the
  token's run exists and has not ended, and the run it touches is the token's run;
- otherwise requires a Jupyter user (``tornado.web.authenticated``) authorized for the
  ``nbflow`` resource (``jupyter_server.auth.authorized``);
- maps errors to HTTP once: pydantic and nbflow validation errors → 400 naming the field,
  a path outside the server root → 403, not found → 404, refused transitions and
  duplicates → 409;
- records the request/response models so the OpenAPI document is generated from the
  same table the server routes with.
"""

from __future__ import annotations

import asyncio
import functools
import json
import types
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import pydantic
import sqlalchemy.exc
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import iostream, web

from nbflow.client.base import Client
from nbflow.exceptions import NotFound, ObjectAlreadyExists, TransitionRejected, ValidationError
from nbflow.schemas import FlowRun
from nbflow_server.capabilities import RunAccess, capability_of, expired_reason
from nbflow_server.handlers.models import LogBatch, TaskRunBatch
from nbflow_server.paths import PathOutsideRoot
from nbflow_server.tokens import RUN_TOKEN_PREFIX

__all__ = [
    "AUTH_RESOURCE",
    "ApiError",
    "EndpointSpec",
    "NbflowHandler",
    "RunAccess",
    "endpoint",
    "flow_run_event",
]

AUTH_RESOURCE = "nbflow"

M = TypeVar("M", bound=pydantic.BaseModel)
T = TypeVar("T")


@dataclass(frozen=True)
class EndpointSpec:
    """What the OpenAPI document and the auth layer know about one endpoint."""

    action: str
    summary: str
    body: type[pydantic.BaseModel] | None = None
    query: type[pydantic.BaseModel] | None = None
    response: type[pydantic.BaseModel] | None = None
    status: int = 200
    run_access: RunAccess = RunAccess.NONE
    #: Content of a non-JSON-model response, e.g. a notebook.
    raw_response: str | None = None


class ApiError(web.HTTPError):
    """An HTTP error with a JSON body listing the fields at fault."""

    def __init__(
        self, status_code: int, message: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(status_code, log_message=message.replace("%", "%%"))
        self.message = message
        self.errors = errors or []


def _field_path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "body"


def _map_error(exc: Exception, where: str) -> ApiError | None:
    """Translate a known exception into an :class:`ApiError` (None: not ours)."""
    if isinstance(exc, pydantic.ValidationError):
        errors = [
            {"field": _field_path((where, *e["loc"])), "problem": e["msg"]} for e in exc.errors()
        ]
        text = "; ".join(f"{e['field']}: {e['problem']}" for e in errors)
        return ApiError(400, f"invalid request: {text}", errors)
    if isinstance(exc, PathOutsideRoot):
        return ApiError(403, str(exc), [{"field": exc.field, "problem": exc.problem}])
    if isinstance(exc, ValidationError):
        return ApiError(400, str(exc), [{"field": exc.field, "problem": exc.problem}])
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, TransitionRejected | ObjectAlreadyExists):
        return ApiError(409, str(exc))
    return None


_INT64 = 2**63
#: Bodies whose text the store escapes (NUL → U+FFFD) instead of refusing.
_ESCAPED_BATCHES = (LogBatch, TaskRunBatch)


def _big_int_path(data: Any, path: str, bound: int = _INT64) -> str | None:
    """Return the dotted path of the first integer in JSON data beyond ``bound`` (64 bits)."""
    if isinstance(data, bool):
        return None
    if isinstance(data, int):
        return None if -bound <= data < bound else path
    items: Any = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        found = _big_int_path(value, f"{path}.{key}", bound)
        if found is not None:
            return found
    return None


def _out_of_range_field(handler: web.RequestHandler, bound: int) -> str | None:
    for name, values in handler.request.query_arguments.items():
        for raw in values:
            try:
                field = _big_int_path(int(raw), f"query.{name}", bound)
            except ValueError:
                continue
            if field:
                return field
    if handler.request.body:
        try:
            return _big_int_path(json.loads(handler.request.body), "body", bound)
        except ValueError:
            pass
    return None


def _out_of_range(handler: web.RequestHandler) -> ApiError:
    """Return the 400 of a number too large to store, naming the field when it can be found.

    Counts and keys are 64-bit integers (some PostgreSQL columns, such as log levels and
    run counts, 32-bit): the first integer beyond 64 bits, else beyond 32, is named.
    """
    field = _out_of_range_field(handler, _INT64) or _out_of_range_field(handler, 2**31)
    problem = (
        "is out of range (integers must fit in 64 bits, counts and levels in 32; "
        "durations and times in a year 9999)"
    )
    field = field or "request"
    return ApiError(400, f"{field} {problem}", [{"field": field, "problem": problem}])


def _nested_deeper(data: Any, limit: int) -> bool:
    """Return True when JSON data nests lists/objects deeper than ``limit`` (no recursion)."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        item, depth = stack.pop()
        children = (
            item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        )
        if children is None:
            continue
        if depth >= limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def _refuse_nul(model: pydantic.BaseModel, path: str) -> None:
    """Refuse (400) a NUL in a text field of ``model``, of the models and lists it holds.

    PostgreSQL text cannot hold NUL, so a name, path or key with one would be a 500 on the
    store.  Log and task-run batches are not refused: the store's batch writer escapes
    them, one odd line never losing the batch.  JSON fields (dicts) hold NUL fine.
    """
    if isinstance(model, _ESCAPED_BATCHES):
        return
    for name in model.model_fields_set:
        _refuse_nul_in(getattr(model, name, None), f"{path}.{name}")


def _refuse_nul_in(value: Any, path: str) -> None:
    if isinstance(value, str) and "\x00" in value:
        raise ValidationError(
            path, value, "contains a NUL character (\\x00), which it cannot hold", "remove it"
        )
    if isinstance(value, pydantic.BaseModel):
        _refuse_nul(value, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _refuse_nul_in(item, f"{path}.{i}")


def _is_nul_error(exc: BaseException) -> bool:
    return "NUL (0x00)" in str(exc) or "0x00" in str(getattr(exc, "orig", ""))


def _is_list_field(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is list:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_list_field(arg) for arg in typing.get_args(annotation))
    return False


def endpoint(
    action: str,
    summary: str,
    *,
    body: type[pydantic.BaseModel] | None = None,
    query: type[pydantic.BaseModel] | None = None,
    response: type[pydantic.BaseModel] | None = None,
    status: int = 200,
    raw_response: str | None = None,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Declare an endpoint method: its auth, its models and its error mapping.

    What a run token may do with it is not declared here but looked up by the method's
    ``Handler.method`` name in :data:`~nbflow_server.capabilities.CAPABILITIES`.
    """

    def wrap(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        capability = capability_of(method.__qualname__)
        run_access = capability.access if capability is not None else RunAccess.NONE
        spec = EndpointSpec(
            action, summary, body, query, response, status, run_access, raw_response
        )

        async def mapped(self: NbflowHandler, *args: Any, **kwargs: Any) -> None:
            try:
                await method(self, *args, **kwargs)
            except web.HTTPError:
                raise
            except OverflowError as exc:
                # A number the store (64-bit integers) or datetime cannot hold: the input's fault.
                raise _out_of_range(self) from exc
            except sqlalchemy.exc.DataError as exc:
                # PostgreSQL's word for the same: a number beyond its column, or a NUL in a
                # text it was asked to compare (a query) that no model check caught.
                if _is_nul_error(exc):
                    problem = "contains a NUL character (\\x00), which the store cannot hold"
                    raise ApiError(
                        400, f"request {problem}", [{"field": "request", "problem": problem}]
                    ) from exc
                if "out of range" in str(exc):
                    raise _out_of_range(self) from exc
                raise
            except Exception as exc:
                error = _map_error(exc, "request")
                if error is None:
                    raise
                raise error from exc

        as_user: Callable[..., Awaitable[None]] = authorized(action, resource=AUTH_RESOURCE)(
            web.authenticated(mapped)
        )

        @functools.wraps(method)
        async def inner(self: NbflowHandler, *args: Any, **kwargs: Any) -> None:
            if self.run_scope is None:
                await as_user(self, *args, **kwargs)
                return
            if capability is None:
                raise ApiError(
                    403,
                    "a run token may only report on its own run; this endpoint needs the "
                    "user's Jupyter token (docs/security.md lists what a run token may do)",
                )
            if capability.access is RunAccess.PATH and kwargs["flow_run_id"] != str(self.run_scope):
                self.require_run_scope(None)
            if capability.access is RunAccess.CHILD and kwargs["flow_run_id"] != str(
                self.run_scope
            ):
                await self.require_child_run(kwargs["flow_run_id"])
            self.token_run = await self._read_token_run(self.run_scope)
            reason = expired_reason(self.token_run)
            if reason is not None and not capability.replayable:
                raise ApiError(403, reason)
            await mapped(self, *args, **kwargs)

        # Authentication is done above (user or run token), so let prepare() through.
        inner.__allow_unauthenticated = True  # type: ignore[attr-defined]
        inner.__nbflow_endpoint__ = spec  # type: ignore[attr-defined]
        return inner

    return wrap


@web.stream_request_body  # bodies are collected by data_received, up to max_body_bytes
class NbflowHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every nbflow REST handler."""

    auth_resource = AUTH_RESOURCE
    #: The flow run of the request's run token (None: a user's request).
    run_scope: UUID | None = None
    #: That run, read when the request was authorized (None: a user's request).
    token_run: FlowRun | None = None

    # -- authentication ----------------------------------------------------------------
    def _bearer(self) -> str | None:
        header = self.request.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() in ("token", "bearer") and value.strip().startswith(RUN_TOKEN_PREFIX):
            return value.strip()
        return None

    async def prepare(self) -> None:  # type: ignore[override]
        """Recognize a run token before jupyter_server authenticates the user."""
        token = self._bearer()
        if token is not None:
            scope = self.nbflow.signer.verify(token)
            if scope is None:
                raise ApiError(403, "invalid or forged nbflow run token")
            self.run_scope = scope
        await super().prepare()

    def check_xsrf_cookie(self) -> None:
        """Skip the XSRF check for run tokens: a header token is not sent by browsers."""
        if self.run_scope is not None:
            return
        super().check_xsrf_cookie()

    def require_run_scope(self, flow_run_id: UUID | None) -> None:
        """With a run token, refuse (403) anything about another run."""
        if self.run_scope is not None and flow_run_id != self.run_scope:
            raise ApiError(403, f"this run token is for flow run {self.run_scope} only")

    async def require_child_run(self, flow_run_id: str | UUID) -> None:
        """With a run token, refuse (403) a run that is not a child of the token's run."""
        if self.run_scope is None:
            return
        try:
            rid = flow_run_id if isinstance(flow_run_id, UUID) else UUID(str(flow_run_id))
            run = await self.call(self.nbflow.lifecycle.store.read_flow_run, rid)
        except (ValueError, NotFound):
            self.require_run_scope(None)  # unknown: not one of its children either
            return
        if run.parent_flow_run_id != self.run_scope:
            raise ApiError(
                403,
                f"this run token is for flow run {self.run_scope} and its child runs only",
            )

    async def require_own_task_runs(self, task_run_ids: Iterable[UUID | None]) -> set[UUID]:
        """With a run token, refuse (403) a task-run id another run owns; return the stored ones.

        An id not stored yet is no one else's (logs may arrive before their task run), so
        it passes; the caller decides whether it must exist.
        """
        ids = {t for t in task_run_ids if t is not None}
        if self.run_scope is None or not ids:
            return set()
        owners = await self.call(self.nbflow.lifecycle.store.read_task_run_owners, ids)
        for task_run_id, owner in sorted(owners.items(), key=lambda item: str(item[0])):
            if owner != self.run_scope:
                whose = f"flow run {owner}" if owner is not None else "no flow run"
                raise ApiError(
                    403,
                    f"task run {task_run_id} belongs to {whose}, not to this run token's "
                    f"flow run {self.run_scope}; a run token never moves a task run",
                )
        return set(owners)

    async def _read_token_run(self, flow_run_id: UUID) -> FlowRun:
        """Return the token's run; 403 when it no longer exists (its token opens nothing)."""
        try:
            return await self.call(self.client.read_flow_run, flow_run_id)
        except NotFound:
            raise ApiError(
                403, f"flow run {flow_run_id} no longer exists: its run token opens nothing"
            ) from None

    # -- access to the app -------------------------------------------------------------
    @property
    def nbflow(self) -> Any:
        """The :class:`~nbflow_server.app.NbflowApp` serving this request."""
        return self.extensionapp

    @property
    def client(self) -> Client:
        """The store client shared by the server."""
        return self.nbflow.client  # type: ignore[no-any-return]

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking store call in a worker thread, off the event loop."""
        return await asyncio.get_running_loop().run_in_executor(
            None, functools.partial(fn, *args, **kwargs)
        )

    def publish(self, event: dict[str, Any]) -> None:
        """Send an event to the event-stream subscribers."""
        self.nbflow.event_bus.publish(event)

    # -- parsing -----------------------------------------------------------------------
    _body: bytearray | None = None

    def data_received(self, chunk: bytes) -> None:
        """Collect the request body; refuse (413) one over the limit before it is whole.

        Tornado streams the body here chunk by chunk (``stream_request_body``), so a body
        too large is refused after at most ``max_body_bytes`` were read, not buffered whole.
        """
        if self._finished:
            return  # already refused: tornado drops the rest and closes the connection
        limit = int(self.nbflow.max_body_bytes)
        if self._body is None:
            declared = self.request.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                self._refuse_body(limit)
                return
            self._body = bytearray()
            self.request.body = self._body  # type: ignore[assignment]  # bytes-like, grows
        if len(self._body) + len(chunk) > limit:
            self._refuse_body(limit)
            return
        self._body += chunk

    def _refuse_body(self, limit: int) -> None:
        self._body = None
        self.request.body = b""
        problem = f"is larger than this server's limit of {limit} bytes"
        error = ApiError(
            413,
            f"body {problem} (c.NbflowApp.max_body_bytes)",
            [{"field": "body", "problem": problem}],
        )
        self.send_error(413, exc_info=(ApiError, error, None))
        # The method must not run on a partial body: end the wait for the rest of it.
        waiting = self.request._body_future
        if not waiting.done():
            waiting.set_exception(iostream.StreamClosedError())
            waiting.exception()

    def parse_uuid(self, field: str, value: str) -> UUID:
        """Parse a path or query id, naming the field when it is not a UUID."""
        try:
            return UUID(value)
        except ValueError:
            raise ValidationError(field, value, "is not a UUID") from None

    def parse_body(self, model: type[M]) -> M:
        """Validate the JSON body against ``model`` (errors name ``body.<field>``)."""
        raw = self.request.body or b"{}"
        limit = int(self.nbflow.max_json_depth)
        fix = f"nest lists and objects at most {limit} deep (c.NbflowApp.max_json_depth)"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValidationError("body", bytes(raw[:80]), f"is not JSON ({exc})") from None
        except RecursionError:
            problem = f"is nested deeper than {limit}"
            raise ValidationError("body", bytes(raw[:80]), problem, fix) from None
        if _nested_deeper(data, limit):
            raise ValidationError("body", bytes(raw[:80]), f"is nested deeper than {limit}", fix)
        try:
            parsed = model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _map_error(exc, "body") from exc  # type: ignore[misc]
        _refuse_nul(parsed, "body")
        return parsed

    def parse_query(self, model: type[M]) -> M:
        """Validate the query string against ``model`` (repeat a key for a list field)."""
        data: dict[str, Any] = {}
        for name, field in model.model_fields.items():
            values = self.get_query_arguments(name)
            if not values:
                continue
            data[name] = values if _is_list_field(field.annotation) else values[-1]
        # Browser clients bust caches with a bare timestamp key (JupyterLab's
        # ServerConnection adds ``?1700000000000`` to GETs, jQuery ``_=...``): not input.
        unknown = {
            key
            for key in self.request.query_arguments
            if key not in model.model_fields and not (key.isdigit() or key == "_")
        }
        if unknown:
            raise ValidationError(
                f"query.{sorted(unknown)[0]}",
                self.get_query_argument(sorted(unknown)[0]),
                "is not a parameter of this endpoint",
                f"use one of: {', '.join(model.model_fields)}",
            )
        try:
            parsed = model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _map_error(exc, "query") from exc  # type: ignore[misc]
        _refuse_nul(parsed, "query")
        return parsed

    def changes_of(self, update: pydantic.BaseModel, *, nullable: set[str]) -> dict[str, Any]:
        """Return the fields a partial update sets; null only where ``nullable`` allows."""
        changes = {name: getattr(update, name) for name in update.model_fields_set}
        for name, value in changes.items():
            if value is None and name not in nullable:
                raise ValidationError(
                    f"body.{name}", None, "cannot be null", "leave the field out to keep it"
                )
        return changes

    # -- responses ---------------------------------------------------------------------
    def write_model(self, model: pydantic.BaseModel, status: int = 200) -> None:
        """Finish with ``model`` as JSON."""
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(model.model_dump_json())

    def write_empty(self) -> None:
        """Finish with 204 No Content."""
        self.set_status(204)
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Answer errors as ``{"message", "reason", "errors": [{"field", "problem"}]}``."""
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            self.set_header("Content-Type", "application/json")
            body = {"message": exc.message, "reason": exc.reason, "errors": exc.errors}
            self.log.warning("nbflow API error %s: %s", status_code, exc.message)
            self.finish(json.dumps(body))
            return
        super().write_error(status_code, **kwargs)


def flow_run_event(run: Any) -> dict[str, Any]:
    """Build the event announcing a flow run's (new) state."""
    return {
        "type": "flow_run_state",
        "flow_run_id": str(run.id),
        "flow_run": run.model_dump(mode="json"),
        "state": run.state.model_dump(mode="json") if run.state else None,
    }
