"""The Docker runner: ``nbflow execute <id>`` in a container of the run's image.

The container gets the run's environment (``NBFLOW__FLOW_RUN_ID``, the API URL and the
per-run token) with the API URL rewritten so the container reaches the server: a server on
this machine's loopback is reached through the host network on Linux (``network_mode:
host``) and through ``host.docker.internal`` elsewhere (or when the job names a network);
an ``NBFLOW_API_URL`` in the job's ``env`` always wins.  Containers run with ``init=True``
so ``docker stop`` (SIGTERM) reaches ``nbflow execute`` instead of a PID 1 that ignores it.

Pull policy follows Kubernetes: ``Always``, ``IfNotPresent`` or ``Never``; unset, an image
tagged ``:latest`` (or untagged) is always pulled and any other is pulled when missing.

A watcher thread per container ships the container's output into the run's logs
(``client.write_logs``), waits for the exit and reports a non-zero exit of an unfinished
run as Crashed.  A daemon that cannot be reached or an image that cannot be found crashes
the run with the reason before :meth:`DockerRunner.submit` raises.

The infrastructure id is ``<daemon id>:<container id>``.  The docker SDK is imported only
when the runner is used (``pip install 'nbflow[docker]'``).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator

from nbflow.exceptions import NbflowError, ValidationError
from nbflow.runners.base import JobVariables, Runner, container_working_dir
from nbflow.runners.logship import LogShipper
from nbflow.schemas import FlowRun
from nbflow.states import Crashed

__all__ = [
    "DockerJobVariables",
    "DockerRunner",
    "InfrastructureError",
    "container_name",
    "default_pull_policy",
    "parse_volume",
]

logger = logging.getLogger("nbflow.runners.docker")

PullPolicy = Literal["Always", "IfNotPresent", "Never"]
#: The label carrying the flow run id on every container (and pod) nbflow starts.
FLOW_RUN_LABEL = "io.nbflow.flow-run-id"
HOST_ALIAS = "host.docker.internal"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "[::1]"}
_VOLUME_MODES = {"ro", "rw", "z", "Z", "shared", "slave", "private", "rshared", "rslave"}


class InfrastructureError(NbflowError):
    """The infrastructure could not start or reach a run (daemon, image, cluster)."""


class DockerJobVariables(JobVariables):
    """Job variables of the Docker runner."""

    image: str = Field(default="nbflow:latest", description="the image holding nbflow")
    command: list[str] | None = Field(
        default=None, description="the container's command (default: nbflow execute <id>)"
    )
    image_pull_policy: PullPolicy | None = Field(
        default=None,
        description="Always, IfNotPresent or Never (default: Always for :latest or no tag)",
    )
    network_mode: str | None = Field(
        default=None, description="docker network mode (default: host for a local API on Linux)"
    )
    networks: list[str] = Field(default_factory=list, description="networks to connect to")
    volumes: list[str] = Field(
        default_factory=list, description="bind mounts as host:container[:mode]"
    )
    labels: dict[str, str] = Field(default_factory=dict, description="extra container labels")
    name: str | None = Field(
        default=None, description="container name prefix (default: from the run's name)"
    )
    auto_remove: bool = Field(default=False, description="remove the container once it exited")
    stream_output: bool = Field(
        default=True, description="ship the container's output into the run's logs"
    )
    mem_limit: str | None = Field(default=None, description="memory limit, e.g. 512m")
    user: str | None = Field(default=None, description="user[:group] the container runs as")
    working_dir: str | None = Field(
        default=None,
        description="the container's working directory (default: the image's); a pipeline's "
        "child runs in its notebook's folder",
    )
    docker_host: str | None = Field(
        default=None, description="daemon URL (default: DOCKER_HOST or the local socket)"
    )

    @field_validator("working_dir")
    @classmethod
    def _working_dir(cls, value: str | None) -> str | None:
        return container_working_dir(value)

    @field_validator("volumes")
    @classmethod
    def _volumes(cls, value: list[str]) -> list[str]:
        for spec in value:
            parse_volume(spec)
        return value


def parse_volume(spec: str) -> tuple[str, str, str]:
    """Split ``host:container[:mode]``; raise :class:`ValidationError` naming a bad one."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not all(parts[:2]):
        raise ValidationError(
            "job_variables.volumes", spec, "is not host:container[:mode]", "e.g. /data:/data:ro"
        )
    host, container = parts[0], parts[1]
    mode = parts[2] if len(parts) == 3 else "rw"
    if not container.startswith("/"):
        raise ValidationError(
            "job_variables.volumes",
            spec,
            f"the container path {container!r} is not absolute",
            "give an absolute path inside the container",
        )
    if not set(mode.split(",")) <= _VOLUME_MODES:
        raise ValidationError(
            "job_variables.volumes",
            spec,
            f"unknown mode {mode!r}",
            f"use one of {', '.join(sorted(_VOLUME_MODES))}",
        )
    return host, container, mode


