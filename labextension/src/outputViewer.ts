/**
 * A run's output notebook, read-only, without a kernel: code, Markdown and outputs rendered
 * by JupyterLab's renderers in a main-area tab.  Outputs are untrusted (HTML sanitized,
 * no scripts), as for any notebook JupyterLab did not execute itself.
 */
import { IRenderMimeRegistry, MimeModel } from '@jupyterlab/rendermime';
import { Widget } from '@lumino/widgets';

interface Cell {
  cell_type: string;
  source: string | string[];
  execution_count?: number | null;
  outputs?: Output[];
  metadata?: Record<string, unknown>;
}

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, unknown>;
  metadata?: Record<string, unknown>;
  ename?: string;
  evalue?: string;
  traceback?: string[];
}

const text = (v: string | string[] | undefined): string => (Array.isArray(v) ? v.join('') : v ?? '');

/** The mime bundle an output shows (streams and errors as plain text). */
export function outputBundle(out: Output): Record<string, unknown> | null {
  if (out.output_type === 'stream') {
    return { 'application/vnd.jupyter.stdout': text(out.text) };
  }
  if (out.output_type === 'error') {
    return { 'application/vnd.jupyter.stderr': (out.traceback ?? [`${out.ename}: ${out.evalue}`]).join('\n') };
  }
  if (out.output_type === 'execute_result' || out.output_type === 'display_data') {
    const data = { ...(out.data ?? {}) };
    // A widget needs its kernel; its text/html or text/plain fallback is what is shown.
    delete data['application/vnd.jupyter.widget-view+json'];
    return Object.keys(data).length ? data : null;
  }
  return null;
}

export class OutputViewer extends Widget {
  constructor(
    private readonly rendermime: IRenderMimeRegistry,
    notebook: Record<string, unknown>,
    title: string
  ) {
    super();
    this.addClass('nbflow-output-viewer');
    this.title.label = title;
    this.title.closable = true;
    this.title.caption = `${title} (read-only: no kernel)`;
    const banner = document.createElement('div');
    banner.className = 'nbflow-output-banner';
    banner.textContent = 'Output notebook of an nbflow run, read-only (no kernel runs).';
    this.node.appendChild(banner);
    for (const cell of (notebook.cells as Cell[] | undefined) ?? []) {
      void this.addCell(cell);
    }
  }

  private async addCell(cell: Cell): Promise<void> {
    const box = document.createElement('div');
    box.className = `nbflow-output-cell nbflow-output-${cell.cell_type}`;
    this.node.appendChild(box);
    if (cell.cell_type === 'markdown') {
      await this.render(box, { 'text/markdown': text(cell.source) });
      return;
    }
    if (cell.cell_type !== 'code') {
      return;
    }
    const code = document.createElement('pre');
    code.className = 'nbflow-output-source';
    const prompt = cell.execution_count ? `[${cell.execution_count}] ` : '[ ] ';
    code.textContent = prompt + text(cell.source);
    box.appendChild(code);
    for (const out of cell.outputs ?? []) {
      const bundle = outputBundle(out);
      if (bundle) {
        await this.render(box, bundle, out.metadata);
      }
    }
  }

  private async render(
    parent: HTMLElement,
    data: Record<string, unknown>,
    metadata: Record<string, unknown> = {}
  ): Promise<void> {
    const mime = this.rendermime.preferredMimeType(data as never, 'any');
    if (!mime) {
      return;
    }
    const renderer = this.rendermime.createRenderer(mime);
    await renderer.renderModel(new MimeModel({ data: data as never, metadata: metadata as never, trusted: false }));
    renderer.addClass('nbflow-output-rendered');
    parent.appendChild(renderer.node); // static content: no Lumino lifecycle needed
  }
}
