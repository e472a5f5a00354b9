/**
 * The run page and the panel's other views, as a team scheduling notebooks uses them: a
 * run's graph and timeline, Retry with changed parameters, the output read-only, two runs
 * compared, the Upcoming view, and a notification rule.  Real `jupyter lab` with the nbflow
 * server extension, its dispatcher and the subprocess runner; Debian chromium.
 */
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import type { APIRequestContext } from '@playwright/test';
import * as path from 'path';

const SHOTS = path.resolve(__dirname, '..', '..', '..', 'docs', 'screenshots');
const API = 'http://localhost:8888/nbflow/api/v1';

function notebook(cells: string[]): string {
  return JSON.stringify({
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: 'python3', display_name: 'Python 3', language: 'python' } },
    cells: cells.map((source, i) => ({
      cell_type: 'code', id: `c${i}`, metadata: {}, outputs: [], execution_count: null, source
    }))
  });
}

const REPORT = notebook([
  '%%flow compare_demo\nn = 2',
  '%%task double\ny = n * 2\nprint("y is", y)',
  '%%task report\ntotal = y + 1\nprint("total", total)'
]);

async function post(request: APIRequestContext, route: string, data: unknown): Promise<any> {
  const r = await request.post(`${API}${route}`, { data });
  expect(r.ok(), `${route}: ${await r.text()}`).toBe(true);
  return r.json();
}

/** Deploy a notebook of the server root the way the schedule dialog does. */
async function deploy(page: IJupyterLabPageFixture, nbPath: string, name: string, extra: Record<string, unknown> = {}): Promise<any> {
  const info = await (await page.request.get(`${API}/notebook_parameters?path=${encodeURIComponent(nbPath)}`)).json();
  const flow = await post(page.request, '/flows', { name: info.flow_name, parameters_schema: info.parameters_schema, source: nbPath });
  return post(page.request, '/deployments', { flow_id: flow.id, name, notebook_path: nbPath, runner: 'subprocess', ...extra });
}

async function finished(page: IJupyterLabPageFixture, runId: string): Promise<string> {
  let state = '';
  await expect
    .poll(
      async () => {
        state = (await (await page.request.get(`${API}/flow_runs/${runId}`)).json()).state.type;
        return ['COMPLETED', 'FAILED', 'CRASHED', 'CANCELLED'].includes(state);
      },
      { timeout: 150000 }
    )
    .toBe(true);
  return state;
}

async function openPanel(page: IJupyterLabPageFixture) {
  await page.sidebar.openTab('nbflow-panel');
  await page.sidebar.setWidth(560, 'left');
  const panel = page.locator('#nbflow-panel');
  await expect(panel.locator('.nbflow-title')).toBeVisible();
  return panel;
}

