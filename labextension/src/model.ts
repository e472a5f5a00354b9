/**
 * State of the panel, independent of React and JupyterLab.
 *
 * `RunsModel` holds one page of flow runs for a filter and keeps it live: events from the
 * server's websocket update runs in place and insert new ones; when no socket is open it
 * polls.  `RunDetailModel` holds one run's states, task-run graph and logs, following the
 * logs with a cursor while the run is not finished.
 */
import {
  FlowRun,
  FlowRunGraph,
  LogRecord,
  NbflowApi,
  NbflowEvent,
  State,
  StateType,
  TaskRun,
  TERMINAL_TYPES
} from './api';

type Listener = () => void;

/** A minimal signal: `connect` returns the disconnect function. */
export class Changed {
  private listeners = new Set<Listener>();
  connect(fn: Listener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
  emit(): void {
    for (const fn of [...this.listeners]) {
      fn();
    }
  }
}

/** What the model needs from a websocket (the browser's `WebSocket` fits). */
export interface SocketLike {
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: unknown) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  close(): void;
}

export interface LiveOptions {
  /** Open the events websocket (`since`: replay what changed after that time); undefined: poll only. */
  openSocket?: (since?: string) => SocketLike;
  /** Seconds between polls when no socket is open (0: never poll). */
  pollSeconds: number;
}

export function isTerminal(state: State | null | undefined): boolean {
  return !!state && TERMINAL_TYPES.has(state.type);
}

export interface RunsFilter {
  stateTypes: StateType[];
  flowName: string | null;
  /** History (newest first; the default) or Upcoming (Scheduled runs ahead, soonest first). */
  view: 'history' | 'upcoming';
}

/** Whether a run is upcoming: Scheduled for a time still ahead (else it is history). */
export function isUpcoming(run: FlowRun, now: number = Date.now()): boolean {
  const at = run.state?.scheduled_time ?? run.expected_start_time;
  return run.state?.type === 'SCHEDULED' && !!at && Date.parse(at) > now;
}

function stateTime(run: FlowRun): number {
  return run.state?.timestamp ? Date.parse(run.state.timestamp) : NaN;
}

/** Whether `run`'s state is strictly newer than `than`'s (unknown times: no). */
function isNewer(run: FlowRun, than: FlowRun): boolean {
  return stateTime(run) > stateTime(than) || (!than.state && !!run.state);
}

/** Whether `run`'s state is strictly older than `than`'s. */
function isOlder(run: FlowRun, than: FlowRun): boolean {
  return stateTime(run) < stateTime(than);
}

/** One page of flow runs matching a filter, kept up to date. */
export class RunsModel {
  readonly changed = new Changed();
  items: FlowRun[] = [];
  total = 0;
  offset = 0;
  pageSize: number;
  filter: RunsFilter = { stateTypes: [], flowName: null, view: 'history' };
  error: string | null = null;
  loading = false;
  /** Whether updates come through the websocket (else polling). */
  live = false;
  /** Every event of the stream, for views that follow one run. */
  readonly eventListeners = new Set<(event: NbflowEvent) => void>();

  private socket: SocketLike | null = null;
  private pollTimer: ReturnType<typeof setInterval> | null = null;
  private reconnectTimer: ReturnType<typeof setTimeout> | null = null;
  private disposed = false;
  private generation = 0;
  /** The newest state time an event brought: where a reconnect asks the replay to start. */
  private lastEventAt: string | null = null;
  /** Run events received while a refresh is in flight: newer than the page it brings. */
  private inFlight: FlowRun[] | null = null;

  constructor(
    private readonly api: NbflowApi,
    options: { pageSize?: number } = {}
  ) {
    this.pageSize = options.pageSize ?? 50;
  }

  get pageCount(): number {
    return Math.max(1, Math.ceil(this.total / this.pageSize));
  }

  get page(): number {
    return Math.floor(this.offset / this.pageSize) + 1;
  }

  /** Load the current page from the server. */
  async refresh(): Promise<void> {
    const generation = ++this.generation;
    this.loading = true;
    this.inFlight = this.inFlight ?? [];
    try {
      const page = await this.api.listRuns({
        stateTypes: this.filter.stateTypes.length ? this.filter.stateTypes : undefined,
        flowNames: this.filter.flowName ? [this.filter.flowName] : undefined,
        view: this.filter.view,
        limit: this.pageSize,
        offset: this.offset
      });
      if (generation !== this.generation) {
        return; // a newer refresh superseded this one
      }
      this.items = page.items;
      this.total = page.total;
      this.error = null;
      // The page was read before these events were sent (a run cancelled by its kernel
      // while the list was loading): the page must not take a run back to an older state.
      const late = this.inFlight ?? [];
      this.inFlight = null;
      late.forEach(run => this.keepNewer(run));
    } catch (err) {
      if (generation === this.generation) {
        this.error = String((err as Error).message ?? err);
      }
    } finally {
      if (generation === this.generation) {
        this.loading = false;
        this.inFlight = null;
        this.changed.emit();
      }
    }
  }

