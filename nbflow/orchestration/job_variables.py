"""Job variables: the one merge rule and the one place that layers a run's configuration.

A run's job configuration is three layers, later ones winning key by key:

1. the runner's defaults (``NbflowApp.runner_defaults[runner]`` on a server),
2. the run's deployment's ``job_variables``,
3. the run's own ``job_variables``.

``env`` is merged variable by variable, so a default ``env`` entry survives a deployment
or a run that sets other variables.  Every caller that combines job variables goes through
:func:`merge_job_variables`; :func:`run_job_variables` is the only code that decides which
layers a run has.  Runners receive the result and only validate it (their pydantic model);
they never merge again.  Pure functions: no store, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbflow.schemas import FlowRun

__all__ = ["merge_job_variables", "run_job_variables", "runner_of"]


def merge_job_variables(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge job-variable layers, later ones winning key by key; ``env`` per variable.

    A non-mapping ``env`` in a layer replaces the merged one as it is, so the runner's
    validation reports it with the value that was given.
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in (layer or {}).items():
            if key == "env" and isinstance(value, Mapping):
                previous = merged.get("env")
                env = dict(previous) if isinstance(previous, Mapping) else {}
                env.update({str(k): str(v) for k, v in value.items()})
                merged["env"] = env
            else:
                merged[key] = value
    return merged


def runner_of(run: FlowRun, deployment_runner: str | None, default_runner: str) -> str:
    """Return the runner that executes ``run``: its own, else its deployment's, else the default."""
    return run.runner or deployment_runner or default_runner


def run_job_variables(
    run: FlowRun,
    *,
    runner: str,
    deployment_job_variables: Mapping[str, Any] | None = None,
    runner_defaults: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Return the run's final job variables: runner defaults < deployment < run."""
    defaults = (runner_defaults or {}).get(runner)
    return merge_job_variables(defaults, deployment_job_variables, run.job_variables)
