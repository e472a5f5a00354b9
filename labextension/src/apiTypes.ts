/** The types of the nbflow REST API's bodies (see api.ts for the client). */

export type StateType =
  | 'SCHEDULED'
  | 'PENDING'
  | 'RUNNING'
  | 'COMPLETED'
  | 'FAILED'
  | 'CANCELLING'
  | 'CANCELLED'
  | 'CRASHED'
  | 'PAUSED';

export const STATE_TYPES: StateType[] = [
  'SCHEDULED',
  'PENDING',
  'RUNNING',
  'COMPLETED',
  'FAILED',
  'CANCELLING',
  'CANCELLED',
  'CRASHED',
  'PAUSED'
];

export const TERMINAL_TYPES: ReadonlySet<StateType> = new Set<StateType>([
  'COMPLETED',
  'FAILED',
  'CANCELLED',
  'CRASHED'
]);

export interface State {
  id: string;
  type: StateType;
  name: string;
  timestamp: string;
  message?: string | null;
  scheduled_time?: string | null;
  data?: Record<string, unknown>;
}

export interface Flow {
  id: string;
  name: string;
  description?: string | null;
  parameters_schema: ParametersSchema;
  source?: string | null;
  tags?: string[];
}

export interface Schedule {
  id?: string;
  cron?: string | null;
  interval_seconds?: number | null;
  timezone: string;
  anchor_date?: string | null;
  active?: boolean;
}

export interface Deployment {
  id: string;
  flow_id: string;
  name: string;
  runner: string;
  job_variables: Record<string, unknown>;
  parameters: Record<string, unknown>;
  schedules: Schedule[];
  paused: boolean;
  concurrency_limit?: number | null;
  notebook_path?: string | null;
  description?: string | null;
  tags: string[];
  /** The latest version (every create and update is one). */
  version?: number;
  /** Run the stored snapshot (default) or the file as it is at run time. */
  run_mode?: 'snapshot' | 'file';
  /** The kernelspec of subprocess runs (null: the notebook's own). */
  kernel_name?: string | null;
  created: string;
  updated: string;
}

/** An edit of a deployment: the fields to change and the version it was made from. */
export type DeploymentEdit = Partial<
  Pick<
    Deployment,
    'name' | 'runner' | 'job_variables' | 'parameters' | 'schedules' | 'paused' | 'tags' | 'description' | 'run_mode' | 'kernel_name'
  >
> & { expected_version?: number; resnapshot?: boolean };

export interface FieldChange {
  field: string;
  old: unknown;
  new: unknown;
}

export interface DeploymentVersion {
  deployment_id: string;
  version: number;
  created: string;
  author: string;
  summary: string;
  notebook_sha256?: string | null;
}

export interface VersionDiff {
  version: number;
  against: number;
  changes: FieldChange[];
  cells: { status: 'changed' | 'added' | 'removed'; old_index?: number | null; new_index?: number | null; diff: string }[];
}

export interface RunEnvironments {
  kernelspecs: { name: string; display_name: string; language: string }[];
  default_kernel_name?: string | null;
  runners: string[];
  default_runner: string;
  images: Record<string, string>;
}

export interface DeploymentCreate {
  flow_id: string;
  name: string;
  runner?: string;
  job_variables?: Record<string, unknown>;
  parameters?: Record<string, unknown>;
  schedules?: Schedule[];
  paused?: boolean;
  notebook_path?: string;
  description?: string;
  tags?: string[];
  run_mode?: 'snapshot' | 'file';
  kernel_name?: string | null;
}

export interface FlowRun {
  id: string;
  name: string;
  flow_id: string;
  flow_name?: string | null;
  deployment_id?: string | null;
  parameters: Record<string, unknown>;
  state?: State | null;
  run_count: number;
  start_time?: string | null;
  end_time?: string | null;
  total_run_time: number;
  expected_start_time?: string | null;
  tags: string[];
  runner?: string | null;
  infrastructure_id?: string | null;
  notebook_path?: string | null;
  output_path?: string | null;
  mode: 'python' | 'interactive' | 'batch';
  /** The run this one retries (a Retry or a resumed interactive run). */
  retry_of?: string | null;
  /** The pipeline run that started this one (`run_notebook`). */
  parent_flow_run_id?: string | null;
  parent_task_run_id?: string | null;
  created: string;
  updated: string;
}

export interface TaskRun {
  id: string;
  flow_run_id: string | null;
  name: string;
  task_key: string;
  dynamic_key: number;
  state?: State | null;
  run_count: number;
  start_time?: string | null;
  end_time?: string | null;
  total_run_time: number;
  cache_key?: string | null;
  upstream: string[];
  inputs: string[];
  outputs: string[];
  tags: string[];
}