  /** Put `run` in place of the page's copy when its state is newer (else keep the page's). */
  private keepNewer(run: FlowRun): void {
    const index = this.items.findIndex(r => r.id === run.id);
    if (index < 0) {
      return;
    }
    if (!isNewer(run, this.items[index])) {
      return;
    }
    this.items = this.matches(run)
      ? [...this.items.slice(0, index), run, ...this.items.slice(index + 1)]
      : [...this.items.slice(0, index), ...this.items.slice(index + 1)];
  }

  setFilter(filter: Partial<RunsFilter>): Promise<void> {
    this.filter = { ...this.filter, ...filter };
    this.offset = 0;
    return this.refresh();
  }

  goToPage(page: number): Promise<void> {
    const clamped = Math.min(Math.max(1, page), this.pageCount);
    this.offset = (clamped - 1) * this.pageSize;
    return this.refresh();
  }

  matches(run: FlowRun): boolean {
    const { stateTypes, flowName, view } = this.filter;
    if (isUpcoming(run) !== (view === 'upcoming')) {
      return false;
    }
    if (stateTypes.length && (!run.state || !stateTypes.includes(run.state.type))) {
      return false;
    }
    if (flowName && run.flow_name !== flowName) {
      return false;
    }
    return true;
  }

  /** Apply one event of the stream; answers whether the list changed. */
  applyEvent(event: NbflowEvent): boolean {
    if (event.type !== 'flow_run_state' || !event.flow_run) {
      return false;
    }
    const run = event.flow_run;
    this.inFlight?.push(run);
    const index = this.items.findIndex(r => r.id === run.id);
    if (index >= 0 && isOlder(run, this.items[index])) {
      return false; // events of one run sent from two threads can arrive out of order
    }
    if (index >= 0) {
      if (this.matches(run)) {
        this.items = [...this.items.slice(0, index), run, ...this.items.slice(index + 1)];
      } else {
        this.items = [...this.items.slice(0, index), ...this.items.slice(index + 1)];
        this.total = Math.max(0, this.total - 1);
      }
      this.changed.emit();
      return true;
    }
    if (!this.matches(run)) {
      return false;
    }
    if (this.filter.view === 'upcoming') {
      // Soonest first: where a new upcoming run goes is the server's to say.
      void this.refresh();
      return true;
    }
    // Newest first: a run newer than the newest we show is new; it goes on top of page 1.
    // An older run that we do not show lives on another page: the next refresh has it.
    const newest = this.items.length ? Date.parse(this.items[0].created) : -Infinity;
    if (Date.parse(run.created) < newest) {
      return false;
    }
    this.total += 1;
    if (this.offset === 0) {
      this.items = [run, ...this.items].slice(0, this.pageSize);
    }
    this.changed.emit();
    return true;
  }

  /** Start live updates: the websocket when possible, polling while it is down. */
  start(options: LiveOptions): void {
    this.stop();
    this.disposed = false;
    const poll = () => {
      if (this.pollTimer === null && options.pollSeconds > 0) {
        this.pollTimer = setInterval(() => void this.refresh(), options.pollSeconds * 1000);
      }
    };
    const stopPoll = () => {
      if (this.pollTimer !== null) {
        clearInterval(this.pollTimer);
        this.pollTimer = null;
      }
    };
    const open = () => {
      if (!options.openSocket || this.disposed) {
        return;
      }
      let socket: SocketLike;
      try {
        socket = options.openSocket(this.lastEventAt ?? undefined);
      } catch {
        poll();
        return;
      }
      this.socket = socket;
      socket.onopen = () => {
        this.live = true;
        stopPoll();
        void this.refresh(); // catch up with what happened while disconnected
      };
      socket.onmessage = msg => {
        let event: NbflowEvent;
        try {
          event = JSON.parse(String(msg.data)) as NbflowEvent;
        } catch {
          return; // ignore malformed messages
        }
        const at = event.state?.timestamp;
        if (at && (!this.lastEventAt || Date.parse(at) > Date.parse(this.lastEventAt))) {
          this.lastEventAt = at;
        }
        if (event.type === 'replay_truncated') {
          void this.refresh(); // away too long for a replay: read the page again
          return;
        }
        this.applyEvent(event);
        this.eventListeners.forEach(fn => fn(event));
      };
      socket.onclose = () => {
        this.live = false;
        this.socket = null;
        if (this.disposed) {
          return;
        }
        poll();
        this.changed.emit();
        this.reconnectTimer = setTimeout(open, 5000);
      };
      socket.onerror = () => undefined;
    };
    poll();
    open();
  }

