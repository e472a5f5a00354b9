/**
 * The live kernel as a runner, as a user meets it: cancel a running cell from the widget and
 * from the panel, a failing cell ends the run and the fixed cell resumes it, a kernel restart
 * crashes the run, and the panel at JupyterLab's default sidebar width.  Real `jupyter lab`,
 * real kernels started by the server (nbflow loads itself: no `%load_ext`), Debian chromium.
 *
 * Latencies (click → Cancelled, restart → Crashed) are measured and reported as test
 * annotations and log lines, not asserted: a cancel that did not work shows as the 60 s cell
 * running to its end, which the assertions catch.
 */
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { API, notebook, SHOTS } from './helpers';
import type { Locator } from '@playwright/test';

const LONG = (flow: string) =>
  notebook([
    `%%flow ${flow}\nrows = 3`,
    '%%task prepare\ndata = list(range(rows))',
    '%%task slow\nimport time\ntime.sleep(60)\ndone = True'
  ]);

async function openNotebook(page: IJupyterLabPageFixture, tmpPath: string, name: string, content: string): Promise<void> {
  await page.contents.uploadContent(content, 'text', `${tmpPath}/${name}`);
  await page.filebrowser.openDirectory(tmpPath);
  await page.filebrowser.open(name);
  await page.waitForSelector('#jp-main-statusbar >> text=Idle');
}

/** The live widget in the output of cell `index`. */
async function widgetIn(page: IJupyterLabPageFixture, index: number): Promise<Locator> {
  const output = await page.notebook.getCellOutputLocator(index);
  expect(output).not.toBeNull();
  const view = output!.locator('.jupyter-widgets.widget-vbox').first();
  await expect(view).toBeVisible();
  return view;
}

function taskRow(view: Locator, name: string): Locator {
  return view.locator('tr', { has: view.page().locator(`td:first-child:text-is("${name}")`) });
}

async function runOf(page: IJupyterLabPageFixture, flowName: string): Promise<{ id: string; state: { type: string; name: string } }> {
  const r = await page.request.get(`${API}/flow_runs?flow_names=${flowName}&limit=1`);
  return (await r.json()).items[0];
}

async function runState(page: IJupyterLabPageFixture, id: string): Promise<string> {
  return (await (await page.request.get(`${API}/flow_runs/${id}`)).json()).state.type;
}

/** Run the first cells, then start the 60 s cell without waiting for it. */
async function startSlowCell(page: IJupyterLabPageFixture, flow: string): Promise<Locator> {
  await page.notebook.runCell(0, { inplace: true });
  await page.notebook.runCell(1, { inplace: true });
  await page.notebook.selectCells(2);
  await page.keyboard.press('Control+Enter'); // not awaited: the cell runs for 60 s
  const view = await widgetIn(page, 0);
  await expect(view).toContainText(`flow ${flow}`);
  await expect(taskRow(view, 'slow')).toContainText('Running');
  await expect(page.locator('#jp-main-statusbar >> text=Busy')).toBeVisible();
  return view;
}

function report(what: string, ms: number): void {
  test.info().annotations.push({ type: 'latency', description: `${what}: ${ms} ms` });
  console.log(`nbflow latency: ${what}: ${ms} ms`);
}

async function openPanelDefaultWidth(page: IJupyterLabPageFixture): Promise<Locator> {
  await page.sidebar.openTab('nbflow-panel');
  const panel = page.locator('#nbflow-panel');
  await expect(panel.locator('.nbflow-title')).toBeVisible();
  return panel;
}

