"""The REST API's route table: one handler module per resource, under ``/nbflow/api/v1``."""

from __future__ import annotations

from nbflow_server.handlers import (
    artifacts,
    automations,
    claims,
    deployments,
    events,
    flow_runs,
    flows,
    logs,
    openapi,
    panel,
    pipelines,
    retention,
    task_runs,
)
from nbflow_server.handlers.routes import API_PREFIX, ID, Route

__all__ = ["API_PREFIX", "ROUTES", "Route"]

ROUTES: list[Route] = [
    Route("/flows", flows.FlowsHandler),
    Route(f"/flows/(?P<flow_id>{ID})", flows.FlowHandler),
    Route("/deployments", deployments.DeploymentsHandler),
    Route(f"/deployments/(?P<deployment_id>{ID})", deployments.DeploymentHandler),
    Route(f"/deployments/(?P<deployment_id>{ID})/runs", deployments.DeploymentRunsHandler),
    Route(f"/deployments/(?P<deployment_id>{ID})/changes", deployments.DeploymentChangesHandler),
    Route(f"/deployments/(?P<deployment_id>{ID})/versions", deployments.DeploymentVersionsHandler),
    Route(
        f"/deployments/(?P<deployment_id>{ID})/versions/(?P<version>{ID})",
        deployments.DeploymentVersionHandler,
    ),
    Route(
        f"/deployments/(?P<deployment_id>{ID})/versions/(?P<version>{ID})/diff",
        deployments.DeploymentVersionDiffHandler,
    ),
    Route("/run_environments", deployments.RunEnvironmentsHandler),
    Route("/flow_runs", flow_runs.FlowRunsHandler),
    Route("/flow_runs/claim", claims.FlowRunClaimHandler),
    Route("/flow_runs/prune", retention.FlowRunsPruneHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})", flow_runs.FlowRunHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/set_state", flow_runs.FlowRunSetStateHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/cancel", flow_runs.FlowRunCancelHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/retry", flow_runs.FlowRunRetryHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/children", pipelines.ChildRunsHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/heartbeat", flow_runs.FlowRunHeartbeatHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/token", flow_runs.FlowRunTokenHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/states", flow_runs.FlowRunStatesHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/output", flow_runs.FlowRunOutputHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/graph", flow_runs.FlowRunGraphHandler),
    Route(f"/flow_runs/(?P<flow_run_id>{ID})/diff", flow_runs.FlowRunDiffHandler),
    Route("/task_runs", task_runs.TaskRunsHandler),
    Route("/task_runs/batch", task_runs.TaskRunBatchHandler),
    Route(f"/task_runs/(?P<task_run_id>{ID})/states", task_runs.TaskRunStatesHandler),
    Route("/logs", logs.LogsHandler),
    Route("/logs/batch", logs.LogBatchHandler),
    Route("/artifacts", artifacts.ArtifactsHandler),
    Route("/concurrency_limits", claims.ConcurrencyLimitsHandler),
    Route(f"/concurrency_limits/(?P<key>{ID})", claims.ConcurrencyLimitHandler),
    Route("/automations", automations.AutomationsHandler),
    Route(f"/automations/(?P<automation_id>{ID})", automations.AutomationHandler),
    Route(
        f"/automations/(?P<automation_id>{ID})/deliveries",
        automations.AutomationDeliveriesHandler,
    ),
    Route("/notification_deliveries", automations.NotificationDeliveriesHandler),
    Route("/events", events.EventsHandler),
    Route("/openapi.json", openapi.OpenAPIHandler),
    Route("/schedules/preview", panel.SchedulePreviewHandler),
    Route("/schedules/upcoming", panel.UpcomingRunsHandler),
    Route("/notebook_parameters", panel.NotebookParametersHandler),
]
