/** RunsModel / RunDetailModel against the real server, and the pure helpers. */
import { Flow, FlowRun, NbflowApi } from '../src/api';
import { describeSchedule, formatDuration, parseParameter, runDuration } from '../src/format';
import { layoutGraph, RunDetailModel, RunsModel, SocketLike } from '../src/model';
import { client } from './server';

let api: NbflowApi;
let flow: Flow;
let other: Flow;

beforeAll(async () => {
  api = client();
  flow = await api.createFlow({ name: 'model_flow' });
  other = await api.createFlow({ name: 'model_other' });
  // 120 runs: pagination over more than two pages
  for (let i = 0; i < 120; i++) {
    await api.createFlowRun({ flow_id: i % 4 === 0 ? other.id : flow.id, name: `run-${i}`, state: { type: 'SCHEDULED' } });
  }
});

describe('RunsModel', () => {
  it('pages through the runs with the total', async () => {
    const model = new RunsModel(api, { pageSize: 25 });
    await model.setFilter({ flowName: 'model_flow' });
    expect(model.total).toBe(90);
    expect(model.pageCount).toBe(4);
    expect(model.items).toHaveLength(25);
    expect(model.items.every(r => r.flow_name === 'model_flow')).toBe(true);
    const firstPage = model.items.map(r => r.id);
    await model.goToPage(4);
    expect(model.page).toBe(4);
    expect(model.items).toHaveLength(15);
    expect(model.items.some(r => firstPage.includes(r.id))).toBe(false);
    await model.goToPage(99);
    expect(model.page).toBe(4);
  });

  it('filters by state', async () => {
    const model = new RunsModel(api, { pageSize: 10 });
    const run = await api.createFlowRun({ flow_id: other.id, name: 'to-cancel', state: { type: 'SCHEDULED' } });
    await api.cancelRun(run.id);
    await model.setFilter({ stateTypes: ['CANCELLED'], flowName: 'model_other' });
    expect(model.items.map(r => r.name)).toEqual(['to-cancel']);
    expect(model.total).toBe(1);
  });

  it('applies events: new runs on top, state changes in place, leaving the filter removes', async () => {
    const model = new RunsModel(api, { pageSize: 10 });
    await model.setFilter({ stateTypes: ['SCHEDULED'], flowName: 'model_flow' });
    const total = model.total;
    let emitted = 0;
    model.changed.connect(() => emitted++);

    const created = await api.createFlowRun({ flow_id: flow.id, name: 'fresh', state: { type: 'SCHEDULED' } });
    expect(model.applyEvent({ type: 'flow_run_state', flow_run_id: created.id, flow_run: created, state: created.state })).toBe(true);
    expect(model.items[0].id).toBe(created.id);
    expect(model.items).toHaveLength(10);
    expect(model.total).toBe(total + 1);

    await api.cancelRun(created.id);
    const cancelled = await api.getRun(created.id);
    model.applyEvent({ type: 'flow_run_state', flow_run_id: cancelled.id, flow_run: cancelled, state: cancelled.state });
    expect(model.items.map(r => r.id)).not.toContain(created.id);
    expect(model.total).toBe(total);

    const elsewhere = await api.createFlowRun({ flow_id: other.id, name: 'other-flow', state: { type: 'SCHEDULED' } });
    expect(model.applyEvent({ type: 'flow_run_state', flow_run_id: elsewhere.id, flow_run: elsewhere })).toBe(false);
    expect(model.applyEvent({ type: 'deployment' })).toBe(false);
    expect(emitted).toBe(2);

    // and the server agrees after a refresh
    await model.refresh();
    expect(model.total).toBe(total);
  });

  it('updates a shown run in place when its state changes', async () => {
    const model = new RunsModel(api, { pageSize: 5 });
    await model.setFilter({ flowName: 'model_flow' });
    const shown = model.items[2];
    await api.cancelRun(shown.id);
    const changed = await api.getRun(shown.id);
    model.applyEvent({ type: 'flow_run_state', flow_run_id: changed.id, flow_run: changed });
    expect(model.items[2].state?.type).toBe('CANCELLED');
  });

  it('keeps a state an event brought while a refresh was loading (the page read before it)', async () => {
    const shown = await api.createFlowRun({ flow_id: flow.id, name: 'race', state: { type: 'SCHEDULED' } });
    // the list is read now (Scheduled) but answers only after the run was cancelled
    let answer: () => void = () => undefined;
    const slow = Object.create(api) as NbflowApi;
    slow.listRuns = async (...args: Parameters<NbflowApi['listRuns']>) => {
      const page = await api.listRuns(...args);
      await new Promise<void>(resolve => (answer = resolve));
      return page;
    };
    const model = new RunsModel(slow, { pageSize: 10 });
    const loading = model.setFilter({ flowName: 'model_flow' });
    await new Promise(resolve => setTimeout(resolve, 200));
    await api.cancelRun(shown.id);
    const cancelled = await api.getRun(shown.id);
    model.applyEvent({ type: 'flow_run_state', flow_run_id: cancelled.id, flow_run: cancelled });
    answer();
    await loading;
    const row = model.items.find(r => r.id === shown.id);
    expect(row?.state?.type).toBe('CANCELLED');
    // an event that arrives after a newer one (sent from another thread) is ignored
    expect(model.applyEvent({ type: 'flow_run_state', flow_run_id: shown.id, flow_run: shown })).toBe(false);
    expect(model.items.find(r => r.id === shown.id)?.state?.type).toBe('CANCELLED');
  });

  it('goes live on the socket, forwards its events, falls back to polling when it closes', async () => {
    const model = new RunsModel(api, { pageSize: 10 });
    await model.setFilter({ flowName: 'model_flow' });
    const socket: SocketLike & { closed: boolean } = {
      onopen: null, onmessage: null, onclose: null, onerror: null, closed: false,
      close() { this.closed = true; }
    };
    const seen: string[] = [];
    model.eventListeners.add(e => seen.push(e.type));
    model.start({ openSocket: () => socket, pollSeconds: 3600 });
    socket.onopen!({});
    expect(model.live).toBe(true);
    const run = await api.createFlowRun({ flow_id: flow.id, name: 'via-socket', state: { type: 'SCHEDULED' } });
    socket.onmessage!({ data: JSON.stringify({ type: 'flow_run_state', flow_run_id: run.id, flow_run: run, state: run.state }) });
    socket.onmessage!({ data: 'not json' });
    expect(model.items[0].id).toBe(run.id);
    expect(seen).toEqual(['flow_run_state']);
    socket.onclose!({});
    expect(model.live).toBe(false);
    model.stop();
    expect(socket.closed).toBe(false); // already closed by the server side; stop() only clears timers
  });

  it('reconnects with since= the newest state it saw, and refreshes when the replay was cut', async () => {
    const model = new RunsModel(api, { pageSize: 10 });
    await model.setFilter({ flowName: 'model_flow' });
    const asked: (string | undefined)[] = [];
    const sockets: (SocketLike & { closed: boolean })[] = [];
    model.start({
      openSocket: since => {
        asked.push(since);
        const s = { onopen: null, onmessage: null, onclose: null, onerror: null, closed: false, close() { this.closed = true; } };
        sockets.push(s);
        return s;
      },
      pollSeconds: 3600
    });
    sockets[0].onopen!({});
    const run = await api.createFlowRun({ flow_id: flow.id, name: 'seen-then-away', state: { type: 'SCHEDULED' } });
    sockets[0].onmessage!({ data: JSON.stringify({ type: 'flow_run_state', flow_run_id: run.id, flow_run: run, state: run.state }) });
    jest.useFakeTimers();
    try {
      sockets[0].onclose!({});
      jest.advanceTimersByTime(5000);
    } finally {
      jest.useRealTimers();
    }
    expect(asked).toEqual([undefined, run.state!.timestamp]);
    let refreshed = 0;
    model.changed.connect(() => refreshed++);
    sockets[1].onmessage!({ data: JSON.stringify({ type: 'replay_truncated' }) });
    await new Promise(resolve => setTimeout(resolve, 300));
    expect(refreshed).toBeGreaterThan(0);
    model.stop();
  });

  it('reports an error in the model, not as an exception', async () => {
    const dead = new NbflowApi(() => Promise.reject(new Error('down')));
    const model = new RunsModel(dead);
    await model.refresh();
    expect(model.error).toContain('cannot reach');
  });
});

