"""Smoke tests for the Docker and Kubernetes test infrastructure.

They check what ``scripts/docker-up.sh``, ``scripts/docker-images.sh`` and
``scripts/k8s-up.sh`` provide, against the real daemon and the real cluster:

- ``NBFLOW_TEST_DOCKER=1``: the Docker daemon answers and a container from the test image
  (``NBFLOW_TEST_IMAGE``, default ``nbflow:test``) imports nbflow and papermill with host
  networking.
- ``NBFLOW_TEST_K8S=1``: the apiserver (``KUBECONFIG``) answers and a batch/v1 Job with
  ``hostNetwork`` and ``imagePullPolicy: Never`` running the test image completes in the
  namespace ``NBFLOW_TEST_K8S_NAMESPACE`` (default ``nbflow-test``).

Unset, the tests skip locally and fail under CI (``CI`` set), so CI cannot silently lose them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

TEST_IMAGE = os.environ.get("NBFLOW_TEST_IMAGE", "nbflow:test")
K8S_NAMESPACE = os.environ.get("NBFLOW_TEST_K8S_NAMESPACE", "nbflow-test")
IMPORT_CHECK = "import nbflow, papermill; print('nbflow-smoke-ok')"


def _require(flag: str, how: str) -> None:
    """Skip (or fail under CI) unless the environment variable ``flag`` is ``1``."""
    if os.environ.get(flag) == "1":
        return
    reason = f"{flag} is not 1; {how}"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    """Return a docker SDK client for the daemon from ``DOCKER_HOST`` (or the default socket)."""
    _require(
        "NBFLOW_TEST_DOCKER",
        "run scripts/docker-up.sh and scripts/docker-images.sh, then set NBFLOW_TEST_DOCKER=1",
    )
    docker = pytest.importorskip("docker")
    client = docker.from_env()
    try:
        yield client
    finally:
        client.close()


def test_docker_daemon_answers(docker_client: Any) -> None:
    assert docker_client.ping() is True
    info = docker_client.info()
    assert info["ServerVersion"]


def test_test_image_imports_nbflow_with_host_network(docker_client: Any) -> None:
    output = docker_client.containers.run(
        TEST_IMAGE,
        ["python", "-c", IMPORT_CHECK],
        network_mode="host",
        init=True,
        remove=True,
        labels={"nbflow.test": "infra-smoke"},
    )
    assert b"nbflow-smoke-ok" in output


@pytest.fixture(scope="module")
def k8s_api() -> Any:
    """Return a configured kubernetes ApiClient for ``KUBECONFIG``."""
    _require(
        "NBFLOW_TEST_K8S",
        "run scripts/docker-up.sh, scripts/docker-images.sh and scripts/k8s-up.sh, then set "
        "NBFLOW_TEST_K8S=1 and KUBECONFIG",
    )
    kubernetes = pytest.importorskip("kubernetes")
    kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def test_apiserver_answers(k8s_api: Any) -> None:
    from kubernetes import client

    version = client.VersionApi(k8s_api).get_code()
    assert version.git_version
    nodes = client.CoreV1Api(k8s_api).list_node().items
    ready = [
        n.metadata.name
        for n in nodes
        if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
    ]
    assert ready, f"no Ready node among {[n.metadata.name for n in nodes]}"


def _job_body(name: str) -> dict[str, Any]:
    """Build a minimal batch/v1 Job that runs the import check in the test image."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"nbflow.test": "infra-smoke"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"nbflow.test": "infra-smoke"}},
                "spec": {
                    "restartPolicy": "Never",
                    "hostNetwork": True,
                    "containers": [
                        {
                            "name": "smoke",
                            "image": TEST_IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python", "-c", IMPORT_CHECK],
                        }
                    ],
                },
            },
        },
    }


def test_trivial_job_completes(k8s_api: Any) -> None:
    from kubernetes import client, watch

    batch = client.BatchV1Api(k8s_api)
    core = client.CoreV1Api(k8s_api)
    name = f"infra-smoke-{uuid.uuid4().hex[:8]}"
    batch.create_namespaced_job(K8S_NAMESPACE, _job_body(name))
    try:
        final = None
        # The watch bounds the wait (a generous limit, not a timing assertion).
        for event in watch.Watch().stream(
            batch.list_namespaced_job,
            K8S_NAMESPACE,
            field_selector=f"metadata.name={name}",
            timeout_seconds=180,
        ):
            status = event["object"].status
            if status.succeeded or status.failed:
                final = status
                break
        pods = core.list_namespaced_pod(K8S_NAMESPACE, label_selector=f"job-name={name}").items
        logs = "".join(core.read_namespaced_pod_log(p.metadata.name, K8S_NAMESPACE) for p in pods)
        assert final is not None, f"job {name} did not finish; pods: {pods}"
        assert final.succeeded == 1, f"job {name} failed; logs:\n{logs}"
        assert "nbflow-smoke-ok" in logs
    finally:
        batch.delete_namespaced_job(
            name, K8S_NAMESPACE, propagation_policy="Background", grace_period_seconds=0
        )
        # Leave the namespace tidy for the next test, without relying on timing.
        for _ in range(60):
            if not core.list_namespaced_pod(K8S_NAMESPACE, label_selector=f"job-name={name}").items:
                break
            time.sleep(0.5)
