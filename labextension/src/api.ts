/**
 * Typed client of the nbflow REST API (`/nbflow/api/v1`).
 *
 * It imports nothing from JupyterLab: the transport is a `Fetcher` (in JupyterLab it wraps
 * `ServerConnection.makeRequest`, which adds the token and the XSRF header; in the unit
 * tests it is `fetch` against a real Jupyter server).  Errors are `ApiError`s carrying the
 * server's message and the `{field, problem}` list, so forms can show them in place.
 */

export const API_PATH = 'nbflow/api/v1';

export * from './apiTypes';
import {
  StateType,
  State,
  Flow,
  Deployment,
  DeploymentEdit,
  FieldChange,
  DeploymentVersion,
  VersionDiff,
  RunEnvironments,
  DeploymentCreate,
  FlowRun,
  LogRecord,
  Artifact,
  RunDiff,
  AutomationCreate,
  Automation,
  NotificationDelivery,
  FlowRunPage,
  FlowRunGraph,
  OrchestrationResult,
  ParametersSchema,
  NotebookParameters,
  SchedulePreview,
  RunFilter,
  FieldProblem
} from './apiTypes';

/** An error answer of the API: HTTP status, message and the fields at fault. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly errors: FieldProblem[] = []
  ) {
    super(message);
    this.name = 'ApiError';
  }

  /** The problem reported for a field whose dotted path ends with `suffix`, if any. */
  problemFor(suffix: string): string | undefined {
    const hit = this.errors.find(
      e => e.field === suffix || e.field.endsWith('.' + suffix)
    );
    return hit?.problem;
  }
}

/** Send a request to a path relative to the server's base URL (e.g. `nbflow/api/v1/flows`). */
export type Fetcher = (path: string, init: RequestInit) => Promise<Response>;

function query(params: Record<string, string | number | string[] | undefined | null>): string {
  const parts: string[] = [];
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null) {
      continue;
    }
    const values = Array.isArray(value) ? value : [String(value)];
    for (const v of values) {
      parts.push(`${encodeURIComponent(key)}=${encodeURIComponent(v)}`);
    }
  }
  return parts.length ? `?${parts.join('&')}` : '';
}

/** The nbflow REST API, one method per endpoint the panel uses. */
export class NbflowApi {
  constructor(private readonly fetcher: Fetcher) {}

