"""The Kubernetes runner: ``nbflow execute <id>`` as a batch/v1 Job.

:meth:`KubernetesRunner.submit` renders the run's Job from the job template
(:mod:`nbflow.runners._k8s_manifest`) and creates, in the job's namespace, a Secret with
the run's API token (the pod reads it through ``valueFrom.secretKeyRef``; it is never a
plain value in the Job) and then the Job; the Secret is then owned by the Job, so Kubernetes
deletes it with the Job.  Cluster access: in-cluster configuration first, the kubeconfig
(``context`` job variable) second.

A watcher thread per Job follows its pod: it streams the pod's log into the run's logs,
detects causes Kubernetes knows (image pull errors, OOMKilled, DeadlineExceeded, a pod that
never starts) and reports an unfinished run Crashed with that reason; a pod that cannot
pull its image gets its Job deleted (it would otherwise wait forever).  Cancelling deletes
the Job with propagation (pods get their grace period: SIGTERM, then SIGKILL) and its Secret.

The infrastructure id is ``<namespace>:<job name>``.  The ``kubernetes`` client is
imported only when the runner is used (``pip install 'nbflow[kubernetes]'``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from nbflow.exceptions import NbflowError, ValidationError
from nbflow.runners._k8s_manifest import (
    CONTAINER_NAME,
    TOKEN_KEY,
    KubernetesJobVariables,
    job_name,
    render_job,
    render_secret,
)
from nbflow.runners.base import JobVariables, Runner
from nbflow.runners.docker import InfrastructureError
from nbflow.runners.logship import LogShipper
from nbflow.schemas import FlowRun
from nbflow.states import Cancelled, Crashed, StateType

__all__ = ["KubernetesJobVariables", "KubernetesRunner"]

logger = logging.getLogger("nbflow.runners.kubernetes")

#: Waiting reasons after which a pod never starts.
IMAGE_ERRORS = {"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"}
START_ERRORS = {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
POLL_SECONDS = 0.5


def _k8s() -> Any:
    try:
        import kubernetes
    except ImportError as exc:
        raise NbflowError(
            f"the kubernetes runner needs the kubernetes client ({exc}): "
            "pip install 'nbflow[kubernetes]'"
        ) from exc
    return kubernetes


@dataclass
class _Job:
    namespace: str
    name: str
    flow_run: FlowRun
    config: KubernetesJobVariables
    #: The Job's uid: its pods carry it as the ``controller-uid`` label.
    uid: str
    done: threading.Event = field(default_factory=threading.Event)
    exit_code: int | None = None
    reason: str | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: The Job was removed under its pod (the pod was deleted): no replacement may run.
    detached: bool = False


@dataclass
class _Outcome:
    exit_code: int
    reason: str | None = None


class KubernetesRunner(Runner):
    """Run each flow run as a Kubernetes Job whose pod runs ``nbflow execute <id>``."""

    name: ClassVar[str] = "kubernetes"
    job_variables_model: ClassVar[type[JobVariables]] = KubernetesJobVariables

    def __init__(self, **kwargs: Any) -> None:
        """Create the runner (the same arguments as :class:`~nbflow.runners.base.Runner`)."""
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._api_clients: dict[str | None, Any] = {}
        self._jobs: dict[str, _Job] = {}

    # -- the cluster -----------------------------------------------------------------------
    def api_client(self, context: str | None = None) -> Any:
        """Return an ApiClient: in-cluster configuration first, then the kubeconfig."""
        with self._lock:
            cached = self._api_clients.get(context)
        if cached is not None:
            return cached
        k8s = _k8s()
        configuration = k8s.client.Configuration()
        try:
            k8s.config.load_incluster_config(client_configuration=configuration)
        except k8s.config.ConfigException:
            try:
                k8s.config.load_kube_config(context=context, client_configuration=configuration)
            except (k8s.config.ConfigException, OSError, TypeError) as exc:
                raise InfrastructureError(
                    f"cannot configure Kubernetes access: not in a cluster, and the kubeconfig "
                    f"(KUBECONFIG or ~/.kube/config, context {context or 'current'}) failed: "
                    f"{exc}"
                ) from exc
        client = k8s.client.ApiClient(configuration)
        with self._lock:
            self._api_clients[context] = client
        return client

    def _apis(self, config: KubernetesJobVariables) -> tuple[Any, Any]:
        k8s = _k8s()
        api = self.api_client(config.context)
        return k8s.client.BatchV1Api(api), k8s.client.CoreV1Api(api)

    # -- submit ------------------------------------------------------------------------------
    def manifests(
        self, flow_run: FlowRun, config: KubernetesJobVariables, name: str
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Return the run's Job and the Secret of its token (None without a token)."""
        env = self.run_environment(flow_run)
        token = env.pop(TOKEN_KEY, None)
        env.update(config.env)
        secret_name = f"{name}-token" if token and TOKEN_KEY not in config.env else None
        job = render_job(flow_run, config, env, name=name, secret_name=secret_name)
        secret = (
            render_secret(secret_name, config.namespace, flow_run, token)
            if secret_name and token
            else None
        )
        return job, secret

    def submit(self, flow_run: FlowRun, job_variables: Mapping[str, Any] | None = None) -> str:
        """Create the run's Secret and Job; return ``<namespace>:<job name>``."""
        config = self.job_configuration(flow_run, job_variables)
        assert isinstance(config, KubernetesJobVariables)
        k8s = _k8s()
        try:
            batch, core = self._apis(config)
            name, uid = self._create(batch, core, flow_run, config)
        except InfrastructureError as exc:
            self._crash(flow_run, str(exc))
            raise
        except k8s.client.ApiException as exc:
            reason = f"Kubernetes refused the Job: {exc.status} {exc.reason}: {_body(exc)}"
            self._crash(flow_run, reason)
            raise InfrastructureError(f"flow run {flow_run.id}: {reason}") from exc
        except Exception as exc:  # urllib3 connection errors: no apiserver
            reason = f"cannot reach the Kubernetes API server: {exc}"
            self._crash(flow_run, reason)
            raise InfrastructureError(reason) from exc
        infrastructure_id = f"{config.namespace}:{name}"
        job = _Job(config.namespace, name, flow_run, config, uid)
        with self._lock:
            self._jobs[infrastructure_id] = job
        threading.Thread(
            target=self._watch, args=(job,), name="nbflow-k8s-watch", daemon=True
        ).start()
        logger.info("flow run %s: created Job %s", flow_run.id, infrastructure_id)
        return infrastructure_id

    def _create(
        self, batch: Any, core: Any, flow_run: FlowRun, config: KubernetesJobVariables
    ) -> tuple[str, str]:
        """Create the Secret and the Job; return the Job's name and uid.

        A run executed before (rescheduled, claimed again) starts at ``-<n>``: a Job name
        is never reused for a run, so nothing of an earlier Job can touch the new one.
        """
        k8s = _k8s()
        base = job_name(flow_run, config.job_name)
        first = flow_run.run_count + 1
        for attempt in range(first, first + 20):
            name = base if attempt == 1 else f"{base}-{attempt}"
            job, secret = self.manifests(flow_run, config, name)
            try:
                if secret is not None:
                    core.create_namespaced_secret(config.namespace, secret)
                created = batch.create_namespaced_job(config.namespace, job)
            except k8s.client.ApiException as exc:
                if exc.status != 409:
                    if secret is not None:
                        _delete_quietly(core.delete_namespaced_secret, f"{name}-token", config)
                    raise
                continue  # a resubmitted run: the name is taken, try the next one
            if secret is not None:
                owner = {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": name,
                    "uid": created.metadata.uid,
                }
                core.patch_namespaced_secret(
                    secret["metadata"]["name"],
                    config.namespace,
                    {"metadata": {"ownerReferences": [owner]}},
                )
            return name, str(created.metadata.uid)
        raise InfrastructureError(f"Job names {base}-* are all taken in {config.namespace}")

    def _crash(self, flow_run: FlowRun, reason: str) -> None:
        logger.error("flow run %s: %s", flow_run.id, reason)
        if self.client is None:
            return
        try:
            self.client.set_flow_run_state(flow_run.id, Crashed(message=reason))
        except Exception:
            logger.exception("flow run %s: could not report Crashed", flow_run.id)

    # -- watching ------------------------------------------------------------------------------
    def _watch(self, job: _Job) -> None:
        outcome = _Outcome(-1, "lost track of the Job")
        try:
            outcome = self._follow(job)
        except Exception as exc:
            logger.exception("flow run %s: watching Job %s failed", job.flow_run.id, job.name)
            outcome = _Outcome(-1, f"lost track of the Job {job.name}: {exc}")
        try:
            self._report(job, outcome)
        except Exception:
            logger.exception("flow run %s: could not report the exit", job.flow_run.id)
        finally:
            job.exit_code, job.reason = outcome.exit_code, outcome.reason
            job.done.set()

    def _follow(self, job: _Job) -> _Outcome:
        """Follow the Job and its pod until the pod's container ends; return how it ended."""
        k8s = _k8s()
        batch, core = self._apis(job.config)
        selector = f"controller-uid={job.uid}"
        started = time.monotonic()
        log_thread: threading.Thread | None = None
        shipper: LogShipper | None = None
        watcher = k8s.watch.Watch()
        try:
            first_pod: str | None = None
            while True:
                try:
                    status = (
                        None
                        if job.detached
                        else batch.read_namespaced_job_status(job.name, job.namespace).status
                    )
                except k8s.client.ApiException as exc:
                    if exc.status == 404:
                        return _Outcome(
                            -1, None if job.cancelled.is_set() else "the Job was deleted"
                        )
                    raise
                deadline = _condition(status, "Failed", "DeadlineExceeded") if status else None
                if deadline is not None:
                    return _Outcome(-1, f"DeadlineExceeded: {deadline}")
                for event in watcher.stream(
                    core.list_namespaced_pod,
                    job.namespace,
                    label_selector=selector,
                    timeout_seconds=2,
                ):
                    pod = event["object"]
                    first_pod = first_pod or pod.metadata.name
                    if (
                        not job.cancelled.is_set()
                        and (
                            pod.metadata.name != first_pod
                            or (pod.metadata.deletion_timestamp is not None and not job.detached)
                        )
                        and not self._job_failed(batch, job)
                    ):
                        # The pod was deleted (by hand, drained, evicted): Kubernetes would
                        # start a replacement that runs the notebook again.  Remove the Job
                        # and any replacement; the deleted pod ends as its run decides.
                        self._detach(core, batch, job, keep=first_pod)
                        if pod.metadata.name != first_pod:
                            continue
                    if pod.status.phase in ("Running", "Succeeded", "Failed") and (
                        log_thread is None and job.config.stream_output
                    ):
                        shipper = LogShipper(
                            self.client, job.flow_run.id, "nbflow.runner.kubernetes"
                        )
                        shipper.start()
                        log_thread = threading.Thread(
                            target=self._stream_logs,
                            args=(core, job, pod.metadata.name, shipper),
                            daemon=True,
                        )
                        log_thread.start()
                    outcome = _pod_outcome(pod)
                    if outcome is not None:
                        watcher.stop()
                        if job.detached:
                            # A replacement created while the Job was being deleted.
                            self._detach(core, batch, job, keep=pod.metadata.name)
                            return outcome
                        outcome = self._job_cause(batch, job) or outcome
                        if outcome.reason and outcome.reason.split(":")[0] in IMAGE_ERRORS:
                            self._delete(job.config, job.name, grace_seconds=0)
                        return outcome
                if job.cancelled.is_set():
                    return _Outcome(-1, None)
                if log_thread is None and time.monotonic() - started > (
                    job.config.pod_start_timeout_seconds
                ):
                    self._delete(job.config, job.name, grace_seconds=0)
                    return _Outcome(
                        -1,
                        f"the pod did not start within {job.config.pod_start_timeout_seconds:g} s",
                    )
        finally:
            if log_thread is not None:
                log_thread.join(10)
            if shipper is not None:
                shipper.close()

    def _job_failed(self, batch: Any, job: _Job) -> bool:
        """Whether Kubernetes failed the Job itself (its deadline): it then replaces no pod."""
        if job.detached:
            return False
        k8s = _k8s()
        try:
            obj = batch.read_namespaced_job_status(job.name, job.namespace)
        except k8s.client.ApiException:
            return False
        # The Job controller deletes a late Job's pods before it records the Failed
        # condition, so a pod deletion seen in between is judged by the deadline itself.
        return _condition(obj.status, "Failed", None) is not None or _past_deadline(obj)

    def _detach(self, core: Any, batch: Any, job: _Job, *, keep: str) -> None:
        """Delete the Job but not its pod ``keep``, and every other pod of the Job at once."""
        k8s = _k8s()
        if not job.detached:
            job.detached = True
            logger.info(
                "flow run %s: pod %s of Job %s was deleted; deleting the Job so that "
                "Kubernetes does not run the notebook again",
                job.flow_run.id,
                keep,
                job.name,
            )
            orphan = k8s.client.V1DeleteOptions(
                propagation_policy="Orphan", preconditions=k8s.client.V1Preconditions(uid=job.uid)
            )
            _delete_quietly(batch.delete_namespaced_job, job.name, job.config, body=orphan)
            _delete_quietly(core.delete_namespaced_secret, f"{job.name}-token", job.config)
        pods = core.list_namespaced_pod(job.namespace, label_selector=f"controller-uid={job.uid}")
        now_ = k8s.client.V1DeleteOptions(grace_period_seconds=0)
        for other in pods.items:
            if other.metadata.name != keep:
                _delete_quietly(core.delete_namespaced_pod, other.metadata.name, job.config, now_)

    def _job_cause(self, batch: Any, job: _Job) -> _Outcome | None:
        """Return the Job's own failure cause (DeadlineExceeded) once its pod ended."""
        k8s = _k8s()
        obj = None
        for _ in range(10):  # the Job's condition may trail its pod's end a little
            try:
                obj = batch.read_namespaced_job_status(job.name, job.namespace)
            except k8s.client.ApiException:
                return None
            status = obj.status
            deadline = _condition(status, "Failed", "DeadlineExceeded")
            if deadline is not None:
                return _Outcome(-1, f"DeadlineExceeded: {deadline}")
            if status.succeeded or _condition(status, "Failed", None) is not None:
                return None
            time.sleep(POLL_SECONDS)
        if obj is not None and _past_deadline(obj):
            seconds = obj.spec.active_deadline_seconds
            return _Outcome(-1, f"DeadlineExceeded: the Job ran past its {seconds} s deadline")
        return None

    def _stream_logs(self, core: Any, job: _Job, pod: str, shipper: LogShipper) -> None:
        try:
            response = core.read_namespaced_pod_log(
                pod, job.namespace, container=CONTAINER_NAME, follow=True, _preload_content=False
            )
            pending = b""
            for chunk in response.stream():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    shipper.add(raw.decode("utf-8", "replace"))
            if pending:
                shipper.add(pending.decode("utf-8", "replace"))
        except Exception:
            logger.info("stopped streaming the log of pod %s", pod, exc_info=True)

    def _report(self, job: _Job, outcome: _Outcome) -> None:
        """Report the end: a plain non-zero exit through the base class, a cause as Crashed."""
        run_id = job.flow_run.id
        if outcome.reason is None:
            if outcome.exit_code > 0 or not job.cancelled.is_set():
                self.report_exit(run_id, outcome.exit_code)
            return
        if self.client is None:
            return
        run = self.client.read_flow_run(run_id)
        if run.state is not None and run.state.is_terminal:
            return
        if run.state is not None and run.state.type is StateType.CANCELLING:
            self.client.set_flow_run_state(
                run_id, Cancelled(message=f"cancelled; {outcome.reason}")
            )
            return
        self.client.set_flow_run_state(
            run_id, Crashed(message=f"Kubernetes Job {job.name}: {outcome.reason}")
        )

    # -- wait and kill ---------------------------------------------------------------------------
    def _parse(self, infrastructure_id: str) -> tuple[str, str]:
        namespace, sep, name = infrastructure_id.partition(":")
        if not sep or not namespace or not name:
            raise ValidationError(
                "infrastructure_id", infrastructure_id, "is not '<namespace>:<job name>'"
            )
        return namespace, name

    def wait(self, infrastructure_id: str, timeout: float | None = None) -> int | None:
        """Wait for the Job's pod to end; return its exit code (None on timeout)."""
        with self._lock:
            job = self._jobs.get(infrastructure_id)
        if job is not None:
            return job.exit_code if job.done.wait(timeout) else None
        namespace, name = self._parse(infrastructure_id)
        batch, _ = self._apis(KubernetesJobVariables(namespace=namespace))
        deadline = None if timeout is None else time.monotonic() + timeout
        while deadline is None or time.monotonic() < deadline:
            status = batch.read_namespaced_job_status(name, namespace).status
            if status.succeeded:
                return 0
            if _condition(status, "Failed", None) is not None:
                return 1
            time.sleep(POLL_SECONDS)
        return None

    def kill(self, infrastructure_id: str, grace_seconds: float = 30.0) -> None:
        """Delete the Job with propagation (pods get ``grace_seconds``) and its Secret."""
        namespace, name = self._parse(infrastructure_id)
        with self._lock:
            job = self._jobs.get(infrastructure_id)
        config = job.config if job is not None else KubernetesJobVariables(namespace=namespace)
        if job is not None:
            job.cancelled.set()
        self._delete(config, name, grace_seconds)
        self._reap(config, name, grace_seconds)
        if job is not None:
            job.done.wait(grace_seconds + 60)

    def _reap(self, config: KubernetesJobVariables, name: str, grace_seconds: float) -> None:
        """Remove the Job's pod objects once their container ended, or after the grace.

        A pod whose container exited can stay listed (Terminating) for half a minute while
        the kubelet cleans up, and the Job with it (Foreground deletion waits for its
        pods): force-deleting pods that run nothing any more ends both at once.
        """
        k8s = _k8s()
        _, core = self._apis(config)
        force = k8s.client.V1DeleteOptions(grace_period_seconds=0)
        deadline = time.monotonic() + grace_seconds
        while True:
            pods = core.list_namespaced_pod(
                config.namespace, label_selector=f"job-name={name}"
            ).items
            late = time.monotonic() >= deadline
            for pod in pods:
                if late or pod.status.phase in ("Succeeded", "Failed", "Pending"):
                    _delete_quietly(core.delete_namespaced_pod, pod.metadata.name, config, force)
            if not pods or late:
                return
            time.sleep(POLL_SECONDS)

    def _delete(self, config: KubernetesJobVariables, name: str, grace_seconds: float) -> None:
        k8s = _k8s()
        batch, core = self._apis(config)
        body = k8s.client.V1DeleteOptions(
            propagation_policy=config.delete_propagation,
            grace_period_seconds=max(round(grace_seconds), 0),
        )
        _delete_quietly(batch.delete_namespaced_job, name, config, body=body)
        _delete_quietly(core.delete_namespaced_secret, f"{name}-token", config)
        # The garbage collector gives the pods their own termination grace (30 s by
        # default); deleting them here bounds it by ``grace_seconds``.
        core.delete_collection_namespaced_pod(
            config.namespace,
            label_selector=f"job-name={name}",
            grace_period_seconds=max(round(grace_seconds), 0),
        )

    def close(self) -> None:
        """Close the API clients."""
        with self._lock:
            clients, self._api_clients = list(self._api_clients.values()), {}
        for client in clients:
            client.close()


