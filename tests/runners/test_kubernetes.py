"""The Kubernetes runner against a real single-node cluster and a live ``nbflow server``.

Needs ``NBFLOW_TEST_K8S=1`` and ``KUBECONFIG`` (``scripts/k8s-up.sh``): the kubelet drives
the Docker daemon that holds the test image (``scripts/docker-images.sh``), so Jobs use
``imagePullPolicy: Never`` and ``hostNetwork`` (the cluster has no CNI) and reach the server
on 127.0.0.1.  The server's home is a hostPath volume, so the output notebook lands there.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nbflow.runners._k8s_manifest import FLOW_RUN_LABEL, TOKEN_KEY
from nbflow.runners.docker import InfrastructureError
from nbflow.runners.kubernetes import KubernetesRunner
from nbflow.schemas import TaskRunFilter
from nbflow.states import StateType
from tests.runners.live import (
    FLOW_NOTEBOOK,
    K8S_NAMESPACE,
    TEST_IMAGE,
    LiveServer,
    cancel_through_worker,
    require,
    scheduled_run,
    serving_worker,
)
from tests.runners.test_kubernetes_manifests import FULL_JOB, TEMPLATE


@pytest.fixture(scope="module")
def k8s() -> Iterator[Any]:
    require(
        "NBFLOW_TEST_K8S",
        "run scripts/docker-up.sh, scripts/docker-images.sh and scripts/k8s-up.sh, then set "
        "NBFLOW_TEST_K8S=1 and KUBECONFIG",
    )
    import kubernetes

    configuration = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(client_configuration=configuration)
    api = kubernetes.client.ApiClient(configuration)
    yield kubernetes.client.BatchV1Api(api), kubernetes.client.CoreV1Api(api)
    api.close()


@pytest.fixture
def runner(k8s: Any, live_server: LiveServer) -> Iterator[KubernetesRunner]:
    r = KubernetesRunner(
        client=live_server.client, api_url=live_server.url, token_factory=live_server.run_token
    )
    yield r
    r.close()


def _job(server: LiveServer, **extra: Any) -> dict[str, Any]:
    home = str(server.home)
    return {
        "image": TEST_IMAGE,
        "image_pull_policy": "Never",
        "namespace": K8S_NAMESPACE,
        "host_network": True,
        "volumes": [{"name": "home", "hostPath": {"path": home, "type": "Directory"}}],
        "volume_mounts": [{"name": "home", "mountPath": home}],
        "env": {"NBFLOW_HOME": home, "NBFLOW_RESULTS_URL": f"{home}/results"},
        "ttl_seconds_after_finished": 300,
        **extra,
    }


def _gone(read: Any, *args: Any, timeout: float = 90) -> bool:
    import kubernetes

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            read(*args)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return True
            raise
        time.sleep(0.5)
    return False


def test_notebook_flow_runs_as_a_job(
    runner: KubernetesRunner, k8s: Any, live_server: LiveServer
) -> None:
    batch, core = k8s
    run = live_server.new_run(FLOW_NOTEBOOK, "kubernetes", {"n": 3})
    infra = runner.submit(run, _job(live_server))
    namespace, name = infra.split(":")
    assert namespace == K8S_NAMESPACE
    job = batch.read_namespaced_job(name, namespace)
    assert job.metadata.labels[FLOW_RUN_LABEL] == str(run.id)
    env = {e.name: e for e in job.spec.template.spec.containers[0].env}
    assert env[TOKEN_KEY].value is None
    ref = env[TOKEN_KEY].value_from.secret_key_ref
    secret = core.read_namespaced_secret(ref.name, namespace)
    assert secret.metadata.owner_references[0].uid == job.metadata.uid
    assert runner.wait(infra, timeout=300) == 0
    client = live_server.client
    final = client.read_flow_run(run.id)
    assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
    tasks = client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
    assert [(t.name, t.state.name if t.state else None) for t in tasks] == [
        ("extract", "Completed"),
        ("report", "Completed"),
    ]
    messages = [log.message for log in client.read_logs(run.id).logs]
    assert any("3 ['EU', 'EU', 'EU']" in m for m in messages), messages
    response = httpx.get(
        f"{live_server.url}/flow_runs/{run.id}/output",
        headers={"Authorization": f"token {live_server.token}"},
    )
    assert response.status_code == 200, response.text
    texts = [
        "".join(o.get("text", ""))
        for c in json.loads(response.text)["cells"]
        for o in c.get("outputs", [])
    ]
    assert "3 ['EU', 'EU', 'EU']\n" in texts
    assert batch.read_namespaced_job_status(name, namespace).status.succeeded == 1


def test_cancel_deletes_the_job_its_pod_and_secret(
    runner: KubernetesRunner, k8s: Any, live_server: LiveServer
) -> None:
    batch, core = k8s
    run, marker = live_server.new_sleepy_run("kubernetes")
    infra = runner.submit(run, _job(live_server))
    live_server.client.update_flow_run(run.id, infrastructure_id=infra)  # as a worker does
    namespace, name = infra.split(":")
    live_server.wait_started(run, marker)
    done = threading.Thread(
        target=runner.cancel, args=(live_server.client.read_flow_run(run.id), 60)
    )
    done.start()
    done.join(180)
    assert not done.is_alive()
    states = [s.name for s in live_server.client.read_flow_run_states(run.id)]
    assert states[-2:] == ["Cancelling", "Cancelled"], states
    assert _gone(batch.read_namespaced_job, name, namespace)
    assert _gone(core.read_namespaced_secret, f"{name}-token", namespace)
    deadline = time.monotonic() + 90
    while core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items:
        assert time.monotonic() < deadline, "the Job's pod was not deleted"
        time.sleep(0.5)


def test_pod_that_cannot_pull_its_image_is_crashed_with_the_reason(
    runner: KubernetesRunner, k8s: Any, live_server: LiveServer
) -> None:
    batch, _ = k8s
    run = live_server.new_run(FLOW_NOTEBOOK, "kubernetes")
    infra = runner.submit(run, _job(live_server, image="nbflow-no-such-image:1"))
    runner.wait(infra, timeout=300)
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED, state
    assert state.message is not None and "ErrImageNeverPull" in state.message
    namespace, name = infra.split(":")
    assert _gone(batch.read_namespaced_job, name, namespace)


def test_deadline_exceeded_is_crashed_with_the_reason(
    runner: KubernetesRunner, live_server: LiveServer
) -> None:
    run, _ = live_server.new_sleepy_run("kubernetes")
    infra = runner.submit(run, _job(live_server, active_deadline_seconds=8))
    runner.wait(infra, timeout=300)
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED, state
    assert state.message is not None and "DeadlineExceeded" in state.message


def test_failing_notebook_is_failed(runner: KubernetesRunner, live_server: LiveServer) -> None:
    run = live_server.new_run(FLOW_NOTEBOOK, "kubernetes", {"n": 7})
    infra = runner.submit(run, _job(live_server))
    assert runner.wait(infra, timeout=300) == 1
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.FAILED, state


def test_the_apiserver_accepts_every_rendered_manifest_and_refuses_bad_ones(
    runner: KubernetesRunner, k8s: Any, live_server: LiveServer
) -> None:
    batch, core = k8s
    run = live_server.new_run(FLOW_NOTEBOOK, "kubernetes")
    for job in ({}, FULL_JOB, {"job_template": TEMPLATE}):
        config = runner.job_configuration(run, {**job, "namespace": K8S_NAMESPACE})
        manifest, secret = runner.manifests(run, config, f"dry-{run.id.hex[:8]}")  # type: ignore[arg-type]
        batch.create_namespaced_job(K8S_NAMESPACE, manifest, dry_run="All")
        if secret is not None:
            core.create_namespaced_secret(K8S_NAMESPACE, secret, dry_run="All")
    with pytest.raises(InfrastructureError, match="422"):
        runner.submit(run, _job(live_server, labels={"bad key!": "x"}))
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "Kubernetes refused the Job" in state.message


def _pods(core: Any, namespace: str, job: str) -> list[Any]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={job}").items)


def _exists(read: Any, *args: Any) -> bool:
    import kubernetes

    try:
        read(*args)
    except kubernetes.client.ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def test_worker_cancel_deletes_the_job_its_pod_and_secret(
    k8s: Any, live_server: LiveServer
) -> None:
    """``nbflow worker`` owns the run: on cancel its Job, pod and Secret are deleted."""
    batch, core = k8s

    def left(infra: str) -> bool:
        namespace, name = infra.split(":")
        return (
            _exists(batch.read_namespaced_job, name, namespace)
            or _exists(core.read_namespaced_secret, f"{name}-token", namespace)
            or bool(_pods(core, namespace, name))
        )

    cancel_through_worker(live_server, "kubernetes", KubernetesRunner, left, **_job(live_server))


COUNTED_NOTEBOOK = [
    "%load_ext nbflow",
    "%%flow counted\ncounter = ''\nseconds = 300",
    "with open(counter, 'a') as f:\n    f.write('executed\\n')",
    "import time\ntime.sleep(seconds)",
]


def test_a_pod_deleted_mid_run_never_runs_the_notebook_twice(
    k8s: Any, live_server: LiveServer
) -> None:
    """Delete the running pod: Kubernetes' replacement never executes; the run is rescheduled.

    Every execution of the notebook appends a line to the counter and follows its own claim
    (Pending) and Running; the deleted pod's Job is removed so its replacement pod never
    runs.  After cancel, the run never leaves Cancelled.
    """
    batch, core = k8s
    counter = live_server.home / f"counter-{time.monotonic_ns()}"
    run = scheduled_run(
        live_server, COUNTED_NOTEBOOK, "kubernetes", {"counter": str(counter)}, **_job(live_server)
    )

    def executions() -> int:
        return len(counter.read_text().splitlines()) if counter.exists() else 0

    with serving_worker(live_server, "kubernetes", KubernetesRunner, kill_grace=5) as (_, user):
        live_server.wait_state(run.id, "RUNNING")
        deadline = time.monotonic() + 240
        while executions() < 1:
            assert time.monotonic() < deadline, "the notebook never started"
            time.sleep(0.2)
        first = live_server.client.read_flow_run(run.id).infrastructure_id
        assert first is not None
        namespace, job = first.split(":")
        (pod,) = _pods(core, namespace, job)
        core.delete_namespaced_pod(pod.metadata.name, namespace)
        # Rescheduled and claimed again (a new Job), or Crashed: once either way.
        while True:
            current = live_server.client.read_flow_run(run.id)
            moved = current.infrastructure_id not in (None, first)
            if current.state_type is StateType.CRASHED or (
                moved and current.state_type is StateType.RUNNING and executions() >= 2
            ):
                break
            assert time.monotonic() < deadline, f"the run stayed {current.state}"
            time.sleep(0.2)
        # The deleted pod's Job and any replacement pod are gone.
        while _exists(batch.read_namespaced_job, job, namespace) or _pods(core, namespace, job):
            assert time.monotonic() < deadline, "the deleted pod's Job or a replacement is left"
            time.sleep(0.2)
        if current.state_type is StateType.RUNNING:
            user.cancel_flow_run(run.id)
        final = live_server.wait_state(run.id, "CANCELLED", "CRASHED", timeout=120)
        time.sleep(3)  # passes of the worker, and a dying pod's last words
    states = live_server.client.read_flow_run_states(run.id)
    names = [s.name for s in states]
    assert live_server.client.read_flow_run(run.id).state == final.state, names
    assert final.state is not None and names.count(final.state.name) == 1, names
    # Each execution had a claim of its own and a Running of its own: Kubernetes ran none.
    assert executions() == names.count("Running") == names.count("Pending"), names
    assert executions() <= 2, names
