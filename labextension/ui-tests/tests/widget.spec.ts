/**
 * What a user sees: the live ipywidgets state widget of `%%flow` / `%%task` cells in a real
 * JupyterLab (real kernel, real widget manager, the nbflow server extension).
 * Screenshots go to docs/screenshots/.
 */
import { expect, galata, IJupyterLabPageFixture, test } from '@jupyterlab/galata';
import { notebook, SHOTS } from './helpers';
import type { Locator } from '@playwright/test';

const CELLS = [
  '%load_ext nbflow',
  '%%flow widget_demo\nregion = "EU"\nn = 3',
  '%%task extract --retries 1\nimport time; time.sleep(1)\nrows = [region] * n',
  '%%task report --cache\ntotal = len(rows)\nprint(total)',
  '%%task broken\nraise ValueError("demo failure")'
];

/** The rendered ipywidgets view in the output of the `%%flow` cell (cell 1). */
async function flowWidget(page: IJupyterLabPageFixture): Promise<Locator> {
  const output = await page.notebook.getCellOutputLocator(1);
  expect(output).not.toBeNull();
  // the widget view, not the text/html fallback: it has the progress bar and the button
  const view = output!.locator('.jupyter-widgets.widget-vbox').first();
  await expect(view).toBeVisible();
  await expect(view.locator('.widget-hprogress')).toBeVisible();
  return view;
}

function taskRow(view: Locator, name: string): Locator {
  return view.locator('tr', { has: view.page().locator(`td:first-child:text-is("${name}")`) });
}

test.describe('nbflow notebook widget', () => {
  test.use({ autoGoto: true });

  test('shows task states, errors and cache hits live', async ({ page, tmpPath }) => {
    await page.contents.uploadContent(notebook(CELLS), 'text', `${tmpPath}/widget_demo.ipynb`);
    await page.filebrowser.openDirectory(tmpPath);
    await page.filebrowser.open('widget_demo.ipynb');
    await page.waitForSelector('#jp-main-statusbar >> text=Idle');

    // Run All: the last cell raises (expected), the earlier ones complete
    await page.notebook.run();
    await expect(
      (await page.notebook.getCellOutputLocator(4))!.locator('.jp-OutputArea-output')
    ).toContainText('ValueError: demo failure');

    let view = await flowWidget(page);
    await expect(view).toContainText('flow widget_demo');
    await expect(taskRow(view, 'extract')).toContainText('Completed');
    await expect(taskRow(view, 'report')).toContainText('Completed');
    await expect(taskRow(view, 'broken')).toContainText('Failed');
    await expect(taskRow(view, 'broken')).toContainText('ValueError: demo failure');
    await expect(view.locator('.widget-hprogress .progress-bar-danger')).toHaveCount(1);
    await view.screenshot({ path: `${SHOTS}/widget.png` });

    // Re-run the parameters cell and the two good tasks: a new run, `report` is a cache hit
    const firstRun = await view.locator('.widget-html-content').first().textContent();
    for (const cell of [1, 2, 3]) {
      await page.notebook.runCell(cell, { inplace: true });
    }
    view = await flowWidget(page);
    await expect(view.locator('.widget-html-content').first()).not.toHaveText(firstRun ?? '');
    await expect(taskRow(view, 'extract')).toContainText('Completed');
    await expect(taskRow(view, 'report')).toContainText('Cached');
    await expect(taskRow(view, 'report')).toContainText('hit');
    await expect(taskRow(view, 'broken')).toHaveCount(0);
    await expect(view.locator('.widget-hprogress .progress-bar-success')).toHaveCount(1);
    await view.screenshot({ path: `${SHOTS}/widget-cached.png` });
  });
});

void galata;
