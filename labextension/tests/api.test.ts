/** The API client against a real Jupyter server running the nbflow server extension. */
import { ApiError, Deployment, NbflowApi } from '../src/api';
import { client } from './server';

let api: NbflowApi;
beforeAll(() => {
  api = client();
});

describe('notebookParameters', () => {
  it('reads the %%flow cell: name, typed defaults, schedule', async () => {
    const info = await api.notebookParameters('sales.ipynb');
    expect(info.flow_name).toBe('sales_report');
    expect(info.has_flow_cell).toBe(true);
    expect(info.parameters_schema.properties).toEqual({
      region: { title: 'region', default: 'EU', type: 'string' },
      days: { title: 'days', default: 7, type: 'integer' },
      ratio: { title: 'ratio', default: 0.5, type: 'number' },
      dry_run: { title: 'dry_run', default: false, type: 'boolean' }
    });
    expect(info.cron).toBe('0 6 * * *');
    expect(info.timezone).toBe('Europe/Berlin');
    expect(info.runners).toEqual(expect.arrayContaining(['subprocess', 'docker', 'kubernetes']));
  });

  it('names the path when the notebook is missing, malformed or outside the root', async () => {
    await expect(api.notebookParameters('nope.ipynb')).rejects.toMatchObject({
      status: 400,
      message: expect.stringContaining('does not exist')
    });
    const bad = await api.notebookParameters('broken.ipynb').catch(e => e as ApiError);
    expect(bad).toBeInstanceOf(ApiError);
    expect((bad as ApiError).status).toBeGreaterThanOrEqual(400);
    await expect(api.notebookParameters('../etc/passwd')).rejects.toMatchObject({ status: 403 });
  });
});

describe('previewSchedule', () => {
  it('answers the next cron times in the time zone, in order', async () => {
    const p = await api.previewSchedule({ cron: '0 6 * * *', timezone: 'Europe/Berlin', count: 3 });
    expect(p.next).toHaveLength(3);
    const times = p.next.map(t => Date.parse(t));
    expect(times[1] - times[0]).toBeGreaterThanOrEqual(23 * 3600 * 1000);
    for (const t of p.next) {
      // 06:00 in Berlin is 04:00 or 05:00 UTC
      expect([4, 5]).toContain(new Date(t).getUTCHours());
    }
  });

  it('answers interval times', async () => {
    const p = await api.previewSchedule({ interval_seconds: 90, timezone: 'UTC', count: 2 });
    expect(Date.parse(p.next[1]) - Date.parse(p.next[0])).toBe(90000);
  });

  it('refuses a bad cron and a bad time zone with the field at fault', async () => {
    const e = (await api.previewSchedule({ cron: '61 * * * *', timezone: 'UTC' }).catch(x => x)) as ApiError;
    expect(e).toBeInstanceOf(ApiError);
    expect(e.status).toBe(400);
    expect(e.problemFor('cron')).toContain('not a valid cron expression');
    const z = (await api.previewSchedule({ cron: '0 6 * * *', timezone: 'Mars/Olympus' }).catch(x => x)) as ApiError;
    expect(z.problemFor('timezone')).toContain('not a known time zone');
  });
});

describe('deployments and runs', () => {
  let deployment: Deployment;

  beforeAll(async () => {
    const info = await api.notebookParameters('sales.ipynb');
    deployment = await api.deployNotebook(info, {
      name: 'api-test',
      runner: 'subprocess',
      parameters: { days: 3 },
      schedules: [{ cron: '0 6 * * *', timezone: 'Europe/Berlin' }]
    });
  });

  it('deploys a notebook by path with its flow', async () => {
    expect(deployment.notebook_path).toBe('sales.ipynb');
    expect(deployment.schedules[0].cron).toBe('0 6 * * *');
    const flows = await api.listFlows();
    expect(flows.find(f => f.id === deployment.flow_id)?.name).toBe('sales_report');
    const listed = await api.listDeployments();
    expect(listed.map(d => d.id)).toContain(deployment.id);
  });

  it('pauses and resumes', async () => {
    expect((await api.updateDeployment(deployment.id, { paused: true })).paused).toBe(true);
    expect((await api.updateDeployment(deployment.id, { paused: false })).paused).toBe(false);
  });

  it('runs now with parameters, filters, cancels with a state history', async () => {
    const run = await api.runDeployment(deployment.id, { parameters: { region: 'US' } });
    expect(run.state?.type).toBe('SCHEDULED');
    expect(run.parameters).toEqual({ days: 3, region: 'US' });
    const page = await api.listRuns({ stateTypes: ['SCHEDULED'], flowNames: ['sales_report'] });
    expect(page.items.map(r => r.id)).toContain(run.id);
    const result = await api.cancelRun(run.id);
    expect(result.status).toBe('ACCEPT');
    expect((await api.getRun(run.id)).state?.type).toBe('CANCELLED');
    const states = await api.getRunStates(run.id);
    expect(states.map(s => s.type)).toEqual(['SCHEDULED', 'CANCELLED']);
    const again = (await api.cancelRun(run.id).catch(e => e)) as ApiError;
    expect(again.status).toBe(409);
    const graph = await api.getGraph(run.id);
    expect(graph.nodes).toEqual([]);
    const noOutput = (await api.getOutputNotebook(run.id).catch(e => e)) as ApiError;
    expect(noOutput.status).toBe(404);
  });

  it('reads logs after a cursor', async () => {
    const run = await api.runDeployment(deployment.id, {});
    await api.writeLogs([
      { flow_run_id: run.id, message: 'first', level: 20, logger: 'test' },
      { flow_run_id: run.id, message: 'second', level: 40, logger: 'test' }
    ]);
    const page = await api.getLogs(run.id, 0);
    expect(page.logs.map(l => l.message)).toEqual(['first', 'second']);
    const next = await api.getLogs(run.id, page.cursor);
    expect(next.logs).toEqual([]);
  });

  it('shows the server validation error for a bad schedule', async () => {
    const info = await api.notebookParameters('sales.ipynb');
    const e = (await api
      .deployNotebook(info, { name: 'bad', schedules: [{ timezone: 'UTC' }] })
      .catch(x => x)) as ApiError;
    expect(e.status).toBe(400);
    expect(e.errors[0].field).toContain('schedules');
  });

  it('deletes', async () => {
    await api.deleteDeployment(deployment.id);
    expect((await api.listDeployments()).map(d => d.id)).not.toContain(deployment.id);
  });
});

it('explains an unreachable server', async () => {
  const dead = new NbflowApi(() => Promise.reject(new TypeError('fetch failed')));
  await expect(dead.listRuns()).rejects.toMatchObject({ status: 0, message: expect.stringContaining('cannot reach') });
});