describe('RunDetailModel', () => {
  it('loads run, states and logs; follows new logs with the cursor', async () => {
    const run = await api.createFlowRun({ flow_id: flow.id, name: 'detail', state: { type: 'SCHEDULED' } });
    await api.writeLogs([{ flow_run_id: run.id, message: 'hello', level: 20, logger: 't' }]);
    const model = new RunDetailModel(api, run.id);
    await model.refresh();
    expect(model.run?.name).toBe('detail');
    expect(model.states.map(s => s.type)).toEqual(['SCHEDULED']);
    expect(model.logs.map(l => l.message)).toEqual(['hello']);
    expect(model.finished).toBe(false);
    await api.writeLogs([{ flow_run_id: run.id, message: 'world', level: 20, logger: 't' }]);
    expect(await model.fetchLogs()).toBe(1);
    expect(model.logs.map(l => l.message)).toEqual(['hello', 'world']);
    await api.cancelRun(run.id);
    const cancelled = await api.getRun(run.id);
    model.applyEvent({ type: 'flow_run_state', flow_run_id: run.id, flow_run: cancelled, state: cancelled.state });
    expect(model.finished).toBe(true);
    expect(model.states.map(s => s.type)).toEqual(['SCHEDULED', 'CANCELLED']);
  });

  it('adds task runs from events to the DAG', () => {
    const model = new RunDetailModel(api, 'r1');
    const task = (id: string, upstream: string[] = []) => ({
      id, flow_run_id: 'r1', name: id, task_key: id, dynamic_key: 0, run_count: 1,
      total_run_time: 0, upstream, inputs: [], outputs: [], tags: []
    });
    model.applyEvent({ type: 'task_run_state', flow_run_id: 'r1', task_run: task('a') });
    model.applyEvent({ type: 'task_run_state', flow_run_id: 'r1', task_run: task('b', ['a']) });
    model.applyEvent({ type: 'task_run_state', flow_run_id: 'other', task_run: task('x') });
    expect(model.graph?.nodes.map(n => n.id)).toEqual(['a', 'b']);
    expect(model.graph?.edges).toEqual([{ upstream: 'a', downstream: 'b' }]);
  });
});

