"""The runner contract: launch ``nbflow execute <run-id>`` somewhere, watch it, kill it.

A runner is small: :meth:`Runner.submit` starts the run's process and returns an
infrastructure id, :meth:`Runner.wait` waits for its exit code, :meth:`Runner.kill` stops
it (polite signal, grace period, then force).  Everything else is shared here:

- the job configuration: the runner's base job template (the defaults of its
  :attr:`Runner.job_variables_model`) filled with the run's final job variables, which
  the caller merged (runner defaults < deployment < run, ``env`` per variable) with
  :func:`nbflow.orchestration.job_variables.merge_job_variables`; a runner only validates;
- the run's environment (:meth:`Runner.run_environment`): ``NBFLOW__FLOW_RUN_ID``, the
  API URL and a per-run credential, or the embedded store's location;
- what an exit means (:meth:`Runner.report_exit`): a non-zero exit while the run is not
  terminal is Crashed, with the exit code in the message;
- cancellation (:meth:`Runner.cancel`): the lifecycle's cancel, then as the owner of the
  process: kill with grace, Cancelled.

Runners import the domain and the client interface only, never the engine.
"""

from __future__ import annotations

import logging
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from nbflow.client.base import Client
from nbflow.exceptions import TransitionRejected, ValidationError
from nbflow.schemas import FlowRun
from nbflow.settings import Settings, get_settings, runner_environment
from nbflow.states import Cancelled, Crashed, StateType

__all__ = ["JobVariables", "Runner", "TokenFactory"]

logger = logging.getLogger("nbflow.runners")

#: Returns the credential a run's process uses to reach the API (None: no credential).
TokenFactory = Callable[[FlowRun], str | None]


class JobVariables(BaseModel):
    """Job variables every runner accepts; runners subclass this with their own."""

    model_config = ConfigDict(extra="forbid")

    env: dict[str, str] = Field(
        default_factory=dict, description="extra environment variables of the run's process"
    )


def container_working_dir(value: str | None) -> str | None:
    """Check a container's working directory: an absolute path inside the container."""
    if value is not None and not value.startswith("/"):
        from nbflow.exceptions import ValidationError

        raise ValidationError(
            "job_variables.working_dir",
            value,
            "is not an absolute path",
            "give the folder inside the container, e.g. /home/jovyan/work",
        )
    return value


class Runner(ABC):
    """Launch a flow run's ``nbflow execute`` process, wait for it and kill it."""

    #: The name the runner is registered under (entry-point group ``nbflow.runners``).
    name: ClassVar[str] = ""
    #: Whether the run's process sees the server's files at their paths (a local process):
    #: the dispatcher then runs ad-hoc notebook paths from the server's root.
    shares_filesystem: ClassVar[bool] = False
    #: The pydantic model of this runner's job variables; its defaults are the base template.
    job_variables_model: ClassVar[type[JobVariables]] = JobVariables

    def __init__(
        self,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        token_factory: TokenFactory | None = None,
        settings: Settings | None = None,
    ) -> None:
        """Create a runner; ``client`` lets it report exits (Crashed) and cancellations."""
        self.settings = settings or get_settings()
        self.client = client
        self.api_url = api_url if api_url is not None else self.settings.api_url
        self._token_factory = token_factory

    # -- the contract ---------------------------------------------------------------------
    @abstractmethod
    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        """Start the run's process; return its infrastructure id.

        ``job_variables`` is the run's final configuration, already merged (a claim's
        ``ClaimedRun.job_variables``); None means the run's own ``job_variables``.
        """

    @abstractmethod
    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        """Stop the process: a polite signal, ``grace_seconds`` to exit, then force."""

    @abstractmethod
    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        """Wait for the process to exit; return its exit code (None when ``timeout`` passed)."""

    def close(self) -> None:
        """Release what the runner keeps between runs (pre-started processes, connections)."""

    # -- shared behaviour ----------------------------------------------------------------
    def job_configuration(
        self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None
    ) -> JobVariables:
        """Validate the final job variables (None: the run's own) against the runner's model."""
        merged = dict(flow_run.job_variables if job_variables is None else job_variables)
        try:
            return self.job_variables_model.model_validate(merged)
        except PydanticValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "job_variables"
            known = ", ".join(sorted(self.job_variables_model.model_fields))
            raise ValidationError(
                f"job_variables.{field}",
                err.get("input"),
                err["msg"],
                f"the {self.name or type(self).__name__} runner accepts: {known}",
            ) from exc

    def run_environment(self, flow_run: FlowRun) -> dict[str, str]:
        """Return the variables that connect the run's process to the store or the API."""
        token = self._token_factory(flow_run) if self._token_factory else self.settings.api_token
        return runner_environment(
            flow_run.id, api_url=self.api_url, api_token=token, settings=self.settings
        )

    def command(self, flow_run: FlowRun, python: str | None = None) -> list[str]:
        """Return the command that executes the run: ``python -m nbflow execute <id>``."""
        return [python or sys.executable, "-m", "nbflow", "execute", str(flow_run.id)]

    def report_exit(self, flow_run_id: UUID, exit_code: int) -> None:
        """Mark the run Crashed when its process exited non-zero before the run ended."""
        if exit_code == 0 or self.client is None:
            return
        run = self.client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.is_terminal:
            return
        how = f"killed by signal {-exit_code}" if exit_code < 0 else f"exited with code {exit_code}"
        if run.state is not None and run.state.type is StateType.CANCELLING:
            # A cancellation that had to force the kill: the run is Cancelled, not Crashed.
            self.client.set_flow_run_state(
                flow_run_id, Cancelled(message=f"cancelled; the run's process {how}")
            )
            return
        result = self.client.set_flow_run_state(
            flow_run_id,
            Crashed(message=f"the run's process {how} while the run was {run.state}"),
        )
        logger.info("flow run %s: process %s; Crashed: %s", flow_run_id, how, result.status)

    def cancel(self, flow_run: FlowRun, grace_seconds: float = 30.0) -> None:
        """Cancel a run this runner launched: cancel it, then stop its process as its owner.

        The cancel itself is the lifecycle's (``client.cancel_flow_run``): a run that has
        not started is Cancelled at once and there is nothing to stop.  A started one is
        Cancelling: its process is killed with grace, and the run is then Cancelled.
        """
        if self.client is None:
            raise ValidationError("client", None, "a runner needs a client to cancel runs")
        try:
            self.client.cancel_flow_run(flow_run.id, message="cancelled by its runner")
        except TransitionRejected as exc:
            logger.info("flow run %s: not cancelled (%s)", flow_run.id, exc.reason)
            return
        if flow_run.infrastructure_id:
            self.kill(flow_run.infrastructure_id, grace_seconds)
        current = self.client.read_flow_run(flow_run.id)
        if current.state is None or not current.state.is_terminal:
            self.client.set_flow_run_state(
                flow_run.id, Cancelled(message="cancelled; the run's process was stopped")
            )
