/**
 * The run page and the panel's other views, as a team scheduling notebooks uses them: a
 * run's graph and timeline, Retry with changed parameters, the output read-only, two runs
 * compared, the Upcoming view, and a notification rule.  Real `jupyter lab` with the nbflow
 * server extension, its dispatcher and the subprocess runner; Debian chromium.
 */
import * as fs from 'fs';
import * as path from 'path';
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { API, notebook, SHOTS } from './helpers';
import type { APIRequestContext } from '@playwright/test';

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

  test('Repair a failed run: the completed cells are restored, the run starts at the failed cell', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(
      notebook([
        '%%flow repair_demo\nfail = True',
        '%%task extract\nrows = [1, 2, 3]\nprint("extracted", len(rows))',
        '%%task report\nif fail:\n    raise ValueError("bad data")\nprint("total", sum(rows))'
      ]),
      'text',
      `${tmpPath}/repair.ipynb`
    );
    const deployment = await deploy(page, `${tmpPath}/repair.ipynb`, 'repair');
    const failed = await post(page.request, `/deployments/${deployment.id}/runs`, {});
    expect(await finished(page, failed.id)).toBe('FAILED');
    const panel = await openPanel(page);
    await panel.locator(`.nbflow-run-row[data-run-id="${failed.id}"]`).click();
    const detail = panel.locator('.nbflow-detail');
    await expect(detail.locator('svg.nbflow-graph .nbflow-graph-node[data-task="report"]')).toHaveAttribute('data-state', 'FAILED');
    // debug it: the notebook in a kernel with the run's parameters and completed cells loaded
    await detail.locator('button.nbflow-open-in-notebook').click();
    await expect(detail.locator('.nbflow-loaded')).toContainText('extract', { timeout: 90000 });
    await page.notebook.addCell('code', 'print("debug", rows, fail)');
    await page.notebook.runCell(3, { inplace: true });
    await expect((await page.notebook.getCellOutputLocator(3))!).toContainText('debug [1, 2, 3] True');
    await panel.screenshot({ path: `${SHOTS}/panel-open-in-notebook.png` });
    await detail.locator('button.nbflow-retry').click();
    const form = page.locator('.nbflow-retry-form');
    await expect(form.locator('input[name="from_failed"]')).toBeChecked();
    await form.locator('select[name="param-fail"]').selectOption('false');
    await page.locator('.nbflow-dialog .jp-Dialog-content').screenshot({ path: `${SHOTS}/repair-dialog.png` });
    await form.locator('button.nbflow-start-retry').click();
    await expect(form).toHaveCount(0);
    const repaired = panel.locator('.nbflow-detail');
    await expect(repaired.locator('.nbflow-retry-of')).toHaveText(failed.id.slice(0, 8));
    const newId = (await repaired.getAttribute('data-run-id'))!;
    expect(await finished(page, newId)).toBe('COMPLETED');
    await expect(repaired.locator('svg.nbflow-graph .nbflow-graph-node[data-task="extract"]')).toContainText('Cached');
    await expect(repaired.locator('svg.nbflow-graph .nbflow-graph-node[data-task="report"]')).toContainText('Completed');
  });

  test('a deployed pipeline: its child runs in the graph under the task that ran them, each a link', async ({ page, tmpPath }) => {
    // the example pipeline (examples/pipeline), deployed and dispatched by this server
    const example = path.resolve(__dirname, '..', '..', '..', 'examples', 'pipeline');
    for (const name of ['pipeline.ipynb', 'sales.ipynb', 'report.ipynb']) {
      await page.contents.uploadContent(fs.readFileSync(path.join(example, name), 'utf-8'), 'text', `${tmpPath}/${name}`);
    }
    const deployment = await deploy(page, `${tmpPath}/pipeline.ipynb`, 'pipeline-graph');
    const parent = await post(page.request, `/deployments/${deployment.id}/runs`, {});
    expect(await finished(page, parent.id)).toBe('COMPLETED');
    const panel = await openPanel(page);
    await panel.locator(`.nbflow-run-row[data-run-id="${parent.id}"]`).click();
    const detail = panel.locator(`.nbflow-detail[data-run-id="${parent.id}"]`);
    const children = detail.locator('.nbflow-graph .nbflow-graph-child');
    await expect(children).toHaveCount(3);
    await expect(detail.locator('.nbflow-graph .nbflow-graph-child[data-state="COMPLETED"]')).toHaveCount(3);
    await expect(detail.locator('.nbflow-graph-child-edge')).toHaveCount(3); // fan_out ×2, report ×1
    await expect(detail.locator('.nbflow-graph')).toContainText('↗ sales');
    await expect(detail.locator('.nbflow-graph')).toContainText('↗ report');
    await detail.locator('.nbflow-graph').screenshot({ path: `${SHOTS}/run-page-pipeline-graph.png` });
    // the children table too, and a child node opens the child's run page, which links back
    const report = detail.locator('.nbflow-graph .nbflow-graph-child', { hasText: '↗ report' });
    const childId = await report.getAttribute('data-run-id');
    await expect(detail.locator(`.nbflow-children tr[data-run-id="${childId}"]`)).toBeVisible();
    await report.click();
    const child = panel.locator(`.nbflow-detail[data-run-id="${childId}"]`);
    await expect(child.locator('.nbflow-parent-run')).toHaveText(parent.id.slice(0, 8));
    await expect(child.locator('.nbflow-dag-node[data-task="join"]')).toContainText('Completed');
    await child.locator('.nbflow-parent-run').click();
    await expect(panel.locator(`.nbflow-detail[data-run-id="${parent.id}"]`)).toBeVisible();
    await page.request.delete(`${API}/deployments/${deployment.id}`);
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

  test('the dialog edits the deployed definition: no silent overwrite, versions and the code diff', async ({ page, tmpPath }) => {
    const nb = (region: string, extra = '') =>
      notebook([
        `%%flow edited_sales --schedule "0 6 * * *" --timezone Europe/Berlin\nregion = "${region}"`,
        `%%task report\nprint("report for", region)${extra}`
      ]);
    await page.contents.uploadContent(nb('EU'), 'text', `${tmpPath}/edited.ipynb`);
    await page.filebrowser.openDirectory(tmpPath);
    const openDialog = async () => {
      await page.sidebar.openTab('filebrowser'); // saving shows the nbflow panel
      await page.filebrowser.refresh();
      await page.locator('.jp-DirListing-item[title^="Name: edited.ipynb"]').click({ button: 'right' });
      await page.locator('.lm-Menu-item:has-text("Schedule with nbflow")').click();
      const form = page.locator('.nbflow-schedule-form');
      await expect(form.locator('input[name="param-region"]')).toBeVisible();
      return form;
    };
    // first deployment: every 30 minutes, region US
    let form = await openDialog();
    await expect(form.locator('.nbflow-editing')).toHaveCount(0);
    await form.locator('input[name="cron"]').fill('*/30 * * * *');
    await form.locator('input[name="param-region"]').fill('US');
    await form.locator('button.nbflow-save').click();
    await expect(form).toHaveCount(0);

    // reopened: the deployment as deployed, not the %%flow defaults
    form = await openDialog();
    await expect(form.locator('.nbflow-editing')).toContainText('version 1');
    await expect(form.locator('input[name="cron"]')).toHaveValue('*/30 * * * *');
    await expect(form.locator('input[name="param-region"]')).toHaveValue('US');
    await form.locator('input[name="param-region"]').fill('APAC');
    await form.locator('button.nbflow-save').click();
    const confirm = form.locator('.nbflow-confirm-changes');
    await expect(confirm.locator('tr[data-field="parameters"]')).toContainText('APAC');
    await expect(confirm.locator('tr[data-field="schedules"]')).toHaveCount(0);
    await page.locator('.nbflow-dialog .jp-Dialog-content').screenshot({ path: `${SHOTS}/schedule-dialog-edit.png` });
    await confirm.locator('button.nbflow-confirm-save').click();
    await expect(form).toHaveCount(0);

    // someone else saves while the dialog is open: the save is refused, nothing lost
    const deployments = (await (await page.request.get(`${API}/deployments`)).json()).items;
    const deployment = deployments.find((d: any) => d.name === 'edited');
    expect(deployment.version).toBe(2);
    expect(deployment.parameters.region).toBe('APAC');
    form = await openDialog();
    const patched = await page.request.patch(`${API}/deployments/${deployment.id}`, {
      data: { description: 'changed elsewhere', expected_version: 2 }
    });
    expect(patched.ok()).toBe(true);
    await form.locator('input[name="param-region"]').fill('LATAM');
    await form.locator('button.nbflow-save').click();
    await expect(form.locator('.nbflow-form-error')).toContainText('version 3');
    await expect(form.locator('input[name="param-region"]')).toHaveValue('APAC');
    await page.locator('.nbflow-form-buttons button', { hasText: 'Cancel' }).click();

    // a new notebook version, deployed from the dialog, and its code diff in the panel
    await page.contents.uploadContent(nb('APAC', '\nprint("total", 42)'), 'text', `${tmpPath}/edited.ipynb`);
    form = await openDialog();
    await form.locator('button.nbflow-save').click();
    await expect(form.locator('.nbflow-confirm-changes tr[data-field="notebook"]')).toBeVisible();
    await form.locator('button.nbflow-confirm-save').click();
    await expect(form).toHaveCount(0);
    const panel = await openPanel(page);
    await panel.locator('.nbflow-tab', { hasText: 'Deployments' }).click();
    const card = panel.locator('.nbflow-deployment[data-deployment="edited"]');
    await card.locator('button.nbflow-versions').click();
    await expect(card.locator('.nbflow-versions-list li')).toHaveCount(4);
    await card.locator('li[data-version="4"] .nbflow-version-diff').click();
    const view = card.locator('.nbflow-version-diff-view');
    await expect(view.locator('.nbflow-diff-add', { hasText: 'print("total", 42)' })).toBeVisible();
    await expect(view.locator('.nbflow-diff-del', { hasText: 'region = "EU"' })).toBeVisible();
    await panel.screenshot({ path: `${SHOTS}/panel-deployment-versions.png` });
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
