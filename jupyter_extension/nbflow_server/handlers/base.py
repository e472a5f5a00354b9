"""The base handler: authentication, run-token scoping, body parsing and error mapping.

Every endpoint method is wrapped by :func:`endpoint`, which

- with a run token (``Authorization: token nbflow-run.<id>.<sig>``) lets the call through
  only when the endpoint allows run tokens and the run it touches is the token's run;
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
import enum
import functools
import json
import types
import typing
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import pydantic
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from nbflow.client.base import Client
from nbflow.exceptions import NotFound, ObjectAlreadyExists, TransitionRejected, ValidationError
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


class RunAccess(enum.Enum):
    """What a run token may do with an endpoint."""

    #: Refused: only the user's Jupyter token opens it.
    NONE = "none"
    #: Allowed when the ``flow_run_id`` in the path is the token's run.
    PATH = "path"
    #: Allowed; the handler checks the objects it touches with ``require_run_scope``.
    CHECKED = "checked"


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


def _big_int_path(data: Any, path: str) -> str | None:
    """Return the dotted path of the first integer in JSON data beyond 64 bits."""
    if isinstance(data, bool):
        return None
    if isinstance(data, int):
        return None if -_INT64 <= data < _INT64 else path
    items: Any = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        found = _big_int_path(value, f"{path}.{key}")
        if found is not None:
            return found
    return None


def _out_of_range(handler: web.RequestHandler) -> ApiError:
    """Return the 400 of a number too large to store, naming the field when it can be found."""
    field: str | None = None
    for name, values in handler.request.query_arguments.items():
        for raw in values:
            try:
                field = _big_int_path(int(raw), f"query.{name}")
            except ValueError:
                continue
            if field:
                break
        if field:
            break
    if field is None and handler.request.body:
        try:
            field = _big_int_path(json.loads(handler.request.body), "body")
        except ValueError:
            pass
    problem = "is out of range (integers must fit in 64 bits; durations and times in a year 9999)"
    field = field or "request"
    return ApiError(400, f"{field} {problem}", [{"field": field, "problem": problem}])


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
    run_access: RunAccess = RunAccess.NONE,
    raw_response: str | None = None,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Awaitable[None]]]:
    """Declare an endpoint method: its auth, its models and its error mapping."""
    spec = EndpointSpec(action, summary, body, query, response, status, run_access, raw_response)

    def wrap(method: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        async def mapped(self: NbflowHandler, *args: Any, **kwargs: Any) -> None:
            try:
                await method(self, *args, **kwargs)
            except web.HTTPError:
                raise
            except OverflowError as exc:
                # A number the store (64-bit integers) or datetime cannot hold: the input's fault.
                raise _out_of_range(self) from exc
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
            if spec.run_access is RunAccess.NONE:
                raise ApiError(
                    403,
                    "a run token may only report on its own run; this endpoint needs the "
                    "user's Jupyter token",
                )
            if spec.run_access is RunAccess.PATH:
                self.require_run_scope(self.parse_uuid("flow_run_id", kwargs["flow_run_id"]))
            await mapped(self, *args, **kwargs)

        # Authentication is done above (user or run token), so let prepare() through.
        inner.__allow_unauthenticated = True  # type: ignore[attr-defined]
        inner.__nbflow_endpoint__ = spec  # type: ignore[attr-defined]
        return inner

    return wrap


class NbflowHandler(ExtensionHandlerMixin, APIHandler):
    """Base of every nbflow REST handler."""

    auth_resource = AUTH_RESOURCE
    run_scope: UUID | None = None

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
    def parse_uuid(self, field: str, value: str) -> UUID:
        """Parse a path or query id, naming the field when it is not a UUID."""
        try:
            return UUID(value)
        except ValueError:
            raise ValidationError(field, value, "is not a UUID") from None

    def parse_body(self, model: type[M]) -> M:
        """Validate the JSON body against ``model`` (errors name ``body.<field>``)."""
        raw = self.request.body or b"{}"
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise ValidationError("body", raw[:80], f"is not JSON ({exc})") from None
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _map_error(exc, "body") from exc  # type: ignore[misc]

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
            return model.model_validate(data)
        except pydantic.ValidationError as exc:
            raise _map_error(exc, "query") from exc  # type: ignore[misc]

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