def default_pull_policy(image: str) -> PullPolicy:
    """Return Kubernetes' default: Always for ``:latest`` or no tag, else IfNotPresent."""
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def container_name(flow_run: FlowRun, prefix: str | None = None) -> str:
    """Return a Docker-valid, unique container name from the run's name and id."""
    base = re.sub(r"[^a-zA-Z0-9_.-]+", "-", prefix or flow_run.name).strip("-_.")[:48]
    return f"{base or 'nbflow'}-{flow_run.id.hex[:8]}"


def rewrite_api_url(url: str, host_network: bool) -> str:
    """Return the API URL as seen from a container (loopback → host.docker.internal)."""
    if host_network or not is_local_url(url):
        return url
    parts = urlsplit(url)
    netloc = HOST_ALIAS + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def is_local_url(url: str) -> bool:
    """Whether ``url`` points at this machine's loopback."""
    host = (urlsplit(url).hostname or "").lower()
    return host in _LOCAL_HOSTS or host.startswith("127.")


def _docker() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise NbflowError(
            f"the docker runner needs the docker SDK ({exc}): pip install 'nbflow[docker]'"
        ) from exc
    return docker


@dataclass
class _Container:
    container: Any
    flow_run: FlowRun
    auto_remove: bool
    done: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None


class DockerRunner(Runner):
    """Run each flow run as ``nbflow execute <id>`` in a Docker container."""

    name: ClassVar[str] = "docker"
    job_variables_model: ClassVar[type[JobVariables]] = DockerJobVariables

    def __init__(
        self,
        *,
        output: Callable[[str], None] | None = None,
        platform: str | None = None,
        **kwargs: Any,
    ) -> None:
        """Create the runner; ``output`` also receives each container output line."""
        super().__init__(**kwargs)
        self._output = output
        self._platform = platform or sys.platform
        self._lock = threading.Lock()
        self._clients: dict[str | None, Any] = {}
        self._daemon_ids: dict[str, str | None] = {}
        self._containers: dict[str, _Container] = {}

    # -- the daemon --------------------------------------------------------------------
    def docker_client(self, docker_host: str | None = None) -> Any:
        """Return a (cached) SDK client for ``docker_host`` or the environment's daemon."""
        with self._lock:
            client = self._clients.get(docker_host)
        if client is not None:
            return client
        docker = _docker()
        where = docker_host or "DOCKER_HOST or the default socket"
        try:
            client = docker.DockerClient(base_url=docker_host) if docker_host else docker.from_env()
            info = client.info()
        except docker.errors.DockerException as exc:
            raise InfrastructureError(
                f"cannot reach the Docker daemon ({where}): {exc}; start Docker, or set "
                "DOCKER_HOST or the docker_host job variable"
            ) from exc
        with self._lock:
            self._clients[docker_host] = client
            self._daemon_ids[str(info.get("ID") or "docker")] = docker_host
        return client

    def _daemon_id(self, client: Any) -> str:
        return str(client.info().get("ID") or "docker")

    def _ensure_image(self, client: Any, image: str, policy: PullPolicy) -> None:
        docker = _docker()
        if policy != "Always":
            try:
                client.images.get(image)
                return
            except docker.errors.ImageNotFound:
                if policy == "Never":
                    raise InfrastructureError(
                        f"image {image!r} is not on the Docker daemon and image_pull_policy "
                        "is Never; build or load it there, or allow pulling (IfNotPresent)"
                    ) from None
        try:
            client.images.pull(image)
        except docker.errors.DockerException as exc:
            raise InfrastructureError(
                f"cannot pull image {image!r} ({exc}); check the name and the registry, or "
                "use image_pull_policy Never for a local image"
            ) from exc

    # -- submit --------------------------------------------------------------------------
    def container_environment(
        self, flow_run: FlowRun, config: DockerJobVariables
    ) -> dict[str, str]:
        """Return the container's environment: the run's connection, then the job's ``env``."""
        env = self.run_environment(flow_run)
        if "NBFLOW_API_URL" in env:
            env["NBFLOW_API_URL"] = rewrite_api_url(
                env["NBFLOW_API_URL"], self._host_network(config) == "host"
            )
        env.update(config.env)
        return env

    def _host_network(self, config: DockerJobVariables) -> str | None:
        """Return the network mode: the job's, else host for a local API on Linux."""
        if config.network_mode or config.networks:
            return config.network_mode
        local = not self.api_url or is_local_url(self.api_url)
        return "host" if local and self._platform.startswith("linux") else None

    def container_options(self, flow_run: FlowRun, config: DockerJobVariables) -> dict[str, Any]:
        """Return the keyword arguments of ``containers.create`` for the run."""
        network_mode = self._host_network(config)
        volumes = [parse_volume(v) for v in config.volumes]
        options: dict[str, Any] = {
            "image": config.image,
            "command": config.command or ["nbflow", "execute", str(flow_run.id)],
            "environment": self.container_environment(flow_run, config),
            "labels": {
                **config.labels,
                FLOW_RUN_LABEL: str(flow_run.id),
                "io.nbflow.flow-run-name": flow_run.name,
            },
            "name": container_name(flow_run, config.name),
            "init": True,
            "detach": True,
            "volumes": {h: {"bind": c, "mode": m} for h, c, m in volumes},
        }
        if network_mode:
            options["network_mode"] = network_mode
        elif config.networks:
            options["network"] = config.networks[0]
        if network_mode != "host" and self._platform.startswith("linux"):
            options["extra_hosts"] = {HOST_ALIAS: "host-gateway"}
        if flow_run.deployment_id is not None:
            options["labels"]["io.nbflow.deployment-id"] = str(flow_run.deployment_id)
        if config.mem_limit:
            options["mem_limit"] = config.mem_limit
        if config.user:
            options["user"] = config.user
        if config.working_dir:
            options["working_dir"] = config.working_dir
        return options

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        """Pull (per policy), create and start the run's container; return its id."""
        config = self.job_configuration(flow_run, job_variables)
        assert isinstance(config, DockerJobVariables)
        if not self.api_url and not config.volumes:
            logger.warning(
                "flow run %s: no API URL; the container needs the store mounted (volumes)",
                flow_run.id,
            )
        try:
            client = self.docker_client(config.docker_host)
            policy = config.image_pull_policy or default_pull_policy(config.image)
            self._ensure_image(client, config.image, policy)
            container = self._create(client, flow_run, config)
            container.start()
        except InfrastructureError as exc:
            self._crash(flow_run, str(exc))
            raise
        except _docker().errors.DockerException as exc:
            self._crash(flow_run, f"the Docker daemon refused the container: {exc}")
            raise InfrastructureError(f"flow run {flow_run.id}: {exc}") from exc
        infrastructure_id = f"{self._daemon_id(client)}:{container.id}"
        entry = _Container(container=container, flow_run=flow_run, auto_remove=config.auto_remove)
        with self._lock:
            self._containers[infrastructure_id] = entry
        threading.Thread(
            target=self._watch,
            args=(entry, config.stream_output),
            name="nbflow-docker-watch",
            daemon=True,
        ).start()
        logger.info(
            "flow run %s: started container %s (%s)", flow_run.id, container.name, config.image
        )
        return infrastructure_id

    def _create(self, client: Any, flow_run: FlowRun, config: DockerJobVariables) -> Any:
        docker = _docker()
        options = self.container_options(flow_run, config)
        network = options.pop("network", None)
        detach = options.pop("detach")
        assert detach
        base = options["name"]
        for attempt in range(1, 20):
            try:
                container = client.containers.create(**options)
                break
            except docker.errors.APIError as exc:
                if exc.status_code != 409:
                    raise
                options["name"] = f"{base}-{attempt + 1}"  # a resubmitted run: a new name
        else:
            raise InfrastructureError(f"container names {base}-* are all taken")
        if network:
            for name in config.networks:
                client.networks.get(name).connect(container)
        return container

    def _crash(self, flow_run: FlowRun, reason: str) -> None:
        logger.error("flow run %s: %s", flow_run.id, reason)
        if self.client is None:
            return
        try:
            self.client.set_flow_run_state(flow_run.id, Crashed(message=reason))
        except Exception:
            logger.exception("flow run %s: could not report Crashed", flow_run.id)

    def _watch(self, entry: _Container, stream_output: bool) -> None:
        container, run_id = entry.container, entry.flow_run.id
        shipper = LogShipper(self.client, run_id, "nbflow.runner.docker") if stream_output else None
        reader = None
        if shipper is not None:
            shipper.start()
            reader = threading.Thread(
                target=self._read_logs, args=(container, shipper), daemon=True
            )
            reader.start()
        code = -1
        try:
            code = int(container.wait().get("StatusCode", -1))
        except Exception:
            logger.exception("flow run %s: lost the container", run_id)
        finally:
            if reader is not None:
                reader.join(10)
            if shipper is not None:
                shipper.close()
        try:
            self.report_exit(run_id, code)
        except Exception:
            logger.exception("flow run %s: could not report the exit", run_id)
        finally:
            entry.exit_code = code
            if entry.auto_remove:
                try:
                    container.remove(force=True)
                except Exception:
                    logger.warning("could not remove container %s", container.name, exc_info=True)
            entry.done.set()

    def _read_logs(self, container: Any, shipper: LogShipper) -> None:
        pending = b""
        try:
            for chunk in container.logs(stream=True, follow=True):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    self._line(raw, shipper)
        except Exception:
            logger.warning("stopped reading the logs of %s", container.name, exc_info=True)
        if pending:
            self._line(pending, shipper)

    def _line(self, raw: bytes, shipper: LogShipper) -> None:
        text = raw.decode("utf-8", "replace").rstrip("\r")
        shipper.add(text)
        if self._output is not None:
            self._output(text)

    # -- wait and kill ---------------------------------------------------------------------
    def _locate(self, infrastructure_id: str) -> tuple[_Container | None, Any]:
        with self._lock:
            entry = self._containers.get(infrastructure_id)
        if entry is not None:
            return entry, entry.container
        daemon_id, sep, container_id = infrastructure_id.rpartition(":")
        if not sep or not container_id:
            raise ValidationError(
                "infrastructure_id", infrastructure_id, "is not '<daemon id>:<container id>'"
            )
        with self._lock:
            known = dict(self._daemon_ids)
        if daemon_id not in known:
            client = self.docker_client()
            if self._daemon_id(client) != daemon_id:
                raise ValidationError(
                    "infrastructure_id",
                    infrastructure_id,
                    "was started on another Docker daemon",
                    "kill it from a runner connected to that daemon (docker_host)",
                )
        else:
            client = self.docker_client(known[daemon_id])
        docker = _docker()
        try:
            return None, client.containers.get(container_id)
        except docker.errors.NotFound:
            return None, None

    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        """Wait for the container to exit; return its exit code (None on timeout)."""
        entry, container = self._locate(infrastructure_id)
        if entry is not None:
            return entry.exit_code if entry.done.wait(timeout) else None
        if container is None:
            raise ValidationError("infrastructure_id", infrastructure_id, "no such container")
        try:
            return int(container.wait(timeout=timeout).get("StatusCode", -1))
        except Exception as exc:  # requests' ReadTimeout / ConnectionError on timeout
            if "timed out" in str(exc).lower() or "timeout" in type(exc).__name__.lower():
                return None
            raise

    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        """``docker stop`` (SIGTERM, ``grace_seconds`` to exit, then SIGKILL), then remove it.

        The watcher (when this runner started the container) reads the exit code and the
        last log lines first; nothing of a cancelled run is left on the daemon.
        """
        entry, container = self._locate(infrastructure_id)
        if container is None:
            return
        docker = _docker()
        try:
            container.stop(timeout=max(round(grace_seconds), 0))
        except docker.errors.NotFound:
            return
        if entry is not None:
            entry.done.wait(grace_seconds + 30)
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:
            if exc.status_code != 409:  # 409: auto-remove is already removing it
                raise

    def close(self) -> None:
        """Close the SDK clients."""
        with self._lock:
            clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            client.close()
