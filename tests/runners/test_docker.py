"""The Docker runner: pure configuration checks, then real containers against a live server.

The container tests need ``NBFLOW_TEST_DOCKER=1``, a daemon (``scripts/docker-up.sh``) and
the test image with the current nbflow (``scripts/docker-images.sh``).  Containers use the
host network and reach the ``nbflow server`` on 127.0.0.1 with a per-run token.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nbflow.exceptions import ValidationError
from nbflow.runners import get_runner
from nbflow.runners.docker import (
    FLOW_RUN_LABEL,
    DockerJobVariables,
    DockerRunner,
    InfrastructureError,
    container_name,
    default_pull_policy,
    parse_volume,
)
from nbflow.schemas import FlowRun, TaskRunFilter
from nbflow.states import StateType
from tests.runners.live import (
    FLOW_NOTEBOOK,
    TEST_IMAGE,
    LiveServer,
    cancel_through_worker,
    require,
)

LOCAL_API = "http://127.0.0.1:8888/nbflow/api/v1"


def _run(name: str = "My Run/ 1") -> FlowRun:
    import uuid

    return FlowRun(name=name, flow_id=uuid.uuid4())


# -- configuration (no daemon needed) ----------------------------------------------------


def test_registered_as_docker() -> None:
    assert get_runner("docker") is DockerRunner


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        ("nbflow", "Always"),
        ("nbflow:latest", "Always"),
        ("registry:5000/team/nbflow", "Always"),
        ("registry:5000/team/nbflow:1.2", "IfNotPresent"),
        ("nbflow:test", "IfNotPresent"),
        ("nbflow@sha256:abc", "IfNotPresent"),
    ],
)
def test_default_pull_policy_follows_kubernetes(image: str, policy: str) -> None:
    assert default_pull_policy(image) == policy


def test_volumes_are_validated_and_errors_name_the_value() -> None:
    assert parse_volume("/data:/data:ro") == ("/data", "/data", "ro")
    assert parse_volume("named:/cache") == ("named", "/cache", "rw")
    for bad in ("/data", "/a:relative", "/a:/b:rx", "/a:/b:ro:extra", ":/b"):
        with pytest.raises(ValidationError) as info:
            parse_volume(bad)
        assert repr(bad) in str(info.value) and "job_variables.volumes" in str(info.value)
    runner = DockerRunner(api_url=LOCAL_API)
    with pytest.raises(ValidationError, match="'/x:y'"):
        runner.job_configuration(_run(), {"volumes": ["/x:y"]})


def test_the_working_dir_is_the_containers_and_absolute() -> None:
    assert _options("linux", LOCAL_API, working_dir="/data/pipe")["working_dir"] == "/data/pipe"
    assert "working_dir" not in _options("linux", LOCAL_API)
    runner = DockerRunner(api_url=LOCAL_API)
    with pytest.raises(ValidationError, match="'data/pipe'"):
        runner.job_configuration(_run(), {"working_dir": "data/pipe"})


def test_container_name_is_sanitized_and_unique_per_run() -> None:
    a, b = _run("Nightly report: EU/2026"), _run("Nightly report: EU/2026")
    assert container_name(a).startswith("Nightly-report-EU-2026-")
    assert container_name(a) != container_name(b)
    assert container_name(_run("///")).startswith("nbflow-")


def _options(platform: str, api_url: str, **job: Any) -> dict[str, Any]:
    runner = DockerRunner(api_url=api_url, platform=platform, token_factory=lambda r: "tok")
    run = _run()
    config = runner.job_configuration(run, job)
    assert isinstance(config, DockerJobVariables)
    return runner.container_options(run, config)


def test_local_api_uses_the_host_network_on_linux() -> None:
    options = _options("linux", LOCAL_API)
    assert options["network_mode"] == "host"
    assert options["environment"]["NBFLOW_API_URL"] == LOCAL_API
    assert options["environment"]["NBFLOW_API_TOKEN"] == "tok"
    assert options["init"] is True
    assert options["command"][:2] == ["nbflow", "execute"]
    assert options["labels"][FLOW_RUN_LABEL] == options["command"][2]


def test_local_api_is_host_docker_internal_elsewhere_or_on_a_network() -> None:
    mac = _options("darwin", LOCAL_API)
    assert "network_mode" not in mac
    assert mac["environment"]["NBFLOW_API_URL"] == (
        "http://host.docker.internal:8888/nbflow/api/v1"
    )
    bridged = _options("linux", LOCAL_API, network_mode="bridge")
    assert bridged["environment"]["NBFLOW_API_URL"].startswith("http://host.docker.internal:")
    assert bridged["extra_hosts"] == {"host.docker.internal": "host-gateway"}
    remote = _options("darwin", "https://nbflow.example.com/nbflow/api/v1")
    assert remote["environment"]["NBFLOW_API_URL"] == "https://nbflow.example.com/nbflow/api/v1"


def test_user_api_url_and_labels_win() -> None:
    options = _options(
        "linux",
        LOCAL_API,
        env={"NBFLOW_API_URL": "http://10.0.0.5:8888/nbflow/api/v1"},
        labels={"team": "data"},
        volumes=["/srv/in:/data/in:ro"],
    )
    assert options["environment"]["NBFLOW_API_URL"] == "http://10.0.0.5:8888/nbflow/api/v1"
    assert options["labels"]["team"] == "data"
    assert options["volumes"] == {"/srv/in": {"bind": "/data/in", "mode": "ro"}}


def test_missing_daemon_crashes_the_run_with_the_reason(live_server: LiveServer) -> None:
    run = live_server.new_run(FLOW_NOTEBOOK, "docker")
    runner = DockerRunner(client=live_server.client, api_url=live_server.url)
    with pytest.raises(InfrastructureError, match="cannot reach the Docker daemon"):
        runner.submit(run, {"docker_host": "unix:///nonexistent/docker.sock"})
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "cannot reach the Docker daemon" in state.message


# -- real containers -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    require(
        "NBFLOW_TEST_DOCKER",
        "run scripts/docker-up.sh and scripts/docker-images.sh, then set NBFLOW_TEST_DOCKER=1",
    )
    import docker

    client = docker.from_env()
    yield client
    client.close()


@pytest.fixture
def runner(docker_client: Any, live_server: LiveServer) -> Iterator[DockerRunner]:
    lines: list[str] = []
    r = DockerRunner(
        client=live_server.client,
        api_url=live_server.url,
        token_factory=live_server.run_token,
        output=lines.append,
    )
    yield r
    r.close()


def _job(server: LiveServer, **extra: Any) -> dict[str, Any]:
    """Job variables: the test image, and the server's home mounted at the same path."""
    home = str(server.home)
    return {
        "image": TEST_IMAGE,
        "image_pull_policy": "Never",
        "volumes": [f"{home}:{home}"],
        "env": {"NBFLOW_HOME": home, "NBFLOW_RESULTS_URL": f"{home}/results"},
        "labels": {"io.nbflow.test": "docker-runner"},
        **extra,
    }