describe('helpers', () => {
  it('lays out a DAG by depth', () => {
    const t = (id: string) => ({ id, name: id } as unknown as FlowRun & { upstream: string[] });
    const graph = {
      flow_run_id: 'r',
      nodes: [t('c'), t('a'), t('b')] as never[],
      edges: [
        { upstream: 'a', downstream: 'b' },
        { upstream: 'b', downstream: 'c' }
      ]
    };
    expect(layoutGraph(graph).map(x => [x.task.id, x.depth])).toEqual([
      ['a', 0],
      ['b', 1],
      ['c', 2]
    ]);
  });

  it('formats durations and schedules', () => {
    expect(formatDuration(1.25)).toBe('1.3s');
    expect(formatDuration(184)).toBe('3m 04s');
    expect(formatDuration(7500)).toBe('2h 05m');
    expect(runDuration({ start_time: '2026-01-01T00:00:00Z', end_time: '2026-01-01T00:00:30Z' })).toBe(30);
    expect(describeSchedule({ interval_seconds: 1800, timezone: 'UTC' })).toBe('every 30 min');
    expect(describeSchedule({ cron: '0 6 * * *', timezone: 'Europe/Berlin' })).toBe('cron 0 6 * * * (Europe/Berlin)');
  });

  it('parses typed parameters', () => {
    expect(parseParameter('3', 'integer')).toEqual({ value: 3 });
    expect(parseParameter('3.5', 'integer').error).toBe('expected an integer');
    expect(parseParameter('x', 'number').error).toBe('expected a number');
    expect(parseParameter('true', 'boolean')).toEqual({ value: true });
    expect(parseParameter('EU', 'string')).toEqual({ value: 'EU' });
    expect(parseParameter('[1, 2]', 'array')).toEqual({ value: [1, 2] });
  });
});