export interface LogRecord {
  flow_run_id: string | null;
  task_run_id?: string | null;
  level: number;
  logger: string;
  message: string;
  timestamp: string;
}

export interface Artifact {
  id: string;
  flow_run_id?: string | null;
  task_run_id?: string | null;
  key: string;
  kind: string;
  uri?: string | null;
  data?: Record<string, unknown> | null;
  created: string;
}

/** One side of a compared run (see `GET /flow_runs/{a}/diff?other={b}`). */
export interface DiffSide {
  id: string;
  name: string;
  flow_name?: string | null;
  state?: string | null;
  duration?: number | null;
  output: 'available' | 'unavailable';
  output_problem?: string | null;
}

export interface DiffImage {
  mime: string;
  bytes: number;
  sha256: string;
  width?: number | null;
  height?: number | null;
}

export interface DiffCell {
  index_a?: number | null;
  index_b?: number | null;
  cell_id?: string | null;
  label: string;
  status: 'same' | 'changed' | 'added' | 'removed';
  source_changed: boolean;
  text_diff: string[];
  tables: { kind: string; a?: string | null; b?: string | null; a_text?: string | null; b_text?: string | null }[];
  images: { a?: DiffImage | null; b?: DiffImage | null }[];
}

export interface TaskSide {
  state?: string | null;
  duration?: number | null;
  run_count: number;
}

export interface RunDiff {
  a: DiffSide;
  b: DiffSide;
  parameters: {
    added: Record<string, unknown>;
    removed: Record<string, unknown>;
    changed: Record<string, { a: unknown; b: unknown }>;
    same: string[];
  };
  state: { a?: string | null; b?: string | null; changed: boolean };
  duration: { a?: number | null; b?: number | null; delta?: number | null };
  task_runs: { key: string; name: string; a?: TaskSide | null; b?: TaskSide | null; state_changed: boolean; delta?: number | null }[];
  outputs_available: boolean;
  outputs_note?: string | null;
  cells: DiffCell[];
}

export type MatchKind = 'any' | 'deployment' | 'flow' | 'tag';

export interface AutomationCreate {
  name?: string;
  on_states: string[];
  match_kind: MatchKind;
  match_value?: string | null;
  longer_than_seconds?: number | null;
  action: 'webhook' | 'email';
  webhook_url?: string | null;
  webhook_slack?: boolean;
  email_to?: string[];
  enabled?: boolean;
}

export interface Automation extends AutomationCreate {
  id: string;
  name: string;
  created: string;
}

export interface NotificationDelivery {
  id: string;
  automation_id: string;
  flow_run_id: string;
  event: string;
  attempts: number;
  status: 'pending' | 'delivered' | 'failed';
  last_error?: string | null;
  created: string;
  updated: string;
}

export interface FlowRunPage {
  items: FlowRun[];
  total: number;
  limit: number;
  offset: number;
}

export interface FlowRunGraph {
  flow_run_id: string;
  nodes: TaskRun[];
  edges: { upstream: string; downstream: string }[];
}

export interface OrchestrationResult {
  status: 'ACCEPT' | 'REJECT' | 'WAIT' | 'ABORT';
  state?: State | null;
  reason?: string | null;
}

export interface ParameterSchema {
  title?: string;
  type?: string | string[];
  default?: unknown;
}

export interface ParametersSchema {
  properties?: Record<string, ParameterSchema>;
  [key: string]: unknown;
}

export interface NotebookParameters {
  path: string;
  flow_name: string;
  has_flow_cell: boolean;
  parameters_schema: ParametersSchema;
  cron?: string | null;
  interval_seconds?: number | null;
  timezone: string;
  runner?: string | null;
  job_variables: Record<string, unknown>;
  runners: string[];
}

export interface SchedulePreview {
  timezone: string;
  next: string[];
}

/** A message of the `/events` websocket. */
export interface NbflowEvent {
  /** `replay_truncated`: a reconnect's replay had more runs than it sends (re-read). */
  type: 'flow_run_state' | 'task_run_state' | 'deployment' | 'replay_truncated';
  flow_run_id?: string | null;
  /** Sent again on reconnect (`?since=`): it happened while the client was away. */
  replay?: boolean;
  flow_run?: FlowRun | null;
  task_run?: TaskRun | null;
  deployment?: Deployment | null;
  state?: State | null;
}

export interface RunFilter {
  view?: 'history' | 'upcoming';
  parentFlowRunIds?: string[];
  stateTypes?: StateType[];
  flowNames?: string[];
  deploymentIds?: string[];
  limit?: number;
  offset?: number;
}

export interface FieldProblem {
  field: string;
  problem: string;
}
