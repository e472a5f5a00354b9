"""Conversions between the wire models (``nbflow.schemas``) and table rows.

JSON columns get plain JSON values (``to_jsonable_python``); states are stored as their
JSON text plus the columns the store filters on.  Task runs, their states and logs are
written through ``batch.py`` instead: the engine ships them by the thousand.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pydantic
from pydantic_core import to_jsonable_python
from sqlalchemy import Row

from nbflow.exceptions import ValidationError
from nbflow.schemas import Artifact, Deployment, Flow, FlowRun, Log, Schedule, TaskRun
from nbflow.states import State

__all__ = [
    "artifact_row",
    "deployment_row",
    "flow_row",
    "flow_run_row",
    "read_artifact",
    "read_deployment",
    "read_flow",
    "read_flow_run",
    "read_log",
    "read_schedule",
    "read_state",
    "read_task_run",
    "schedule_row",
    "state_columns",
]


def _json(value: Any) -> Any:
    return to_jsonable_python(value)


def state_columns(state: State | None) -> dict[str, Any]:
    """Return the current-state columns of a flow run for ``state``."""
    if state is None:
        return {
            "state_id": None,
            "state_type": None,
            "state_name": None,
            "state_timestamp": None,
            "state_json": None,
        }
    return {
        "state_id": state.id,
        "state_type": state.type.value,
        "state_name": state.name,
        "state_timestamp": state.timestamp,
        "state_json": state.model_dump_json(),
    }


def read_state(text: str | None) -> State | None:
    """Return the state stored as JSON ``text`` (None stays None)."""
    return None if text is None else State.model_validate_json(text)


def flow_row(flow: Flow) -> dict[str, Any]:
    """Return the ``flows`` row of ``flow``."""
    return {
        "id": flow.id,
        "name": flow.name,
        "description": flow.description,
        "parameters_schema": _json(flow.parameters_schema),
        "source": flow.source,
        "tags": list(flow.tags),
        "created": flow.created,
        "updated": flow.updated,
    }


def read_flow(row: Row[Any]) -> Flow:
    """Return the flow stored in ``row``."""
    return Flow.model_validate(row._asdict())


def schedule_row(schedule: Schedule, deployment_id: Any, position: int) -> dict[str, Any]:
    """Return the ``schedules`` row of one schedule of a deployment."""
    return {**schedule.model_dump(), "deployment_id": deployment_id, "position": position}


def read_schedule(row: Row[Any]) -> Schedule:
    """Return the schedule stored in ``row``."""
    data = row._asdict()
    del data["deployment_id"], data["position"]
    return Schedule.model_validate(data)


def deployment_row(deployment: Deployment) -> dict[str, Any]:
    """Return the ``deployments`` row of ``deployment`` (schedules are rows of their own)."""
    data = deployment.model_dump(exclude={"schedules"})
    for key in ("job_variables", "parameters", "notebook", "tags"):
        data[key] = _json(data[key])
    return data


def read_deployment(row: Row[Any], schedules: list[Schedule]) -> Deployment:
    """Return the deployment stored in ``row`` with its ``schedules``."""
    return Deployment.model_validate({**row._asdict(), "schedules": schedules})


def flow_run_row(run: FlowRun) -> dict[str, Any]:
    """Return the ``flow_runs`` row of ``run``."""
    data = run.model_dump(exclude={"state", "flow_name"})
    for key in ("parameters", "tags", "job_variables"):
        data[key] = _json(data[key])
    data.update(state_columns(run.state))
    return data


_RUN_STATE_COLUMNS = ("state_id", "state_type", "state_name", "state_timestamp", "state_json")


def read_flow_run(row: Row[Any] | Mapping[str, Any]) -> FlowRun:
    """Return the flow run stored in ``row`` (a ``flow_runs`` row plus ``flow_name``)."""
    data = dict(row._asdict() if isinstance(row, Row) else row)
    state = read_state(data["state_json"])
    for key in _RUN_STATE_COLUMNS:
        del data[key]
    data["state"] = state
    return FlowRun.model_validate(data)


def read_task_run(row: Row[Any]) -> TaskRun:
    """Return the task run stored in ``row``."""
    data = row._asdict()
    state = read_state(data.pop("state_json"))
    del data["state_type"], data["state_name"]
    data["state"] = state
    return TaskRun.model_validate(data)


def read_log(row: Row[Any]) -> Log:
    """Return the log record stored in ``row``."""
    data = row._asdict()
    data.pop("id", None)
    return Log.model_validate(data)


def artifact_row(artifact: Artifact) -> dict[str, Any]:
    """Return the ``artifacts`` row of ``artifact``."""
    data = artifact.model_dump()
    data["data"] = _json(data["data"])
    return data


def read_artifact(row: Row[Any]) -> Artifact:
    """Return the artifact stored in ``row``."""
    return Artifact.model_validate(row._asdict())


def validation_error(exc: pydantic.ValidationError) -> ValidationError:
    """Return the nbflow error naming the first field pydantic refused."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or exc.title
    return ValidationError(field, first.get("input"), first["msg"])
