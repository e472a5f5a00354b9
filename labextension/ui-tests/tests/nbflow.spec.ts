/**
 * End to end: the nbflow panel in a real JupyterLab with the real server extension and the
 * subprocess runner.  Screenshots go to docs/screenshots/.
 */
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { API, notebook, SHOTS } from './helpers';
import { spawn } from 'child_process';

const QUICK = notebook([
  '%load_ext nbflow',
  '%%flow daily_sales --schedule "0 6 * * *" --timezone Europe/Berlin\nregion = "EU"\ndays = 7\n',
  '%%task extract\nrows = [d * 10 for d in range(days)]\n',
  '%%task report\ntotal = sum(rows)\nprint(region, total)\n'
]);

const SLOW = notebook([
  '%load_ext nbflow',
  '%%flow slow_flow\nseconds = 300\n',
  '%%task wait\nimport time\nfor _ in range(seconds):\n    time.sleep(1)\n'
]);

/** Start `nbflow execute <id>` for a run nobody claimed (only needed without a dispatcher). */
async function ensureDispatched(page: IJupyterLabPageFixture, runId: string): Promise<void> {
  for (let i = 0; i < 10; i++) {
    const run = await (await page.request.get(`${API}/flow_runs/${runId}`)).json();
    if (run.state?.type !== 'SCHEDULED') {
      return; // the server's dispatcher took it
    }
    await page.waitForTimeout(1000);
  }
  const nbflow = process.env.NBFLOW_CLI || 'nbflow';
  const child = spawn(nbflow, ['execute', runId], {
    env: { ...process.env, NBFLOW_API_URL: API },
    cwd: process.env.JUPYTERLAB_GALATA_ROOT_DIR,
    stdio: 'inherit',
    detached: true
  });
  child.unref();
}

async function openPanel(page: IJupyterLabPageFixture): Promise<void> {
  await page.sidebar.openTab('nbflow-panel');
  await page.sidebar.setWidth(560, 'left');
  await expect(page.locator('#nbflow-panel .nbflow-title')).toBeVisible();
}

async function scheduleFromFileBrowser(page: IJupyterLabPageFixture, file: string): Promise<void> {
  await page.filebrowser.refresh();
  await page.locator(`.jp-DirListing-item[title^="Name: ${file}"]`).click({ button: 'right' });
  await page.locator('.lm-Menu-item:has-text("Schedule with nbflow")').click();
  await expect(page.locator('.nbflow-schedule-form')).toBeVisible();
}

async function latestRunId(page: IJupyterLabPageFixture, flowName: string): Promise<string> {
  // history: the run just started, not the scheduler's runs ahead (Upcoming)
  const r = await page.request.get(`${API}/flow_runs?flow_names=${flowName}&view=history&limit=1`);
  return (await r.json()).items[0].id;
}