def _delete_quietly(
    delete: Any, name: str, config: KubernetesJobVariables, body: Any = None
) -> None:
    k8s = _k8s()
    try:
        if body is None:
            delete(name, config.namespace)
        else:
            delete(name, config.namespace, body=body)
    except k8s.client.ApiException as exc:
        # 404: already gone; 409: a precondition (uid) failed, it is another object now.
        if exc.status not in (404, 409):
            raise


def _past_deadline(job: Any) -> bool:
    """Whether the Job has run past ``activeDeadlineSeconds`` (its controller then fails it)."""
    seconds = job.spec.active_deadline_seconds if job.spec is not None else None
    started = job.status.start_time if job.status is not None else None
    if not seconds or started is None:
        return False
    elapsed = (datetime.now(UTC) - started).total_seconds()
    return bool(elapsed >= seconds)


def _condition(status: Any, kind: str, reason: str | None) -> str | None:
    """Return the message of the Job's true condition ``kind`` (with ``reason``), if any."""
    for cond in status.conditions or []:
        if (
            cond.type == kind
            and cond.status == "True"
            and (reason is None or cond.reason == reason)
        ):
            return str(cond.message or cond.reason or kind)
    return None


def _pod_outcome(pod: Any) -> _Outcome | None:
    """Return how the pod's nbflow container ended (or cannot start); None while it runs."""
    for status in pod.status.container_statuses or []:
        if status.name != CONTAINER_NAME:
            continue
        waiting = status.state.waiting if status.state else None
        if waiting is not None and waiting.reason in IMAGE_ERRORS | START_ERRORS:
            return _Outcome(-1, f"{waiting.reason}: {waiting.message or ''}".rstrip(": "))
        terminated = status.state.terminated if status.state else None
        if terminated is not None:
            code = int(terminated.exit_code)
            if terminated.reason == "OOMKilled":
                return _Outcome(code, f"OOMKilled: the container ran out of memory (exit {code})")
            return _Outcome(code)
    if pod.status.phase == "Failed" and pod.status.reason:
        return _Outcome(-1, f"{pod.status.reason}: {pod.status.message or ''}".rstrip(": "))
    return None


def _body(exc: Any) -> str:
    import json

    try:
        return str(json.loads(exc.body).get("message") or exc.body)
    except Exception:
        return str(exc.body)