test.describe('run page, compare, upcoming and alerts', () => {
  test.use({ autoGoto: true });

  test('graph and timeline, retry, read-only output, compare two runs', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(REPORT, 'text', `${tmpPath}/compare.ipynb`);
    const deployment = await deploy(page, `${tmpPath}/compare.ipynb`, 'compare');
    const a = await post(page.request, `/deployments/${deployment.id}/runs`, { parameters: { n: 2 } });
    const b = await post(page.request, `/deployments/${deployment.id}/runs`, { parameters: { n: 3 } });
    expect(await finished(page, a.id)).toBe('COMPLETED');
    expect(await finished(page, b.id)).toBe('COMPLETED');

    const panel = await openPanel(page);
    await panel.locator(`.nbflow-run-row[data-run-id="${a.id}"] input.nbflow-pick`).check();
    await panel.locator(`.nbflow-run-row[data-run-id="${b.id}"] input.nbflow-pick`).check();
    await panel.locator('button.nbflow-compare-button').click();
    const compare = panel.locator('.nbflow-compare');
    await expect(compare.locator('.nbflow-compare-parameters')).toContainText('n');
    await expect(compare.locator('.nbflow-compare-parameters')).toContainText('2');
    await expect(compare.locator('.nbflow-compare-parameters')).toContainText('3');
    await expect(compare.locator('.nbflow-compare-tasks tr[data-task="double"]')).toBeVisible();
    await expect(compare.locator('.nbflow-diff-add', { hasText: 'y is 6' })).toBeVisible();
    await expect(compare.locator('.nbflow-diff-del', { hasText: 'y is 4' })).toBeVisible();
    await panel.screenshot({ path: `${SHOTS}/panel-compare.png` });
    await compare.locator('button.nbflow-back').click();

    // the run page: graph and timeline of the task cells
    await panel.locator(`.nbflow-run-row[data-run-id="${b.id}"]`).click();
    const detail = panel.locator('.nbflow-detail');
    await expect(detail.locator('svg.nbflow-graph .nbflow-graph-node[data-task="double"]')).toHaveAttribute('data-state', 'COMPLETED');
    await expect(detail.locator('svg.nbflow-graph .nbflow-graph-node[data-task="report"]')).toBeVisible();
    await expect(detail.locator('svg.nbflow-graph .nbflow-graph-edge')).toHaveCount(1);
    await expect(detail.locator('.nbflow-timeline-row[data-task="report"]')).toBeVisible();
    await expect(detail.locator('.nbflow-artifacts')).toContainText('notebook');
    await panel.screenshot({ path: `${SHOTS}/panel-run-page.png` });

    // the output, read-only: a main-area tab, no kernel started, nothing to save
    const kernelsBefore = (await (await page.request.get('http://localhost:8888/api/kernels')).json()).length;
    await detail.locator('button.nbflow-view-output').click();
    const viewer = page.locator('.nbflow-output-viewer');
    await expect(viewer).toContainText('y is 6');
    await expect(viewer).toContainText('total 7');
    expect((await (await page.request.get('http://localhost:8888/api/kernels')).json()).length).toBe(kernelsBefore);
    await viewer.screenshot({ path: `${SHOTS}/output-viewer.png` });

    // Retry with a changed parameter: a new run linked to this one
    await detail.locator('button.nbflow-retry').click();
    const form = page.locator('.nbflow-retry-form');
    await expect(form.locator('input[name="param-n"]')).toHaveValue('3');
    await form.locator('input[name="param-n"]').fill('5');
    await form.locator('button.nbflow-start-retry').click();
    await expect(form).toHaveCount(0);
    const retried = panel.locator('.nbflow-detail');
    await expect(retried.locator('.nbflow-retry-of')).toHaveText(b.id.slice(0, 8));
    await expect(retried.locator('.nbflow-parameters')).toContainText('5');
    const newId = await retried.getAttribute('data-run-id');
    expect(newId).not.toBe(b.id);
    expect(await finished(page, newId!)).toBe('COMPLETED');
  });

  test('the Upcoming view lists the next scheduled runs apart from history', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(REPORT.replace('compare_demo', 'upcoming_demo'), 'text', `${tmpPath}/upcoming.ipynb`);
    const deployment = await deploy(page, `${tmpPath}/upcoming.ipynb`, 'hourly', {
      schedules: [{ interval_seconds: 3600, timezone: 'UTC' }]
    });
    const panel = await openPanel(page);
    await panel.locator('button.nbflow-view-upcoming').click();
    const rows = panel.locator('.nbflow-run-row[data-state="SCHEDULED"]');
    await expect(rows.first()).toBeVisible({ timeout: 60000 });
    await expect(rows.first()).toContainText('hourly');
    await expect(rows.first()).toContainText(/in \d+ (min|s|h)/);
    // at most the few runs the scheduler keeps ahead, never an hour of them
    expect(await rows.count()).toBeLessThanOrEqual(3);
    await panel.screenshot({ path: `${SHOTS}/panel-upcoming.png` });
    await panel.locator('button.nbflow-view-history').click();
    await expect(panel.locator('.nbflow-run-row[data-state="SCHEDULED"]', { hasText: 'hourly' })).toHaveCount(0);
    await page.request.delete(`${API}/deployments/${deployment.id}`);
  });

  test('a notification rule is added from the panel', async ({ page }) => {
    const panel = await openPanel(page);
    await panel.locator('.nbflow-tab', { hasText: 'Alerts' }).click();
    const form = panel.locator('.nbflow-rule-form');
    await form.locator('select[name="match_kind"]').selectOption('flow');
    await form.locator('input[name="match_value"]').fill('compare_demo');
    await form.locator('input[name="webhook_url"]').fill('not a url');
    await form.locator('button.nbflow-add-rule').click();
    await expect(form.locator('.nbflow-field-error[data-field="webhook_url"]')).toBeVisible();
    await form.locator('input[name="webhook_url"]').fill('http://127.0.0.1:9/hooks/nbflow');
    await form.locator('input[name="longer_than"]').fill('30m');
    await form.locator('button.nbflow-add-rule').click();
    const rule = panel.locator('.nbflow-rule').first();
    await expect(rule).toContainText('webhook http://127.0.0.1:9/hooks/nbflow');
    await panel.screenshot({ path: `${SHOTS}/panel-alerts.png` });
    await rule.locator('button', { hasText: 'Mute' }).click();
    await expect(rule).toContainText('muted');
  });
});

void galata;