test.describe('interactive runs in the live kernel', () => {
  test.use({ autoGoto: true });

  test('the widget Cancel stops a running cell at once', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'cancel_widget.ipynb', LONG('cancel_widget'));
    const view = await startSlowCell(page, 'cancel_widget');
    const button = view.locator('button.nbflow-cancel-run');
    await expect(button).toHaveText(/Cancel run/);
    const clicked = Date.now();
    await button.click();
    // "Cancelling…" shows only until the run ends, which is usually too quick to see.
    await expect(taskRow(view, 'slow')).toContainText('Cancelled');
    report('widget Cancel → task Cancelled in the widget', Date.now() - clicked);
    await expect(button).toBeHidden();
    await expect(view.locator('.widget-html-content').first()).toContainText('Cancelled');
    const run = await runOf(page, 'cancel_widget');
    expect(run.state.type).toBe('CANCELLED');
    await expect(page.locator('#jp-main-statusbar >> text=Idle')).toBeVisible();
    // the interrupted cell shows the user's KeyboardInterrupt, not nbflow's frames
    const out = (await page.notebook.getCellOutputLocator(2))!;
    await expect(out).not.toContainText('task_engine.py');
    await expect(taskRow(view, 'prepare')).toContainText('Completed');
    await view.screenshot({ path: `${SHOTS}/widget-cancelled.png` });
  });

  test('the panel cancels an interactive run by interrupting its kernel', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'cancel_panel.ipynb', LONG('cancel_panel'));
    const view = await startSlowCell(page, 'cancel_panel');
    const run = await runOf(page, 'cancel_panel');
    const panel = await openPanelDefaultWidth(page);
    const row = panel.locator(`.nbflow-run-row[data-run-id="${run.id}"]`);
    await expect(row).toHaveAttribute('data-state', 'RUNNING');
    await row.locator('button.nbflow-row-cancel').click();
    await expect(page.locator('.jp-Dialog-content')).toContainText('kernel is interrupted');
    const clicked = Date.now();
    await page.locator('.jp-Dialog-button', { hasText: 'Cancel run' }).click();
    await expect(row).toHaveAttribute('data-state', 'CANCELLED');
    report('panel ✕ → run Cancelled in the panel', Date.now() - clicked);
    await expect(taskRow(view, 'slow')).toContainText('Cancelled');
    await expect(page.locator('#jp-main-statusbar >> text=Idle')).toBeVisible();
  });

  test('a failing cell fails the run; the fixed cell resumes it with the upstream cached', async ({ page, tmpPath }) => {
    await openNotebook(
      page,
      tmpPath,
      'resume.ipynb',
      notebook([
        '%%flow resume_demo\nregion = "EU"',
        '%%task extract\nrows = [1, 2, 3, 4]\nprint(f"fetched {len(rows)} rows for {region}")',
        '%%task report\ntotal = sum(rows)\nraise ValueError(f"total {total} looks wrong")'
      ])
    );
    await page.notebook.run();
    await expect((await page.notebook.getCellOutputLocator(2))!).toContainText('ValueError: total 10 looks wrong');
    // the user's frame only: no nbflow internals in the traceback
    await expect((await page.notebook.getCellOutputLocator(2))!).not.toContainText('flow_engine.py');
    const view = await widgetIn(page, 0);
    await expect(taskRow(view, 'report')).toContainText('Failed');
    await expect(view.locator('.widget-html-content').first()).toContainText('Failed');
    const failed = await runOf(page, 'resume_demo');
    expect(failed.state.type).toBe('FAILED');

    const panel = await openPanelDefaultWidth(page);
    await expect(panel.locator(`.nbflow-run-row[data-run-id="${failed.id}"]`)).toHaveAttribute('data-state', 'FAILED');

    // fix the cell and run it again: the next run of the flow, extract restored from cache
    await page.notebook.setCell(2, 'code', '%%task report\ntotal = sum(rows)\nprint("total", total)');
    await page.notebook.runCell(2, { inplace: true });
    await expect((await page.notebook.getCellOutputLocator(2))!).toContainText('total 10');
    const resumed = await runOf(page, 'resume_demo');
    expect(resumed.id).not.toBe(failed.id);
    await expect.poll(() => runState(page, resumed.id)).toBe('COMPLETED');
    const row = panel.locator(`.nbflow-run-row[data-run-id="${resumed.id}"]`);
    await expect(row).toHaveAttribute('data-state', 'COMPLETED');
    await row.click();
    const detail = panel.locator('.nbflow-detail');
    await expect(detail.locator('.nbflow-dag-node[data-task="extract"]')).toContainText('cache hit');
    await expect(detail.locator('.nbflow-dag-node[data-task="report"]')).toContainText('Completed');
    // the cell's output is in the run's logs (the failed run's), filterable by task
    await detail.locator('button.nbflow-back').click();
    await panel.locator(`.nbflow-run-row[data-run-id="${failed.id}"]`).click();
    await detail.locator('select.nbflow-log-level').selectOption('40');
    await expect(detail.locator('.nbflow-logs')).toContainText('ValueError');
    await expect(detail.locator('.nbflow-logs')).not.toContainText('fetched 4 rows');
    await detail.locator('select.nbflow-log-level').selectOption('0');
    await expect(detail.locator('.nbflow-logs')).toContainText('fetched 4 rows for EU');
    await panel.screenshot({ path: `${SHOTS}/panel-failed-run.png` });
    // the link a notification carries opens the run's page (in a new tab, as from an email)
    const tab = await page.context().newPage();
    await tab.goto(`http://localhost:8888/lab?nbflow-run=${failed.id}`);
    await expect(tab.locator(`#nbflow-panel .nbflow-detail[data-run-id="${failed.id}"]`)).toBeVisible({ timeout: 60000 });
    await tab.close();
  });

  test('a kernel restart crashes the run', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'restart.ipynb', LONG('restart_demo'));
    await startSlowCell(page, 'restart_demo');
    const run = await runOf(page, 'restart_demo');
    const panel = await openPanelDefaultWidth(page);
    const row = panel.locator(`.nbflow-run-row[data-run-id="${run.id}"]`);
    await expect(row).toHaveAttribute('data-state', 'RUNNING');
    await page.menu.clickMenuItem('Kernel>Restart Kernel…');
    const restarted = Date.now();
    await page.locator('.jp-Dialog-button', { hasText: 'Restart' }).click();
    await expect(row).toHaveAttribute('data-state', 'CRASHED');
    report('kernel restart → run Crashed in the panel', Date.now() - restarted);
    await row.click();
    await expect(panel.locator('.nbflow-detail')).toContainText('was restarted');
  });

  test('the panel fits JupyterLab\'s default sidebar width', async ({ page, tmpPath }) => {
    await openNotebook(page, tmpPath, 'width.ipynb', LONG('a_flow_with_a_rather_long_name_for_width'));
    await page.notebook.runCell(0, { inplace: true });
    await page.notebook.runCell(1, { inplace: true });
    const panel = await openPanelDefaultWidth(page);
    await expect(panel.locator('.nbflow-run-row').first()).toBeVisible();
    const overflow = await panel.evaluate(el =>
      [el, ...Array.from(el.querySelectorAll('*'))]
        .filter(e => {
          const style = getComputedStyle(e);
          const scrolls = style.overflowX === 'auto' || style.overflowX === 'scroll';
          return scrolls && e.scrollWidth > e.clientWidth + 1;
        })
        .map(e => `${e.className}: ${e.scrollWidth} > ${e.clientWidth}`)
    );
    expect(overflow).toEqual([]);
    const width = await panel.evaluate(el => el.clientWidth);
    test.info().annotations.push({ type: 'panel width', description: `${width} px` });
    // narrow: the flow, start and duration columns fold into the run's cell
    await expect(panel.locator('th.nbflow-col-start')).toBeHidden();
    await expect(panel.locator('th.nbflow-col-duration')).toBeHidden();
    await expect(panel.locator('.nbflow-run-sub').first()).toContainText('a_flow_with_a_rather_long_name');
    await panel.screenshot({ path: `${SHOTS}/panel-default-width.png` });
    // widened: every column is back
    await page.sidebar.setWidth(620, 'left');
    await expect(panel.locator('th.nbflow-col-start')).toBeVisible();
    await expect(panel.locator('.nbflow-run-sub').first()).toBeHidden();
  });
});

void galata;
