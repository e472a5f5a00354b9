"""Render the Kubernetes objects of a flow run: a batch/v1 Job and the Secret of its token.

Pure functions over plain dicts (the JSON the apiserver accepts), so they are checked
against the official schemas without a cluster (``kubernetes-validate``).  The Job comes
from a customizable template: the job variables' ``job_template`` (a whole Job manifest) or
:data:`DEFAULT_JOB_TEMPLATE`; the runner then sets what belongs to the run (name, labels,
the ``nbflow`` container's image, command and environment) and what the job variables give.
"""

from __future__ import annotations

import copy
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from nbflow.runners.base import JobVariables, container_working_dir
from nbflow.schemas import FlowRun

__all__ = [
    "CONTAINER_NAME",
    "DEFAULT_JOB_TEMPLATE",
    "FLOW_RUN_LABEL",
    "TOKEN_KEY",
    "KubernetesJobVariables",
    "job_name",
    "render_job",
    "render_secret",
]

FLOW_RUN_LABEL = "io.nbflow.flow-run-id"
DEPLOYMENT_LABEL = "io.nbflow.deployment-id"
CONTAINER_NAME = "nbflow"
#: The key of the run token in the run's Secret (and the variable it becomes).
TOKEN_KEY = "NBFLOW_API_TOKEN"

#: The base Job: one ``nbflow`` container, never restarted, no retries by Kubernetes.
DEFAULT_JOB_TEMPLATE: dict[str, Any] = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"labels": {"app.kubernetes.io/managed-by": "nbflow"}},
    "spec": {
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/managed-by": "nbflow"}},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": CONTAINER_NAME}],
            },
        },
    },
}


class KubernetesJobVariables(JobVariables):
    """Job variables of the Kubernetes runner."""

    image: str = Field(default="nbflow:latest", description="the image holding nbflow")
    namespace: str = Field(default="default", description="namespace of the Job and Secret")
    command: list[str] | None = Field(
        default=None, description="the container's command (default: nbflow execute <id>)"
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        default=None, description="Always, IfNotPresent or Never (Kubernetes' default by tag)"
    )
    service_account_name: str | None = Field(default=None, description="the pod's account")
    working_dir: str | None = Field(
        default=None,
        description="the container's working directory (default: the image's); a pipeline's "
        "child runs in its notebook's folder",
    )

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        return container_working_dir(value)

    labels: dict[str, str] = Field(default_factory=dict, description="Job and pod labels")
    annotations: dict[str, str] = Field(default_factory=dict, description="Job annotations")
    resources: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="container resources: {requests: {...}, limits: {...}}"
    )
    node_selector: dict[str, str] = Field(default_factory=dict, description="pod node selector")
    tolerations: list[dict[str, Any]] = Field(default_factory=list, description="pod tolerations")
    volumes: list[dict[str, Any]] = Field(default_factory=list, description="pod volumes")
    volume_mounts: list[dict[str, Any]] = Field(
        default_factory=list, description="the container's volume mounts"
    )
    host_network: bool = Field(default=False, description="run the pod in the host network")
    backoff_limit: int = Field(
        default=0,
        ge=0,
        le=0,
        description="always 0: Kubernetes never re-runs a notebook; the run's retries do",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=3600, ge=0, description="delete the finished Job after this many seconds"
    )
    active_deadline_seconds: int | None = Field(
        default=None, ge=1, description="the Job's time limit (DeadlineExceeded → Crashed)"
    )
    job_template: dict[str, Any] | None = Field(
        default=None, description="a whole batch/v1 Job manifest to start from"
    )
    job_name: str | None = Field(default=None, description="Job name prefix (default: run name)")
    delete_propagation: Literal["Foreground", "Background"] = Field(
        default="Foreground", description="how cancel deletes the Job's pods"
    )
    pod_start_timeout_seconds: float = Field(
        default=300.0, gt=0, description="a pod not running after this long → Crashed"
    )
    stream_output: bool = Field(default=True, description="ship pod logs into the run's logs")
    context: str | None = Field(default=None, description="kubeconfig context (outside a cluster)")


def _dns_label(text: str, limit: int) -> str:
    label = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:limit].strip("-")
    return label