def _remove(docker_client: Any, infrastructure_id: str) -> None:
    try:
        docker_client.containers.get(infrastructure_id.rpartition(":")[2]).remove(force=True)
    except Exception:
        pass


def test_notebook_flow_runs_in_a_container(
    runner: DockerRunner, docker_client: Any, live_server: LiveServer
) -> None:
    run = live_server.new_run(FLOW_NOTEBOOK, "docker", {"n": 3})
    infra = runner.submit(run, _job(live_server))
    try:
        container = docker_client.containers.get(infra.rpartition(":")[2])
        assert container.labels[FLOW_RUN_LABEL] == str(run.id)
        assert container.labels["io.nbflow.test"] == "docker-runner"
        assert container.attrs["HostConfig"]["Init"] is True
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert runner.wait(infra, timeout=240) == 0
        client = live_server.client
        final = client.read_flow_run(run.id)
        assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
        states = [s.name for s in client.read_flow_run_states(run.id)]
        assert states[-2:] == ["Running", "Completed"], states
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
        outputs = [
            "".join(o.get("text", ""))
            for c in json.loads(response.text)["cells"]
            for o in c.get("outputs", [])
        ]
        assert "3 ['EU', 'EU', 'EU']\n" in outputs
    finally:
        _remove(docker_client, infra)


def test_failing_notebook_is_failed(
    runner: DockerRunner, docker_client: Any, live_server: LiveServer
) -> None:
    run = live_server.new_run(FLOW_NOTEBOOK, "docker", {"n": 7})
    infra = runner.submit(run, _job(live_server, auto_remove=True))
    assert runner.wait(infra, timeout=240) == 1
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.FAILED
    assert state.message is not None and "AssertionError" in state.message
    import docker

    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(infra.rpartition(":")[2])


def test_killed_container_is_crashed(
    runner: DockerRunner, docker_client: Any, live_server: LiveServer
) -> None:
    run, marker = live_server.new_sleepy_run("docker")
    infra = runner.submit(run, _job(live_server, auto_remove=True))
    live_server.wait_started(run, marker)
    docker_client.containers.get(infra.rpartition(":")[2]).kill()
    assert runner.wait(infra, timeout=60) == 137
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "exited with code 137" in state.message


def test_cancel_stops_the_container_gracefully(
    runner: DockerRunner, docker_client: Any, live_server: LiveServer
) -> None:
    import docker

    run, marker = live_server.new_sleepy_run("docker")
    infra = runner.submit(run, _job(live_server))
    live_server.client.update_flow_run(run.id, infrastructure_id=infra)  # as the dispatcher does
    try:
        live_server.wait_started(run, marker)
        # A long grace: the container stops on SIGTERM (init=True), never by SIGKILL.
        done = threading.Thread(
            target=runner.cancel, args=(live_server.client.read_flow_run(run.id), 120)
        )
        done.start()
        done.join(150)
        assert not done.is_alive()
        assert runner.wait(infra, timeout=0) == 0  # exit 0: nbflow execute saw SIGTERM
        states = [s.name for s in live_server.client.read_flow_run_states(run.id)]
        assert states[-2:] == ["Cancelling", "Cancelled"], states
        with pytest.raises(docker.errors.NotFound):  # a cancelled run leaves no container
            docker_client.containers.get(infra.rpartition(":")[2])
    finally:
        _remove(docker_client, infra)


