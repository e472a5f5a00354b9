"""Every manifest the Kubernetes runner renders validates against the official schemas.

``kubernetes-validate`` (strict: unknown fields are errors) for several Kubernetes versions;
no cluster needed, so these always run.
"""

from __future__ import annotations

import uuid
from typing import Any

import kubernetes_validate
import pytest

from nbflow.exceptions import ValidationError
from nbflow.runners import get_runner
from nbflow.runners._k8s_manifest import FLOW_RUN_LABEL, TOKEN_KEY, job_name
from nbflow.runners.kubernetes import KubernetesJobVariables, KubernetesRunner
from nbflow.schemas import FlowRun

VERSIONS = ["1.25", "1.29", "1.33", "1.37"]

FULL_JOB = {
    "image": "registry.example.com/team/nbflow:1.4",
    "namespace": "data",
    "service_account_name": "nbflow-runner",
    "labels": {"team": "data"},
    "annotations": {"owner": "data@example.com"},
    "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "2Gi"}},
    "node_selector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "batch", "operator": "Exists", "effect": "NoSchedule"}],
    "volumes": [{"name": "data", "hostPath": {"path": "/srv/data"}}],
    "volume_mounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
    "host_network": True,
    "backoff_limit": 0,
    "ttl_seconds_after_finished": 600,
    "active_deadline_seconds": 3600,
    "env": {"EXTRA": "1"},
    "working_dir": "/data/pipelines",
}

TEMPLATE = {
    "apiVersion": "batch/v1",
    "kind": "Job",
    "metadata": {"labels": {"from-template": "yes"}},
    "spec": {
        "template": {
            "spec": {
                "terminationGracePeriodSeconds": 45,
                "containers": [
                    {"name": "sidecar", "image": "busybox:1.36", "command": ["sleep", "1"]},
                    {"name": "nbflow", "env": [{"name": "FROM_TEMPLATE", "value": "1"}]},
                ],
            }
        }
    },
}


def _run(name: str = "Nightly Report: EU/2026") -> FlowRun:
    return FlowRun(name=name, flow_id=uuid.uuid4(), deployment_id=uuid.uuid4())


def _render(job: dict[str, Any], token: str | None = "nbflow-run.x.sig") -> tuple[Any, Any]:
    runner = KubernetesRunner(api_url="http://127.0.0.1:8888/nbflow/api/v1",
                              token_factory=lambda r: token)  # fmt: skip
    run = _run()
    config = runner.job_configuration(run, job)
    assert isinstance(config, KubernetesJobVariables)
    return runner.manifests(run, config, job_name(run, config.job_name))


def test_registered_as_kubernetes() -> None:
    assert get_runner("kubernetes") is KubernetesRunner


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    "job", [{}, FULL_JOB, {"job_template": TEMPLATE}], ids=["default", "full", "template"]
)
def test_manifests_validate_strictly(version: str, job: dict[str, Any]) -> None:
    manifest, secret = _render(job)
    kubernetes_validate.validate(manifest, version, strict=True)
    kubernetes_validate.validate(secret, version, strict=True)


def test_strict_validation_catches_unknown_fields() -> None:
    manifest, _ = _render({})
    manifest["spec"]["template"]["spec"]["containers"][0]["imagePolicy"] = "Never"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, "1.33", strict=True)


def test_token_comes_from_the_secret_not_a_plain_value() -> None:
    manifest, secret = _render(FULL_JOB)
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert "value" not in env[TOKEN_KEY]
    ref = env[TOKEN_KEY]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": TOKEN_KEY}
    assert secret["stringData"] == {TOKEN_KEY: "nbflow-run.x.sig"}
    assert secret["metadata"]["namespace"] == manifest["metadata"]["namespace"] == "data"
    assert env["NBFLOW_API_URL"]["value"] == "http://127.0.0.1:8888/nbflow/api/v1"
    assert env["EXTRA"]["value"] == "1"
    assert "nbflow-run.x.sig" not in str(manifest)


