import * as React from 'react';
import { Deployment, DeploymentVersion, Flow, VersionDiff } from '../api';
import { describeSchedule, formatTime, relativeTime } from '../format';
import { PanelContext } from './context';
import { ErrorLine } from './common';
import { browserTimezone } from './ScheduleForm';

/** Deployments: schedules with their next run (in the user's time zone), pause, run, delete. */
export function DeploymentsView(props: { ctx: PanelContext; version: number }): JSX.Element {
  const { ctx } = props;
  const [items, setItems] = React.useState<Deployment[]>([]);
  const [flows, setFlows] = React.useState<Map<string, Flow>>(new Map());
  const [next, setNext] = React.useState<Record<string, string>>({});
  const [error, setError] = React.useState<string | null>(null);
  const userTz = browserTimezone();

  const load = React.useCallback(async () => {
    try {
      const [deployments, flowList] = await Promise.all([ctx.api.listDeployments(), ctx.api.listFlows()]);
      setItems(deployments);
      setFlows(new Map(flowList.map(f => [f.id, f])));
      const times: Record<string, string> = {};
      await Promise.all(
        deployments.flatMap(d =>
          d.schedules
            .filter(s => s.active !== false)
            .map(async s => {
              try {
                const p = await ctx.api.previewSchedule({ ...s, count: 1 });
                const key = d.id;
                if (p.next[0] && (!times[key] || p.next[0] < times[key])) {
                  times[key] = p.next[0];
                }
              } catch {
                // an invalid stored schedule: shown without a next time
              }
            })
        )
      );
      setNext(times);
      setError(null);
    } catch (err) {
      setError((err as Error).message);
    }
  }, [ctx]);

  React.useEffect(() => {
    void load();
    if (ctx.settings.refresh === 'manual') {
      return;
    }
    const t = setInterval(() => void load(), Math.max(ctx.settings.pollSeconds, 5) * 1000);
    return () => clearInterval(t);
  }, [load, props.version]);

  const [versionsOf, setVersionsOf] = React.useState<string | null>(null);
  const [versions, setVersions] = React.useState<DeploymentVersion[]>([]);
  const [diff, setDiff] = React.useState<VersionDiff | null>(null);
  React.useEffect(() => {
    setDiff(null);
    if (versionsOf) {
      ctx.api.listDeploymentVersions(versionsOf).then(setVersions, err => setError((err as Error).message));
    }
  }, [versionsOf, props.version]);
  const showDiff = (id: string, v: number) =>
    ctx.api.deploymentVersionDiff(id, v).then(setDiff, err => setError((err as Error).message));

  const act = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
      await load();
    } catch (err) {
      setError((err as Error).message);
    }
  };

  return (
    <div className="nbflow-deployments">
      <div className="nbflow-toolbar">
        <span className="nbflow-dim">{items.length} deployments · times in {userTz}</span>
        <button className="jp-Button nbflow-refresh" title="Refresh" onClick={() => void load()}>⟳</button>
      </div>
      <ErrorLine error={error} />
      {items.map(d => (
        <div key={d.id} className="nbflow-deployment" data-deployment={d.name}>
          <div className="nbflow-deployment-head">
            <strong>{d.name}</strong>
            <span className="nbflow-dim">
              {' '}
              · {flows.get(d.flow_id)?.name ?? ''} · {d.runner}
              {d.version !== undefined && <> · v{d.version}</>}
              {d.run_mode === 'file' && <> · runs the file</>}
              {d.kernel_name && <> · kernel {d.kernel_name}</>}
            </span>
            {d.paused && <span className="nbflow-tag nbflow-paused">paused</span>}
          </div>
          {d.notebook_path && <div className="nbflow-dim"><code>{d.notebook_path}</code></div>}
          <div className="nbflow-schedules">
            {d.schedules.length ? (
              d.schedules.map((s, i) => <div key={s.id ?? i}>{describeSchedule(s)}</div>)
            ) : (
              <div className="nbflow-dim">no schedule</div>
            )}
            {next[d.id] && !d.paused && (
              <div className="nbflow-next-run">
                next run: {formatTime(next[d.id], userTz)} <span className="nbflow-dim">({relativeTime(next[d.id])})</span>
              </div>
            )}
          </div>
          <div className="nbflow-actions">
            <button className="jp-Button jp-mod-styled nbflow-run-now" onClick={() => void ctx.runNow(d.id).then(load)}>
              Run now
            </button>
            {d.notebook_path && (
              <button className="jp-Button jp-mod-styled nbflow-edit" onClick={() => void ctx.schedule(d.notebook_path!).then(load)}>
                Edit
              </button>
            )}
            <button
              className="jp-Button jp-mod-styled nbflow-versions"
              onClick={() => setVersionsOf(versionsOf === d.id ? null : d.id)}
            >
              {versionsOf === d.id ? 'Hide versions' : 'Versions'}
            </button>
            <button
              className="jp-Button jp-mod-styled nbflow-pause"
              onClick={() => void act(() => ctx.api.updateDeployment(d.id, { paused: !d.paused }))}
            >
              {d.paused ? 'Resume' : 'Pause'}
            </button>
            <button
              className="jp-Button jp-mod-styled jp-mod-warn nbflow-delete"
              onClick={() =>
                void ctx
                  .confirm('Delete deployment?', `Delete "${d.name}" and its future scheduled runs?`, 'Delete')
                  .then(ok => (ok ? act(() => ctx.api.deleteDeployment(d.id)) : undefined))
              }
            >
              Delete
            </button>
          </div>
          {versionsOf === d.id && (
            <div className="nbflow-versions-list">
              <ol reversed>
                {versions.map(v => (
                  <li key={v.version} data-version={v.version}>
                    <strong>v{v.version}</strong> <span className="nbflow-dim">{formatTime(v.created)} · {v.author}</span>
                    <div>{v.summary}</div>
                    {v.version > 1 && (
                      <a href="#" className="nbflow-link nbflow-version-diff" onClick={e => { e.preventDefault(); void showDiff(d.id, v.version); }}>
                        what changed from v{v.version - 1}
                      </a>
                    )}
                  </li>
                ))}
              </ol>
              {diff && (
                <div className="nbflow-version-diff-view">
                  <div>
                    <strong>
                      v{diff.against} → v{diff.version}
                    </strong>
                  </div>
                  {diff.changes.filter(c => c.field !== 'notebook').map(c => (
                    <div key={c.field} className="nbflow-dim">
                      {c.field}: <code>{JSON.stringify(c.old)}</code> → <code>{JSON.stringify(c.new)}</code>
                    </div>
                  ))}
                  {diff.cells.map((c, i) => (
                    <pre key={i} className="nbflow-diff">
                      {c.diff.split('\n').map((line, j) => (
                        <div
                          key={j}
                          className={line.startsWith('+') && !line.startsWith('+++') ? 'nbflow-diff-add' : line.startsWith('-') && !line.startsWith('---') ? 'nbflow-diff-del' : ''}
                        >
                          {line}
                        </div>
                      ))}
                    </pre>
                  ))}
                  {!diff.cells.length && <div className="nbflow-dim">the notebook's code cells are the same</div>}
                </div>
              )}
            </div>
          )}
        </div>
      ))}
      {!items.length && !error && (
        <div className="nbflow-empty">
          No deployments. Right-click a notebook in the file browser and choose “Schedule with nbflow…”.
        </div>
      )}
    </div>
  );
}

/** The "run now" dialog body: the deployment's parameters, editable. */
export { RunNowForm } from './RunNowForm';