test.describe('nbflow panel', () => {
  test.use({ autoGoto: true });

  test('shows the panel from the sidebar', async ({ page }) => {
    await openPanel(page);
    await expect(page.locator('#nbflow-panel .nbflow-tab-active')).toHaveText('Runs');
    await expect(page.locator('#nbflow-panel .nbflow-runs-table')).toBeVisible();
  });

  test('opens the schedule dialog from the notebook toolbar', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(QUICK, 'text', `${tmpPath}/toolbar.ipynb`);
    await page.filebrowser.openDirectory(tmpPath);
    await page.filebrowser.open('toolbar.ipynb');
    await page.locator('.jp-NotebookPanel-toolbar .nbflow-schedule-button').click();
    const form = page.locator('.nbflow-schedule-form');
    await expect(form.locator('text=daily_sales')).toBeVisible();
    await expect(form.locator('input[name="param-region"]')).toHaveValue('EU');
    await form.locator('input[name="param-days"]').fill('');
    await form.locator('input[name="param-days"]').press('Enter'); // must not close the dialog
    await expect(form).toBeVisible();
    await form.locator('button.nbflow-save').click();
    await expect(form.locator('.nbflow-form-error')).toContainText('Fix the fields');
    await page.locator('.nbflow-form-buttons button', { hasText: 'Cancel' }).click();
    await expect(form).toHaveCount(0);
  });

  test('schedule a notebook, see the run complete live, open its output', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(QUICK, 'text', `${tmpPath}/sales.ipynb`);
    await page.filebrowser.openDirectory(tmpPath);
    await scheduleFromFileBrowser(page, 'sales.ipynb');
    const form = page.locator('.nbflow-schedule-form');
    await expect(form.locator('text=daily_sales')).toBeVisible();
    await expect(form.locator('input[name="param-region"]')).toHaveValue('EU');
    await expect(form.locator('input[name="param-days"]')).toHaveValue('7');

    // a bad cron: what is wrong, in words, on the field, as you type; nothing saved
    await form.locator('input[name="cron"]').fill('0 25 * * mon-fri');
    await expect(form.locator('.nbflow-field-error[data-field="cron"]')).toHaveText('hour 25 is out of range 0–23');
    await expect(form.locator('input[name="cron"]')).toHaveAttribute('aria-invalid', 'true');
    // an integer parameter refuses 6.5 before anything is pressed
    await form.locator('input[name="param-days"]').fill('6.5');
    await expect(form.locator('.nbflow-field-error[data-field="param-days"]')).toContainText('integer');
    await form.locator('button.nbflow-save').click();
    await expect(form.locator('.nbflow-form-error')).toContainText('Fix the fields');
    await form.locator('input[name="param-days"]').fill('7');
    await page.locator('.nbflow-dialog .jp-Dialog-content').screenshot({ path: `${SHOTS}/schedule-dialog-error.png` });
    await form.locator('input[name="cron"]').fill('30 6 * * 1-5');
    await expect(form.locator('.nbflow-field-error[data-field="cron"]')).toHaveCount(0);
    // fixed: the banner goes with the last error
    await expect(form.locator('.nbflow-form-error')).toHaveCount(0);
    await expect(form.locator('.nbflow-preview li')).toHaveCount(5);
    await form.locator('input[name="param-days"]').fill('3');
    await page.locator('.nbflow-dialog .jp-Dialog-content').screenshot({ path: `${SHOTS}/schedule-dialog.png` });
    await form.locator('button.nbflow-save-run').click();
    await expect(page.locator('.nbflow-schedule-form')).toHaveCount(0);

    await page.sidebar.setWidth(560, 'left');
    const runId = await latestRunId(page, 'daily_sales');
    const row = page.locator(`#nbflow-panel .nbflow-run-row[data-run-id="${runId}"]`);
    await expect(row).toBeVisible();
    await ensureDispatched(page, runId);
    await expect(row).toHaveAttribute('data-state', 'COMPLETED', { timeout: 150000 });
    // the states arrived through the event stream, not a reload
    await expect(page.locator('#nbflow-panel .nbflow-live-on')).toBeVisible();

    await row.click();
    const detail = page.locator('#nbflow-panel .nbflow-detail');
    await expect(detail.locator('.nbflow-dag-node[data-task="report"]')).toBeVisible();
    await expect(detail.locator('.nbflow-parameters')).toContainText('days');
    await expect(detail.locator('.nbflow-history li').last()).toContainText('Completed');
    await page.locator('#nbflow-panel').screenshot({ path: `${SHOTS}/panel-run-detail.png` });
    await detail.locator('button.nbflow-open-output').click();
    await expect(page.locator('.lm-DockPanel-tabBar .lm-TabBar-tab', { hasText: 'daily_sales-' })).toBeVisible();
    await expect(page.locator('.jp-NotebookPanel .jp-OutputArea-output', { hasText: 'EU 30' }).first()).toBeVisible();

    await page.locator('#nbflow-panel .nbflow-tab', { hasText: 'Deployments' }).click();
    const deployment = page.locator('#nbflow-panel .nbflow-deployment[data-deployment="sales"]');
    await expect(deployment.locator('.nbflow-next-run')).toBeVisible();
    await page.locator('#nbflow-panel').screenshot({ path: `${SHOTS}/panel-deployments.png` });
    await deployment.locator('button.nbflow-pause').click();
    await expect(deployment.locator('.nbflow-paused')).toBeVisible();
  });

  test('start a long run and cancel it from the panel', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(SLOW, 'text', `${tmpPath}/slow.ipynb`);
    await page.filebrowser.openDirectory(tmpPath);
    await scheduleFromFileBrowser(page, 'slow.ipynb');
    const form = page.locator('.nbflow-schedule-form');
    // its %%flow cell has no schedule: the dialog proposes none (run on demand)
    await expect(form.locator('input[name="kind"][value="none"]')).toBeChecked();
    await form.locator('button.nbflow-save-run').click();
    await expect(form).toHaveCount(0);
    await page.sidebar.setWidth(560, 'left');

    const runId = await latestRunId(page, 'slow_flow');
    const row = page.locator(`#nbflow-panel .nbflow-run-row[data-run-id="${runId}"]`);
    await ensureDispatched(page, runId);
    await expect(row).toHaveAttribute('data-state', 'RUNNING', { timeout: 120000 });
    await row.click();
    await page.locator('#nbflow-panel button.nbflow-cancel').click();
    await page.locator('.jp-Dialog-button', { hasText: 'Cancel run' }).click();
    await expect(page.locator('#nbflow-panel .nbflow-detail .nbflow-state').first()).toHaveText(/Cancell(ing|ed)/);
    await page.locator('#nbflow-panel button.nbflow-back').click();
    await expect(row).toHaveAttribute('data-state', 'CANCELLED', { timeout: 90000 });
    await page.locator('#nbflow-panel').screenshot({ path: `${SHOTS}/panel-runs.png` });
    // the state filter
    await page.locator('#nbflow-panel select.nbflow-filter-state').selectOption('COMPLETED');
    await expect(row).toHaveCount(0);
    await expect(page.locator('#nbflow-panel .nbflow-run-row').first()).toHaveAttribute('data-state', 'COMPLETED');
  });
});

void galata;