def test_no_token_no_secret() -> None:
    manifest, secret = _render({}, token=None)
    assert secret is None
    names = [e["name"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert TOKEN_KEY not in names


def test_job_fields_follow_the_job_variables() -> None:
    manifest, _ = _render(FULL_JOB)
    spec = manifest["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert manifest["metadata"]["name"].startswith("nightly-report-eu-2026-")
    assert len(manifest["metadata"]["name"]) <= 52
    assert manifest["metadata"]["labels"]["team"] == "data"
    run_id = manifest["metadata"]["labels"][FLOW_RUN_LABEL]
    assert spec["template"]["metadata"]["labels"][FLOW_RUN_LABEL] == run_id
    assert container["command"] == ["nbflow", "execute", run_id]
    assert manifest["metadata"]["annotations"]["owner"] == "data@example.com"
    assert (spec["backoffLimit"], spec["ttlSecondsAfterFinished"]) == (0, 600)
    assert spec["activeDeadlineSeconds"] == 3600
    assert pod["restartPolicy"] == "Never" and pod["hostNetwork"] is True
    assert pod["serviceAccountName"] == "nbflow-runner"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["resources"]["limits"] == {"memory": "2Gi"}
    assert container["volumeMounts"][0]["mountPath"] == "/data"


def test_template_is_kept_and_filled() -> None:
    manifest, _ = _render({"job_template": TEMPLATE, "image": "nbflow"})
    pod = manifest["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 45
    assert [c["name"] for c in pod["containers"]] == ["sidecar", "nbflow"]
    nbflow = pod["containers"][1]
    assert nbflow["imagePullPolicy"] == "Always"  # untagged: Kubernetes' default
    assert {e["name"] for e in nbflow["env"]} >= {"FROM_TEMPLATE", "NBFLOW__FLOW_RUN_ID"}
    assert manifest["metadata"]["labels"]["from-template"] == "yes"
    assert pod["restartPolicy"] == "Never"


def test_bad_job_variables_name_the_field() -> None:
    runner = KubernetesRunner(api_url="http://127.0.0.1:8888/nbflow/api/v1")
    with pytest.raises(ValidationError, match=r"job_variables\.backoff_limit"):
        runner.job_configuration(_run(), {"backoff_limit": -1})
    with pytest.raises(ValidationError, match=r"job_variables\.image_pull_policy"):
        runner.job_configuration(_run(), {"image_pull_policy": "Sometimes"})


def _pod(state: Any, phase: str = "Pending") -> Any:
    from kubernetes.client import V1ContainerStatus, V1Pod, V1PodStatus

    status = V1ContainerStatus(
        name="nbflow", image="nbflow:test", image_id="", ready=False, restart_count=0, state=state
    )
    return V1Pod(status=V1PodStatus(phase=phase, container_statuses=[status]))


def test_pod_states_map_to_crash_causes() -> None:
    from kubernetes.client import (
        V1ContainerState,
        V1ContainerStateRunning,
        V1ContainerStateTerminated,
        V1ContainerStateWaiting,
    )

    from nbflow.runners.kubernetes import _pod_outcome

    for reason in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull"):
        waiting = V1ContainerState(waiting=V1ContainerStateWaiting(reason=reason, message="m"))
        outcome = _pod_outcome(_pod(waiting))
        assert outcome is not None and outcome.reason == f"{reason}: m"
    creating = V1ContainerState(waiting=V1ContainerStateWaiting(reason="ContainerCreating"))
    assert _pod_outcome(_pod(creating)) is None
    assert _pod_outcome(_pod(V1ContainerState(running=V1ContainerStateRunning()))) is None
    oom = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=137, reason="OOMKilled"))
    outcome = _pod_outcome(_pod(oom, "Failed"))
    assert outcome is not None and outcome.exit_code == 137
    assert outcome.reason is not None and outcome.reason.startswith("OOMKilled")
    done = V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=0, reason="Completed"))
    outcome = _pod_outcome(_pod(done, "Succeeded"))
    assert outcome is not None and (outcome.exit_code, outcome.reason) == (0, None)


def test_a_job_past_its_deadline_is_failed_before_its_condition_says_so() -> None:
    """The Job controller deletes a late Job's pods before it records Failed: that pod
    deletion must read as the deadline (Crashed), not as a drain (rescheduled)."""
    from datetime import UTC, datetime, timedelta

    from kubernetes.client import V1Job, V1JobSpec, V1JobStatus, V1PodTemplateSpec

    from nbflow.runners.kubernetes import _past_deadline

    def job(deadline: int | None, started_ago: float | None) -> V1Job:
        start = None if started_ago is None else datetime.now(UTC) - timedelta(seconds=started_ago)
        spec = V1JobSpec(template=V1PodTemplateSpec(), active_deadline_seconds=deadline)
        return V1Job(spec=spec, status=V1JobStatus(start_time=start))

    assert _past_deadline(job(8, 9))
    assert not _past_deadline(job(8, 2))
    assert not _past_deadline(job(None, 900))
    assert not _past_deadline(job(8, None))


def test_the_working_dir_is_the_containers_and_absolute() -> None:
    job, _ = _render(FULL_JOB)
    (container,) = [
        c for c in job["spec"]["template"]["spec"]["containers"] if c["name"] == "nbflow"
    ]
    assert container["workingDir"] == "/data/pipelines"
    with pytest.raises(ValidationError, match="'data/pipelines'"):
        _render({"working_dir": "data/pipelines"})