  stop(): void {
    this.disposed = true;
    if (this.pollTimer !== null) {
      clearInterval(this.pollTimer);
      this.pollTimer = null;
    }
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
    }
    if (this.socket) {
      const s = this.socket;
      this.socket = null;
      s.onclose = null;
      s.close();
    }
    this.live = false;
  }
}

/** One run in detail: states, task runs (the DAG) and logs, followed while it runs. */
export class RunDetailModel {
  readonly changed = new Changed();
  run: FlowRun | null = null;
  states: State[] = [];
  graph: FlowRunGraph | null = null;
  logs: LogRecord[] = [];
  error: string | null = null;
  private cursor = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private stopped = false;

  constructor(
    private readonly api: NbflowApi,
    readonly runId: string
  ) {}

  get finished(): boolean {
    return isTerminal(this.run?.state);
  }

  /** Fetch everything once. */
  async refresh(): Promise<void> {
    try {
      const [run, states, graph] = await Promise.all([
        this.api.getRun(this.runId),
        this.api.getRunStates(this.runId),
        this.api.getGraph(this.runId)
      ]);
      // an event may have brought a newer state while these were loading: keep it
      const newer = this.run && isNewer(this.run, run) ? this.run : null;
      this.run = newer ?? run;
      this.states = newer?.state && !states.some(s => s.id === newer.state!.id) ? [...states, newer.state] : states;
      this.graph = graph;
      await this.fetchLogs();
      this.error = null;
    } catch (err) {
      this.error = String((err as Error).message ?? err);
    }
    this.changed.emit();
  }

  /** Append the logs written since the last call. */
  async fetchLogs(): Promise<number> {
    let added = 0;
    for (;;) {
      const page = await this.api.getLogs(this.runId, this.cursor, 1000);
      this.cursor = page.cursor;
      if (!page.logs.length) {
        break;
      }
      this.logs = [...this.logs, ...page.logs];
      added += page.logs.length;
      if (page.logs.length < 1000) {
        break;
      }
    }
    return added;
  }

  applyEvent(event: NbflowEvent): boolean {
    if (event.flow_run_id !== this.runId) {
      return false;
    }
    if (event.type === 'flow_run_state' && event.flow_run) {
      if (!this.run || !isOlder(event.flow_run, this.run)) {
        this.run = event.flow_run;
      }
      if (event.state && !this.states.some(s => s.id === event.state!.id)) {
        this.states = [...this.states, event.state];
      }
    } else if (event.type === 'task_run_state' && event.task_run) {
      this.upsertTaskRun({ ...event.task_run, state: event.state ?? event.task_run.state });
    } else {
      return false;
    }
    this.changed.emit();
    return true;
  }

  private upsertTaskRun(task: TaskRun): void {
    const graph = this.graph ?? { flow_run_id: this.runId, nodes: [], edges: [] };
    const nodes = graph.nodes.filter(n => n.id !== task.id);
    const index = graph.nodes.findIndex(n => n.id === task.id);
    if (index >= 0) {
      nodes.splice(index, 0, task);
    } else {
      nodes.push(task);
    }
    const known = new Set(nodes.map(n => n.id));
    const edges = graph.edges.filter(e => e.downstream !== task.id);
    for (const up of task.upstream) {
      if (known.has(up)) {
        edges.push({ upstream: up, downstream: task.id });
      }
    }
    this.graph = { ...graph, nodes, edges };
  }

  /** Follow the run: refresh states and logs every `seconds` until it is finished. */
  follow(seconds: number): void {
    this.stopped = false;
    const tick = async () => {
      if (this.stopped) {
        return;
      }
      await this.refresh();
      if (!this.stopped && !this.finished) {
        this.timer = setTimeout(() => void tick(), seconds * 1000);
      }
    };
    void tick();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }
}

/** Task runs in topological order with their depth in the DAG (for drawing it). */
export function layoutGraph(graph: FlowRunGraph): { task: TaskRun; depth: number }[] {
  const byId = new Map(graph.nodes.map(n => [n.id, n]));
  const ups = new Map<string, string[]>();
  for (const e of graph.edges) {
    if (byId.has(e.upstream) && byId.has(e.downstream)) {
      ups.set(e.downstream, [...(ups.get(e.downstream) ?? []), e.upstream]);
    }
  }
  const depth = new Map<string, number>();
  const visiting = new Set<string>();
  const depthOf = (id: string): number => {
    const known = depth.get(id);
    if (known !== undefined) {
      return known;
    }
    if (visiting.has(id)) {
      return 0; // a cycle cannot happen in a DAG; be safe anyway
    }
    visiting.add(id);
    const d = Math.max(-1, ...(ups.get(id) ?? []).map(depthOf)) + 1;
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const order = graph.nodes.map((task, i) => ({ task, depth: depthOf(task.id), i }));
  order.sort((a, b) => a.depth - b.depth || a.i - b.i);
  return order.map(({ task, depth }) => ({ task, depth }));
}
