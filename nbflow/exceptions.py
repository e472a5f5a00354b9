"""The nbflow exception hierarchy: one root, errors that carry their data."""

from __future__ import annotations

from typing import Any
from uuid import UUID

__all__ = [
    "DeploymentVersionConflict",
    "FlowRunNotFound",
    "NbflowError",
    "NotFound",
    "ObjectAlreadyExists",
    "ParameterError",
    "TaskRunTimeout",
    "TransitionRejected",
    "UpstreamNotReady",
    "ValidationError",
]


class NbflowError(Exception):
    """Root of every error nbflow raises on purpose."""


class ValidationError(NbflowError, ValueError):
    """Input that does not fit: names the field, the value and the fix."""

    def __init__(self, field: str, value: Any, problem: str, fix: str | None = None) -> None:
        self.field, self.value, self.problem, self.fix = field, value, problem, fix
        text = f"{field}={value!r}: {problem}"
        super().__init__(f"{text}. {fix}" if fix else text)


class ParameterError(ValidationError):
    """A flow parameter that does not match the flow's signature or type."""


class NotFound(NbflowError, LookupError):
    """An object that does not exist in the store."""

    def __init__(self, kind: str, key: Any) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} {key} not found")


class FlowRunNotFound(NotFound):
    """No flow run with this id."""

    def __init__(self, flow_run_id: UUID | str) -> None:
        super().__init__("flow run", flow_run_id)


class ObjectAlreadyExists(NbflowError):
    """A unique key (name, idempotency key) is already taken."""


class DeploymentVersionConflict(NbflowError):
    """An edit of a deployment made from a version that is no longer its latest."""

    def __init__(
        self, deployment_id: UUID, expected: int, current: int, changed: list[str]
    ) -> None:
        self.deployment_id, self.expected, self.current = deployment_id, expected, current
        self.changed = changed
        what = f" (changed since: {', '.join(changed)})" if changed else ""
        super().__init__(
            f"deployment {deployment_id} is at version {current}, the edit was made from "
            f"version {expected}{what}; reload it, reapply the edit and send "
            f"expected_version={current}"
        )


class TransitionRejected(NbflowError):
    """The orchestration gate refused a proposed state."""

    def __init__(self, run_id: UUID, proposed: str, current: str | None, reason: str) -> None:
        self.run_id, self.proposed, self.current, self.reason = run_id, proposed, current, reason
        super().__init__(f"run {run_id}: {proposed} refused (current {current}): {reason}")


class TaskRunTimeout(NbflowError, TimeoutError):
    """A task run exceeded its ``timeout_seconds``."""

    def __init__(self, task_name: str, seconds: float) -> None:
        self.task_name, self.seconds = task_name, seconds
        super().__init__(f"task {task_name!r} exceeded its timeout of {seconds:g} s")


class UpstreamNotReady(NbflowError):
    """A task could not run because an upstream task run did not complete."""

    def __init__(self, task_name: str, upstream: list[str]) -> None:
        self.task_name, self.upstream = task_name, upstream
        super().__init__(
            f"task {task_name!r} not run: upstream {', '.join(upstream)} did not complete"
        )
