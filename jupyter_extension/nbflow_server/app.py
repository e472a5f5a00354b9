"""``NbflowApp``: the server extension's configuration, state and lifecycle.

Configure it with traitlets (``c.NbflowApp.db_url = ...`` in ``jupyter_server_config.py``
or ``--NbflowApp.db_url=...`` on the command line).  The app owns one store client shared
by every handler, the run-token signer, the event bus and the service loops.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
from pathlib import Path
from typing import Any
from uuid import UUID

from jupyter_server.extension.application import ExtensionApp
from traitlets import Any as AnyTrait
from traitlets import (
    Bool,
    Dict,
    Float,
    Integer,
    List,
    TraitError,
    Unicode,
    default,
    observe,
    validate,
)

from nbflow.client.base import Client
from nbflow.client.embedded import EmbeddedClient
from nbflow.notifications.delivery import Sender, SMTPSettings
from nbflow.notifications.messages import panel_link
from nbflow.orchestration.lifecycle import FlowRunLifecycle
from nbflow.orchestration.store import Store
from nbflow.orchestration.store.automations import AutomationStore
from nbflow.runners import Runner, available_runners, get_runner
from nbflow.schemas import FlowRun
from nbflow.settings import get_settings
from nbflow_server.events import EventBus
from nbflow_server.handlers import API_PREFIX, ROUTES
from nbflow_server.handlers.base import flow_run_event
from nbflow_server.notification_settings import NotificationSettings
from nbflow_server.services import Service, ServiceGroup
from nbflow_server.services.claim_signal import ClaimSignal
from nbflow_server.services.cross_server import cross_server
from nbflow_server.services.dispatcher import Dispatcher, DispatcherService, RunnerPool
from nbflow_server.services.event_relay import EventRelay
from nbflow_server.services.kernel_env import install_kernel_env
from nbflow_server.services.kernels import KernelRunsService
from nbflow_server.services.monitors import Monitor, MonitorService
from nbflow_server.services.notifications import NotificationService, Notifier
from nbflow_server.services.pg_listener import PgListener
from nbflow_server.services.retention import RetentionSettings, retention_services
from nbflow_server.services.scheduler import SchedulerService
from nbflow_server.tokens import RunTokenSigner, load_or_create_secret
from nbflow_server.warm_pool_settings import WarmPoolSettings

__all__ = ["NbflowApp"]


class NbflowApp(NotificationSettings, WarmPoolSettings, RetentionSettings, ExtensionApp):
    """The nbflow orchestration API, event stream and services inside a Jupyter server."""

    name = "nbflow"
    description = "nbflow: notebooks as orchestrated, scheduled, observable flows"
    load_other_extensions = True
    extension_url = f"/{API_PREFIX}/openapi.json"

    db_url = Unicode(
        help=(
            "SQLAlchemy URL of the nbflow store (sqlite:///... or postgresql+psycopg://...). "
            "Default: the embedded SQLite store of nbflow's settings (NBFLOW_DATABASE_URL, "
            "else $NBFLOW_HOME/nbflow.db)."
        ),
    ).tag(config=True)

    secret_file = Unicode(
        help=(
            "File holding the secret that signs per-run API tokens (created with mode 0600 "
            "when missing). Default: $NBFLOW_HOME/server_secret."
        ),
    ).tag(config=True)

    default_runner = Unicode(
        "subprocess",
        help="Runner for runs and deployments that name none (subprocess, docker, kubernetes, ...).",
    ).tag(config=True)

    runner_defaults = Dict(
        key_trait=Unicode(),
        value_trait=Dict(),
        help=(
            "Default job variables per runner, e.g. {'docker': {'image': 'python:3.12'}}; "
            "deployment and run job variables override them."
        ),
    ).tag(config=True)

    scheduler_interval = Float(
        10.0, help="Seconds between two passes of the scheduler that creates scheduled runs."
    ).tag(config=True)

    monitor_interval = Float(
        5.0,
        help="Seconds between two passes of the monitors (heartbeats, Late marking, cancelling).",
    ).tag(config=True)

    heartbeat_timeout = Float(
        90.0,
        help="A running batch run whose last heartbeat is older than this many seconds is Crashed.",
    ).tag(config=True)

    global_concurrency_limit = Integer(
        None,
        allow_none=True,
        help="Most flow runs the dispatcher lets run at once across all deployments (None: no limit).",
    ).tag(config=True)

    scheduled_runs_ahead = Integer(
        3,
        help=(
            "How many of its next runs each schedule of a deployment keeps created (Scheduled) "
            "ahead of time; the scheduler tops them up every pass, however far ahead they are "
            "(an every-minute schedule has this many waiting, a daily one the next days')."
        ),
    ).tag(config=True)

    schedule_ahead_seconds = Float(
        3600.0,
        help="Deprecated and ignored: the scheduler keeps scheduled_runs_ahead runs per schedule.",
    ).tag(config=True)

    max_scheduled_runs = Integer(
        100,
        help="Deprecated and ignored: the scheduler keeps scheduled_runs_ahead runs per schedule.",
    ).tag(config=True)

    @observe("schedule_ahead_seconds", "max_scheduled_runs")
    def _deprecated_scheduling(self, change: Any) -> None:
        self.log.warning(
            "nbflow: NbflowApp.%s is deprecated and ignored; the scheduler keeps the next "
            "NbflowApp.scheduled_runs_ahead (%d) runs of each schedule",
            change["name"],
            self.scheduled_runs_ahead,
        )

    late_after_seconds = Float(
        15.0,
        help="A Scheduled run not started this many seconds after its time is marked Late.",
    ).tag(config=True)

    dispatch_interval = Float(
        2.0, help="Seconds between two passes of the dispatcher that claims and submits due runs."
    ).tag(config=True)

    dispatch_event_driven = Bool(
        True,
        help=(
            "Claim a run as soon as it becomes due (run now, retry, the scheduler, a "
            "scheduled time reached; other servers' runs through PostgreSQL LISTEN/NOTIFY) "
            "instead of at the next dispatch_interval pass; the passes stay as the fallback."
        ),
    ).tag(config=True)

    events_across_servers = Bool(
        True,
        help=(
            "On PostgreSQL, relay this server's events to the other servers on the database "
            "and show theirs on this server's /events websocket (NOTIFY with ids; each "
            "server reads the rows)."
        ),
    ).tag(config=True)

    listen_db_url = Unicode(
        "",
        help=(
            "PostgreSQL URL of the connection that LISTENs for other servers' due runs and events "
            "(empty: db_url).  Set a direct URL when db_url goes through PgBouncer in "
            "transaction mode, which does not deliver notifications."
        ),
    ).tag(config=True)

    dispatch_runners = List(
        Unicode(),
        default_value=["subprocess"],
        help=(
            "Runners whose runs this server's dispatcher submits; runs of other runners are "
            "left to `nbflow worker` processes."
        ),
    ).tag(config=True)

    runner_classes = Dict(
        key_trait=Unicode(),
        value_trait=AnyTrait(),
        help=(
            "Runners not registered as entry points: name -> Runner subclass or "
            "'module:ClassName' (they win over installed runners of the same name)."
        ),
    ).tag(config=True)

    cancel_timeout = Float(
        60.0,
        help=(
            "A Cancelling run is stopped with half this grace (at most 30 s) and is Cancelled "
            "at the latest this many seconds after it became Cancelling."
        ),
    ).tag(config=True)

    kernel_env_enabled = Bool(
        True,
        help=(
            "Give kernels started by this server NBFLOW_API_URL and NBFLOW_API_TOKEN so "
            "their %%flow/%%task runs report here (unless already set in the server's "
            "environment)."
        ),
    ).tag(config=True)

    kernel_autoload = Bool(
        True,
        help=(
            "Load nbflow in the ipykernel kernels this server starts (IPython's --ext=nbflow "
            "on their command line): %%flow and %%task work without %load_ext nbflow."
        ),
    ).tag(config=True)

    kernel_death_poll_seconds = Float(
        0.5,
        help=(
            "Seconds between two checks that a kernel of this server is alive (its restarter's "
            "poll, 3 s in jupyter_client): a dead kernel's interactive run is Crashed this fast."
        ),
    ).tag(config=True)

    kernel_interrupt_grace = Float(
        10.0,
        help=(
            "Seconds a kernel of this server has, after the interrupt a cancel of its "
            "interactive run sends, to end the run itself; then the run is Cancelled anyway "
            "and its event says the kernel did not stop (restart it)."
        ),
    ).tag(config=True)

    services_enabled = Bool(
        True,
        help="Run the scheduler, dispatcher and monitors in this server (False: API only).",
    ).tag(config=True)

    max_body_bytes = Integer(
        16 * 1024 * 1024,
        help=(
            "Largest request body the nbflow API accepts, in bytes; a larger one is "
            "answered 413 as soon as it is seen to be larger, without being read whole "
            "(deployments upload notebooks: raise it for very large ones)."
        ),
    ).tag(config=True)

    max_json_depth = Integer(
        64,
        help=(
            "Deepest nesting of lists and objects a JSON request body may have; a deeper "
            "one is answered 400 naming 'body' (deep nesting exhausts the parser's stack)."
        ),
    ).tag(config=True)

    @default("db_url")
    def _default_db_url(self) -> str:
        return get_settings().database_url

    @default("secret_file")
    def _default_secret_file(self) -> str:
        return str(get_settings().home / "server_secret")

    @validate(
        "scheduler_interval",
        "monitor_interval",
        "heartbeat_timeout",
        "late_after_seconds",
        "dispatch_interval",
        "cancel_timeout",
        "kernel_interrupt_grace",
        "kernel_death_poll_seconds",
    )
    def _positive(self, proposal: Any) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(
                f"NbflowApp.{proposal['trait'].name}={value!r}: must be a positive number of seconds"
            )
        return value

    @validate(
        "global_concurrency_limit",
        "max_scheduled_runs",
        "scheduled_runs_ahead",
        "max_body_bytes",
        "max_json_depth",
    )
    def _limit(self, proposal: Any) -> int | None:
        value = proposal["value"]
        if value is not None and value < 1:
            raise TraitError(
                f"NbflowApp.{proposal['trait'].name}={value!r}: must be at least 1"
                + (", or None for no limit" if proposal["trait"].allow_none else "")
            )
        return value  # type: ignore[no-any-return]

    # -- state -------------------------------------------------------------------------
    #: The one owner of runs (create, cancel, retry, claim, close out), over the store.
    lifecycle: FlowRunLifecycle
    #: The lifecycle as a client, shared by every handler and service.
    client: Client
    signer: RunTokenSigner
    event_bus: EventBus
    services: ServiceGroup
    scheduler: SchedulerService | None = None
    dispatcher: DispatcherService | None = None
    #: Wakes the workers' long-polling claims (``POST /flow_runs/claim`` with a wait).
    claim_signal = ClaimSignal()
    pg_listener: PgListener | None = None
    event_relay: EventRelay | None = None
    monitors: MonitorService | None = None
    kernel_runs: KernelRunsService | None = None
    runners: RunnerPool
    #: Notification rules and their deliveries (``/automations``).
    automations: AutomationStore
    notifications: NotificationService | None = None

    def initialize_settings(self) -> None:
        """Open the store, load the token secret and prepare the services."""
        self.signer = RunTokenSigner(load_or_create_secret(Path(self.secret_file)))
        self.claim_signal = ClaimSignal()  # this server's own held claims
        self.lifecycle = FlowRunLifecycle(
            Store.from_url(self.db_url),
            default_runner=self.default_runner,
            runner_defaults=self.runner_defaults,
            global_concurrency_limit=self.global_concurrency_limit,
            token_minter=self.mint_run_token,
        )
        self.client = EmbeddedClient(self.lifecycle)
        self.automations = AutomationStore(self.lifecycle.store)
        self.event_bus = EventBus()
        self.runners = RunnerPool(self._make_runner)
        if self.serverapp is not None:
            install_kernel_env(
                self.serverapp, self.kernel_environment, autoload=self.kernel_autoload
            )
        self.services = ServiceGroup(self._make_services() if self.services_enabled else ())
        self.log.info("nbflow: store %s", _redact(self.db_url))

    def _make_services(self) -> list[Service]:
        self.scheduler = SchedulerService(
            self.lifecycle,
            interval=self.scheduler_interval,
            runs_ahead=self.scheduled_runs_ahead,
            on_created=lambda run: self.event_bus.publish(flow_run_event(run)),
        )
        dispatch_runners = frozenset(self.dispatch_runners)
        unknown = dispatch_runners - set(self.runner_classes) - set(available_runners())
        if unknown:
            self.log.warning(
                "nbflow: NbflowApp.dispatch_runners names runners that are not installed: %s; "
                "their runs will be Crashed when dispatched (installed: %s)",
                ", ".join(sorted(unknown)),
                ", ".join(available_runners()),
            )
        assert self.serverapp is not None
        self.dispatcher = DispatcherService(
            Dispatcher(
                self.client,
                self.runners,
                runner_names=dispatch_runners,
                claimer="the server's dispatcher",
                kill_grace=min(30.0, self.cancel_timeout / 2),
                root_dir=str(Path(self.serverapp.root_dir).resolve()),
                announce=self._publish_run,
            ),
            interval=self.dispatch_interval,
        )
        self.dispatcher.on_due_now = self.claim_signal.notify
        self.monitors = MonitorService(
            Monitor(
                self.client,
                self.runners,
                late_after=self.late_after_seconds,
                heartbeat_timeout=self.heartbeat_timeout,
                cancel_timeout=self.cancel_timeout,
                dispatch_runners=dispatch_runners,
                default_runner=self.default_runner,
                publish=self._publish_run,
            ),
            interval=self.monitor_interval,
        )
        services: list[Service] = [self.monitors, self.scheduler, self.dispatcher]
        wiring = cross_server(
            self.dispatcher,
            self.lifecycle.store,
            self.event_bus,
            db_url=self.db_url,
            listen_db_url=self.listen_db_url,
            event_driven=self.dispatch_event_driven,
            relay_events=self.events_across_servers,
        )
        self.pg_listener, self.event_relay = wiring.listener, wiring.relay
        services += wiring.services
        if getattr(self.serverapp, "kernel_manager", None) is not None:
            self.kernel_runs = KernelRunsService(
                self.client,
                self.serverapp.kernel_manager,
                subscribe=self.event_bus.subscribe,
                publish=self.event_bus.publish,
                run_event=flow_run_event,
                interrupt_grace=self.kernel_interrupt_grace,
                death_poll=self.kernel_death_poll_seconds,
                interval=self.monitor_interval,
            )
            services.append(self.kernel_runs)
        self.notifications = NotificationService(
            self.make_notifier(), subscribe=self.event_bus.subscribe, interval=self.monitor_interval
        )
        services.append(self.notifications)
        services += retention_services(self)
        # Monitors first: their first pass reconciles what a previous server left behind.
        return services

    def make_notifier(self) -> Notifier:
        """Build the notifier with this server's SMTP, retry and link settings."""
        smtp = SMTPSettings(
            host=self.smtp_host,
            port=self.smtp_port,
            username=self.smtp_username,
            password=self.smtp_password,
            sender=self.smtp_from,
            starttls=self.smtp_starttls,
            ssl=self.smtp_ssl,
            timeout=self.smtp_timeout,
        )
        return Notifier(
            self.client,
            self.automations,
            sender=Sender(smtp, webhook_timeout=self.notification_webhook_timeout),
            link=self.run_link,
            max_attempts=self.notification_attempts,
            backoff=self.notification_backoff_seconds,
            max_backoff=self.notification_max_backoff_seconds,
        )

    def run_link(self, flow_run_id: UUID) -> str | None:
        """Return the URL that opens a run in the JupyterLab panel."""
        base = self.notification_link_url
        if not base and self.serverapp is not None:
            base = self.serverapp.connection_url
        return panel_link(base, flow_run_id) if base else None

    def _publish_run(self, run: FlowRun) -> None:
        self.event_bus.publish(flow_run_event(run))

    def _make_runner(self, name: str) -> Runner:
        """Build the runner ``name`` that reports to this server with per-run tokens."""
        spec = self.runner_classes.get(name)
        cls: type[Runner]
        if spec is None:
            cls = get_runner(name)
        elif isinstance(spec, str):
            module, _, attr = spec.partition(":")
            cls = getattr(importlib.import_module(module), attr)
        else:
            cls = spec
        dispatching = self.services_enabled and name in self.dispatch_runners
        return cls(
            client=self.client,
            api_url=self.api_url(),
            token_factory=lambda run: self.mint_run_token(run.id),
            **self.warm_pool_options(cls, dispatching=dispatching),
        )

    def kernel_environment(self) -> dict[str, str]:
        """Return what kernels started by this server need to report here."""
        assert self.serverapp is not None
        if not self.kernel_env_enabled:
            return {}
        env = {"NBFLOW_API_URL": self.api_url()}
        token = self.serverapp.identity_provider.token
        if token:
            env["NBFLOW_API_TOKEN"] = token
        return env

    def wake_dispatcher(self) -> None:
        """Make the dispatcher pass now (a run became due), and the workers' held claims."""
        if self.dispatcher is not None:
            self.dispatcher.wake()
        self.claim_signal.notify()

    def wake_scheduler(self) -> None:
        """Make the scheduler pass now (after a deployment or its schedules changed)."""
        if self.scheduler is not None:
            self.scheduler.wake()

    #: The route table served (the OpenAPI document is built from it).
    routes = ROUTES

    def initialize_handlers(self) -> None:
        """Add the REST and websocket routes under ``/nbflow/api/v1``."""
        for route in self.routes:
            self.handlers.append((f"/{API_PREFIX}{route.path}", route.handler))

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        """Start the service loops once the server's event loop runs."""
        # Move what start-up allocated (~200,000 objects: modules, classes, config) out of
        # the cyclic collector's reach: otherwise every full collection walks it again, a
        # pause of every thread of 30-300 ms (the API's p99 on a busy machine).
        gc.collect()
        gc.freeze()
        await self.services.start()
        if self.services_enabled and self.warm_executors and "subprocess" in self.dispatch_runners:
            # Built now, not at the first run: the subprocess runner starts its warm pool.
            try:
                await asyncio.get_running_loop().run_in_executor(
                    None, self.runners.get, "subprocess"
                )
            except Exception:
                self.log.exception("nbflow: the subprocess runner could not start its warm pool")

    async def stop_extension(self) -> None:
        """Stop the services and close the store."""
        await self.services.stop()
        self.runners.close()
        self.client.close()

    def mint_run_token(self, flow_run_id: UUID) -> str:
        """Return the API token that lets a runner report on ``flow_run_id`` and nothing else."""
        return self.signer.mint(flow_run_id)

    def api_url(self) -> str:
        """Return this server's nbflow API base URL (for runners' ``NBFLOW_API_URL``)."""
        assert self.serverapp is not None
        return f"{self.serverapp.connection_url.rstrip('/')}/{API_PREFIX}"


def _redact(url: str) -> str:
    """Hide the password of a database URL in logs."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