def job_name(flow_run: FlowRun, prefix: str | None = None) -> str:
    """Return a DNS-1123 Job name from the run's name and id (unique per run, <= 52 chars)."""
    # 52: the Job controller appends "-xxxxx" to pod names, which must stay <= 63.
    base = _dns_label(prefix or flow_run.name, 42)
    return f"{base or 'nbflow'}-{flow_run.id.hex[:8]}"


def render_secret(name: str, namespace: str, flow_run: FlowRun, token: str) -> dict[str, Any]:
    """Return the Secret holding the run's API token."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/managed-by": "nbflow",
                FLOW_RUN_LABEL: str(flow_run.id),
            },
        },
        "type": "Opaque",
        "stringData": {TOKEN_KEY: token},
    }


def _default_pull_policy(image: str) -> str:
    last = image.rsplit("/", 1)[-1]
    if "@" in image:
        return "IfNotPresent"
    return "Always" if ":" not in last or last.endswith(":latest") else "IfNotPresent"


def render_job(
    flow_run: FlowRun,
    config: KubernetesJobVariables,
    env: dict[str, str],
    *,
    name: str,
    secret_name: str | None,
) -> dict[str, Any]:
    """Return the run's Job: the template with the run's container, labels and settings."""
    job = copy.deepcopy(config.job_template or DEFAULT_JOB_TEMPLATE)
    job["apiVersion"], job["kind"] = "batch/v1", "Job"
    meta = job.setdefault("metadata", {})
    meta.pop("generateName", None)
    meta["name"], meta["namespace"] = name, config.namespace
    run_labels = {FLOW_RUN_LABEL: str(flow_run.id), **config.labels}
    if flow_run.deployment_id is not None:
        run_labels[DEPLOYMENT_LABEL] = str(flow_run.deployment_id)
    meta["labels"] = {**(meta.get("labels") or {}), **run_labels}
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        "io.nbflow/flow-run-name": flow_run.name,
        **config.annotations,
    }
    spec = job.setdefault("spec", {})
    # Never Kubernetes' retries, whatever the template says: a run executes at most once
    # per claim, and its own retry policy (AwaitingRetry, a new claim) decides the rest.
    spec["backoffLimit"] = 0
    spec.pop("completions", None)
    spec.pop("parallelism", None)
    if config.ttl_seconds_after_finished is not None:
        spec["ttlSecondsAfterFinished"] = config.ttl_seconds_after_finished
    if config.active_deadline_seconds is not None:
        spec["activeDeadlineSeconds"] = config.active_deadline_seconds
    template = spec.setdefault("template", {})
    pod_meta = template.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **run_labels}
    pod = template.setdefault("spec", {})
    pod["restartPolicy"] = "Never"
    if config.host_network:
        pod["hostNetwork"] = True
        pod.setdefault("dnsPolicy", "ClusterFirstWithHostNet")
    if config.service_account_name:
        pod["serviceAccountName"] = config.service_account_name
    if config.node_selector:
        pod["nodeSelector"] = {**(pod.get("nodeSelector") or {}), **config.node_selector}
    if config.tolerations:
        pod["tolerations"] = [*(pod.get("tolerations") or []), *config.tolerations]
    if config.volumes:
        pod["volumes"] = [*(pod.get("volumes") or []), *config.volumes]
    containers = pod.setdefault("containers", [])
    container = next((c for c in containers if c.get("name") == CONTAINER_NAME), None)
    if container is None:
        container = {"name": CONTAINER_NAME}
        containers.insert(0, container)
    container["image"] = config.image
    container["imagePullPolicy"] = config.image_pull_policy or _default_pull_policy(config.image)
    container["command"] = config.command or ["nbflow", "execute", str(flow_run.id)]
    if config.working_dir:
        container["workingDir"] = config.working_dir
    container.pop("args", None)
    merged_env = [e for e in container.get("env") or [] if e.get("name") not in env]
    merged_env += [{"name": k, "value": v} for k, v in env.items()]
    if secret_name is not None and TOKEN_KEY not in env:
        merged_env = [e for e in merged_env if e.get("name") != TOKEN_KEY]
        merged_env.append(
            {
                "name": TOKEN_KEY,
                "valueFrom": {"secretKeyRef": {"name": secret_name, "key": TOKEN_KEY}},
            }
        )
    container["env"] = merged_env
    if config.resources:
        container["resources"] = config.resources
    if config.volume_mounts:
        container["volumeMounts"] = [*(container.get("volumeMounts") or []), *config.volume_mounts]
    return job