def test_bad_image_crashes_the_run_with_the_reason(
    runner: DockerRunner, live_server: LiveServer
) -> None:
    run = live_server.new_run(FLOW_NOTEBOOK, "docker")
    with pytest.raises(InfrastructureError, match="nbflow-no-such-image:1"):
        runner.submit(run, _job(live_server, image="nbflow-no-such-image:1"))
    state = live_server.client.read_flow_run(run.id).state
    assert state is not None and state.type is StateType.CRASHED
    assert state.message is not None and "nbflow-no-such-image:1" in state.message
    never = live_server.new_run(FLOW_NOTEBOOK, "docker")
    with pytest.raises(InfrastructureError, match="image_pull_policy is Never"):
        runner.submit(never, _job(live_server, image="nbflow-no-such-image:2"))


# -- notebooks' own packages ---------------------------------------------------------------
REPO = Path(__file__).resolve().parents[2]


def _code_cells(notebook: Path) -> list[str]:
    cells = json.loads(notebook.read_text())["cells"]
    return ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]


def _outputs_text(live_server: LiveServer, run: FlowRun) -> str:
    """Return every text output of the run's stored output notebook, joined."""
    response = httpx.get(
        f"{live_server.url}/flow_runs/{run.id}/output",
        headers={"Authorization": f"token {live_server.token}"},
    )
    assert response.status_code == 200, response.text
    texts = []
    for cell in json.loads(response.text)["cells"]:
        for output in cell.get("outputs", []):
            texts.append("".join(output.get("text", "")))
            for mime in ("text/plain", "text/markdown"):
                texts.append("".join(output.get("data", {}).get(mime, "")))
    return "\n".join(texts)


def test_example_notebook_with_numpy_and_pandas_runs_in_the_project_image(
    runner: DockerRunner, docker_client: Any, live_server: LiveServer
) -> None:
    """examples/parameterized_report.ipynb (numpy, pandas, IPython.display) completes."""
    cells = _code_cells(REPO / "examples" / "parameterized_report.ipynb")
    assert any("import pandas as pd" in c for c in cells)
    run = live_server.new_run(cells, "docker", {"region": "US", "months": 4})
    infra = runner.submit(run, _job(live_server))
    try:
        assert runner.wait(infra, timeout=300) == 0
        final = live_server.client.read_flow_run(run.id)
        assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
        tasks = live_server.client.read_task_runs(TaskRunFilter(flow_run_ids=[run.id]))
        assert [(t.name, t.state.name if t.state else None) for t in tasks] == [
            ("build_data", "Completed"),
            ("kpis", "Completed"),
            ("render", "Completed"),
        ]
        text = _outputs_text(live_server, run)
        assert "## Sales report: US" in text
        assert "total revenue over 4 months" in text
    finally:
        _remove(docker_client, infra)


def test_requirements_image_recipe_adds_a_notebooks_packages(
    runner: DockerRunner, docker_client: Any, live_server: LiveServer, tmp_path: Path
) -> None:
    """docker/requirements.Dockerfile: the test image + a requirements.txt from PyPI."""
    import docker

    with pytest.raises(docker.errors.ContainerError):  # not in the project image
        docker_client.containers.run(
            TEST_IMAGE, ["python", "-c", "import tabulate"], remove=True, network_mode="host"
        )
    context = tmp_path / "context"
    context.mkdir()
    (context / "requirements.txt").write_text("tabulate==0.9.0\n")
    (context / "Dockerfile").write_text((REPO / "docker" / "requirements.Dockerfile").read_text())
    tag = f"nbflow-test-requirements:{tmp_path.name.lower()}"
    docker_client.images.build(
        path=str(context),
        tag=tag,
        buildargs={"NBFLOW_IMAGE": TEST_IMAGE},
        network_mode="host",  # the daemon has no bridge: only host networking reaches PyPI
        rm=True,
    )
    cells = [
        "%load_ext nbflow",
        "%%flow tables\nrows = 3",
        "%%task table\nimport tabulate\nprint(tabulate.tabulate([[i, i * i] for i in range(rows)]))",
    ]
    run = live_server.new_run(cells, "docker")
    infra = runner.submit(run, _job(live_server, image=tag))
    try:
        assert runner.wait(infra, timeout=300) == 0
        final = live_server.client.read_flow_run(run.id)
        assert final.state is not None and final.state.type is StateType.COMPLETED, final.state
        assert "2  4" in _outputs_text(live_server, run)
    finally:
        _remove(docker_client, infra)
        docker_client.images.remove(tag, force=True)


def test_worker_cancel_stops_and_removes_the_container(
    docker_client: Any, live_server: LiveServer
) -> None:
    """``nbflow worker`` owns the run: on cancel it stops and removes its container."""
    import docker

    def left(infra: str) -> bool:
        try:
            docker_client.containers.get(infra.rpartition(":")[2])
        except docker.errors.NotFound:
            return False
        return True

    cancel_through_worker(live_server, "docker", DockerRunner, left, **_job(live_server))