  private async request<T>(
    method: string,
    path: string,
    body?: unknown
  ): Promise<T> {
    const init: RequestInit = { method };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers = { 'Content-Type': 'application/json' };
    }
    let response: Response;
    try {
      response = await this.fetcher(`${API_PATH}${path}`, init);
    } catch (err) {
      throw new ApiError(
        0,
        `cannot reach the nbflow server extension (${String(err)}); is the Jupyter server running?`
      );
    }
    const text = await response.text();
    if (!response.ok) {
      let message = `${method} ${path}: HTTP ${response.status}`;
      let errors: FieldProblem[] = [];
      try {
        const data = JSON.parse(text);
        message = data.message || message;
        errors = Array.isArray(data.errors) ? data.errors : [];
      } catch {
        if (response.status === 404) {
          message += ' (is the nbflow server extension enabled?)';
        }
      }
      throw new ApiError(response.status, message, errors);
    }
    return (text ? JSON.parse(text) : undefined) as T;
  }

  listRuns(filter: RunFilter = {}): Promise<FlowRunPage> {
    return this.request(
      'GET',
      '/flow_runs' +
        query({
          state_types: filter.stateTypes,
          flow_names: filter.flowNames,
          deployment_ids: filter.deploymentIds,
          view: filter.view,
          parent_flow_run_ids: filter.parentFlowRunIds,
          limit: filter.limit,
          offset: filter.offset
        })
    );
  }

  createFlowRun(create: {
    flow_id: string;
    name?: string;
    deployment_id?: string;
    parameters?: Record<string, unknown>;
    state?: Partial<State> & { type: StateType };
    notebook_path?: string;
    mode?: FlowRun['mode'];
  }): Promise<FlowRun> {
    return this.request('POST', '/flow_runs', create);
  }

  writeLogs(logs: Partial<LogRecord>[]): Promise<void> {
    return this.request('POST', '/logs/batch', { logs });
  }

  getRun(id: string): Promise<FlowRun> {
    return this.request('GET', `/flow_runs/${id}`);
  }

  async getRunStates(id: string): Promise<State[]> {
    const r = await this.request<{ items: State[] }>('GET', `/flow_runs/${id}/states`);
    return r.items;
  }

  getGraph(id: string): Promise<FlowRunGraph> {
    return this.request('GET', `/flow_runs/${id}/graph`);
  }

  getLogs(
    flowRunId: string,
    cursor = 0,
    limit = 1000
  ): Promise<{ logs: LogRecord[]; cursor: number }> {
    return this.request(
      'GET',
      '/logs' + query({ flow_run_id: flowRunId, cursor, limit })
    );
  }

  cancelRun(id: string): Promise<OrchestrationResult> {
    return this.request('POST', `/flow_runs/${id}/cancel`);
  }

  async listAutomations(): Promise<Automation[]> {
    return (await this.request<{ items: Automation[] }>('GET', '/automations')).items;
  }

  createAutomation(create: AutomationCreate): Promise<Automation> {
    return this.request('POST', '/automations', create);
  }

  updateAutomation(id: string, patch: { enabled?: boolean; name?: string }): Promise<Automation> {
    return this.request('PATCH', `/automations/${id}`, patch);
  }

  deleteAutomation(id: string): Promise<void> {
    return this.request('DELETE', `/automations/${id}`);
  }

  async listDeliveries(automationId: string): Promise<NotificationDelivery[]> {
    return (await this.request<{ items: NotificationDelivery[] }>('GET', `/automations/${automationId}/deliveries`)).items;
  }

  /** Run `a` compared with run `b` (deltas are b − a). */
  diffRuns(a: string, b: string): Promise<RunDiff> {
    return this.request('GET', `/flow_runs/${a}/diff${query({ other: b })}`);
  }

  async listArtifacts(flowRunId: string): Promise<Artifact[]> {
    const r = await this.request<{ items: Artifact[] }>('GET', `/artifacts${query({ flow_run_id: flowRunId })}`);
    return r.items;
  }

  /** A new run of a finished batch run (`retry_of` set), same parameters unless given. */
  retryRun(id: string, body: { parameters?: Record<string, unknown>; from_failed?: boolean } = {}): Promise<FlowRun> {
    return this.request('POST', `/flow_runs/${id}/retry`, body);
  }

  getOutputNotebook(id: string): Promise<Record<string, unknown>> {
    return this.request('GET', `/flow_runs/${id}/output`);
  }

  async listFlows(): Promise<Flow[]> {
    const r = await this.request<{ items: Flow[] }>('GET', '/flows?limit=1000');
    return r.items;
  }

  createFlow(flow: {
    name: string;
    parameters_schema?: ParametersSchema;
    source?: string;
  }): Promise<Flow> {
    return this.request('POST', '/flows', flow);
  }

  async listDeployments(): Promise<Deployment[]> {
    const r = await this.request<{ items: Deployment[] }>(
      'GET',
      '/deployments?limit=1000'
    );
    return r.items;
  }

  createDeployment(create: DeploymentCreate): Promise<Deployment> {
    return this.request('POST', '/deployments', create);
  }

  updateDeployment(
    id: string,
    changes: Partial<Omit<Deployment, 'id' | 'flow_id' | 'created' | 'updated'>>
  ): Promise<Deployment> {
    return this.request('PATCH', `/deployments/${id}`, changes);
  }

  deleteDeployment(id: string): Promise<void> {
    return this.request('DELETE', `/deployments/${id}`);
  }

  /** What an edit would change (a dry run: nothing is stored); 409 if the version is stale. */
  deploymentChanges(id: string, edit: DeploymentEdit): Promise<{ version: number; changes: FieldChange[] }> {
    return this.request('POST', `/deployments/${id}/changes`, edit);
  }

  /** Apply an edit made from `edit.expected_version` (409 when someone changed it since). */
  editDeployment(id: string, edit: DeploymentEdit): Promise<Deployment> {
    return this.request('PATCH', `/deployments/${id}`, edit);
  }

  async listDeploymentVersions(id: string): Promise<DeploymentVersion[]> {
    return (await this.request<{ items: DeploymentVersion[] }>('GET', `/deployments/${id}/versions`)).items;
  }

  deploymentVersionDiff(id: string, version: number, against?: number): Promise<VersionDiff> {
    return this.request('GET', `/deployments/${id}/versions/${version}/diff${query({ against })}`);
  }

  runEnvironments(): Promise<RunEnvironments> {
    return this.request('GET', '/run_environments');
  }

  runDeployment(
    id: string,
    request: { parameters?: Record<string, unknown>; name?: string } = {}
  ): Promise<FlowRun> {
    return this.request('POST', `/deployments/${id}/runs`, request);
  }

  previewSchedule(schedule: {
    cron?: string | null;
    interval_seconds?: number | null;
    timezone: string;
    count?: number;
  }): Promise<SchedulePreview> {
    return this.request(
      'GET',
      '/schedules/preview' +
        query({
          cron: schedule.cron ?? undefined,
          interval_seconds: schedule.interval_seconds ?? undefined,
          timezone: schedule.timezone,
          count: schedule.count ?? 5
        })
    );
  }

  notebookParameters(path: string): Promise<NotebookParameters> {
    return this.request('GET', '/notebook_parameters' + query({ path }));
  }

  /**
   * Deploy a notebook: register its flow (upsert by name), then create the deployment.
   */
  async deployNotebook(
    info: NotebookParameters,
    deployment: Omit<DeploymentCreate, 'flow_id' | 'notebook_path'>
  ): Promise<Deployment> {
    const flow = await this.createFlow({
      name: info.flow_name,
      parameters_schema: info.parameters_schema,
      source: info.path
    });
    return this.createDeployment({
      ...deployment,
      flow_id: flow.id,
      notebook_path: info.path
    });
  }
}
