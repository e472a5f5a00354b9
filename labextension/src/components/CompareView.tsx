import * as React from 'react';
import { RunDiff } from '../api';
import { formatDuration } from '../format';
import { PanelContext } from './context';
import { ErrorLine } from './common';

type Cells = { outputs?: { data?: Record<string, unknown> }[] }[];

/** Images of a cell's outputs (data URLs), in order. */
function cellImages(notebook: Record<string, unknown> | null, index: number | null | undefined): string[] {
  if (!notebook || index === null || index === undefined) {
    return [];
  }
  const cell = (notebook.cells as Cells | undefined)?.[index];
  const urls: string[] = [];
  for (const out of cell?.outputs ?? []) {
    for (const mime of ['image/png', 'image/jpeg', 'image/svg+xml']) {
      const data = out.data?.[mime];
      if (typeof data === 'string' || Array.isArray(data)) {
        const text = Array.isArray(data) ? data.join('') : data;
        urls.push(
          mime === 'image/svg+xml'
            ? `data:image/svg+xml;charset=utf-8,${encodeURIComponent(text)}`
            : `data:${mime};base64,${text.replace(/\s/g, '')}`
        );
      }
    }
  }
  return urls;
}

const show = (v: unknown) => JSON.stringify(v);

/** Two runs side by side: parameters, states, task durations and cell outputs. */
export function CompareView(props: { ctx: PanelContext; a: string; b: string; onBack: () => void }): JSX.Element {
  const { ctx, a, b } = props;
  const [diff, setDiff] = React.useState<RunDiff | null>(null);
  const [notebooks, setNotebooks] = React.useState<[Record<string, unknown> | null, Record<string, unknown> | null]>([null, null]);
  const [error, setError] = React.useState<string | null>(null);
  React.useEffect(() => {
    ctx.api.diffRuns(a, b).then(
      d => {
        setDiff(d);
        if (d.cells.some(c => c.images.length)) {
          Promise.all([ctx.api.getOutputNotebook(a).catch(() => null), ctx.api.getOutputNotebook(b).catch(() => null)]).then(
            nbs => setNotebooks(nbs as [Record<string, unknown> | null, Record<string, unknown> | null])
          );
        }
      },
      err => setError((err as Error).message)
    );
  }, [a, b]);
  const back = (
    <button className="jp-Button nbflow-back" onClick={props.onBack}>
      ‹ Runs
    </button>
  );
  if (!diff) {
    return (
      <div className="nbflow-compare">
        {back}
        <ErrorLine error={error} />
        {!error && <div className="nbflow-dim">Comparing…</div>}
      </div>
    );
  }
  const p = diff.parameters;
  const changedCells = diff.cells.filter(c => c.status !== 'same');
  return (
    <div className="nbflow-compare">
      <div className="nbflow-toolbar">
        {back}
        <span className="nbflow-detail-title">Compare</span>
      </div>
      <table className="nbflow-kv nbflow-compare-head">
        <tbody>
          <tr><th></th><td><strong>A</strong> {diff.a.name}</td><td><strong>B</strong> {diff.b.name}</td></tr>
          <tr><th>State</th><td>{diff.state.a}</td><td>{diff.state.b}</td></tr>
          <tr>
            <th>Duration</th>
            <td>{formatDuration(diff.duration.a)}</td>
            <td>
              {formatDuration(diff.duration.b)}
              {diff.duration.delta !== null && diff.duration.delta !== undefined && (
                <span className="nbflow-dim"> ({diff.duration.delta >= 0 ? '+' : '−'}{formatDuration(Math.abs(diff.duration.delta))})</span>
              )}
            </td>
          </tr>
        </tbody>
      </table>
      <h3>Parameters</h3>
      <table className="nbflow-kv nbflow-compare-parameters">
        <tbody>
          {Object.entries(p.changed).map(([k, v]) => (
            <tr key={k} className="nbflow-changed"><th>{k}</th><td><code>{show(v.a)}</code></td><td><code>{show(v.b)}</code></td></tr>
          ))}
          {Object.entries(p.added).map(([k, v]) => (
            <tr key={k} className="nbflow-changed"><th>{k}</th><td className="nbflow-dim">—</td><td><code>{show(v)}</code></td></tr>
          ))}
          {Object.entries(p.removed).map(([k, v]) => (
            <tr key={k} className="nbflow-changed"><th>{k}</th><td><code>{show(v)}</code></td><td className="nbflow-dim">—</td></tr>
          ))}
        </tbody>
      </table>
      {p.same.length > 0 && <div className="nbflow-dim">same: {p.same.join(', ')}</div>}
      <h3>Tasks</h3>
      <table className="nbflow-kv nbflow-compare-tasks">
        <tbody>
          {diff.task_runs.map(t => (
            <tr key={t.key} data-task={t.name} className={t.state_changed ? 'nbflow-changed' : ''}>
              <th>{t.name}</th>
              <td>{t.a ? `${t.a.state ?? ''} ${formatDuration(t.a.duration)}` : '—'}</td>
              <td>
                {t.b ? `${t.b.state ?? ''} ${formatDuration(t.b.duration)}` : '—'}
                {t.delta !== null && t.delta !== undefined && (
                  <span className="nbflow-dim"> ({t.delta >= 0 ? '+' : '−'}{formatDuration(Math.abs(t.delta))})</span>
                )}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Cells</h3>
      {!diff.outputs_available && <div className="nbflow-dim">cell outputs unavailable: {diff.outputs_note}</div>}
      {diff.outputs_available && !changedCells.length && <div className="nbflow-dim">every cell's output is the same</div>}
      {changedCells.map((c, i) => (
        <div key={i} className="nbflow-compare-cell" data-status={c.status}>
          <div>
            <strong>{c.label}</strong> <span className="nbflow-tag">{c.status}</span>
            {c.source_changed && <span className="nbflow-tag">code changed</span>}
          </div>
          {c.text_diff.length > 0 && (
            <pre className="nbflow-diff">
              {c.text_diff.map((line, j) => (
                <div key={j} className={line.startsWith('+') && !line.startsWith('+++') ? 'nbflow-diff-add' : line.startsWith('-') && !line.startsWith('---') ? 'nbflow-diff-del' : ''}>
                  {line}
                </div>
              ))}
            </pre>
          )}
          {c.tables.map((t, j) => (
            <div key={j} className="nbflow-compare-sides">
              <pre className="nbflow-diff">A: {t.a_text ?? '—'}</pre>
              <pre className="nbflow-diff">B: {t.b_text ?? '—'}</pre>
            </div>
          ))}
          {c.images.length > 0 && (
            <div className="nbflow-compare-sides nbflow-compare-images">
              <div>{cellImages(notebooks[0], c.index_a).map((src, j) => <img key={j} src={src} alt={`A: ${c.label}`} />)}</div>
              <div>{cellImages(notebooks[1], c.index_b).map((src, j) => <img key={j} src={src} alt={`B: ${c.label}`} />)}</div>
            </div>
          )}
        </div>
      ))}
    </div>
  );
}
