import * as React from 'react';
import { Artifact, FlowRun } from '../api';
import {
  cancelPrompt,
  filterLogs,
  formatDuration,
  formatTime,
  LOG_LEVELS,
  runDuration,
  STATE_COLORS
} from '../format';
import { isTerminal, layoutGraph, RunDetailModel } from '../model';
import { kernelLeftRunning } from '../widgetCancel';
import { PanelContext } from './context';
import { ErrorLine, StateBadge, useChanged, useClock } from './common';
import { RunGraph, RunTimeline } from './RunGraph';

const LEVELS = LOG_LEVELS;

/** One run: header with actions, parameters, state history, task runs / DAG, logs. */
export function RunDetail(props: {
  ctx: PanelContext;
  model: RunDetailModel;
  onBack: () => void;
  onOpenRun: (id: string) => void;
}): JSX.Element {
  const { ctx, model } = props;
  useChanged(model);
  const now = useClock(1000);
  const [busy, setBusy] = React.useState<string | null>(null);
  const [actionError, setActionError] = React.useState<string | null>(null);
  const [logLevel, setLogLevel] = React.useState(0);
  const [logTask, setLogTask] = React.useState('');
  const [artifacts, setArtifacts] = React.useState<Artifact[]>([]);
  const [children, setChildren] = React.useState<FlowRun[]>([]);
  const [loaded, setLoaded] = React.useState<string | null>(null);
  const terminal = isTerminal(model.run?.state);
  // A pipeline's child runs (run_notebook), refreshed while the parent runs.
  React.useEffect(() => {
    if (model.run) {
      ctx.api
        .listRuns({ parentFlowRunIds: [model.run.id], limit: 200 })
        .then(page => setChildren(page.items), () => setChildren([]));
    }
  }, [model.run?.id, model.run?.state?.type, model.graph?.nodes.length]);
  React.useEffect(() => {
    if (model.run && terminal) {
      ctx.api.listArtifacts(model.run.id).then(setArtifacts, () => setArtifacts([]));
    }
  }, [model.run?.id, terminal]);
  const logsRef = React.useRef<HTMLPreElement>(null);
  React.useEffect(() => {
    const el = logsRef.current;
    if (el) {
      el.scrollTop = el.scrollHeight;
    }
  }, [model.logs.length]);
  const run = model.run;
  if (!run) {
    return (
      <div className="nbflow-detail">
        <button className="jp-Button nbflow-back" onClick={props.onBack}>‹ Runs</button>
        <ErrorLine error={model.error} />
        <div className="nbflow-dim">Loading…</div>
      </div>
    );
  }
  const cancel = async () => {
    const ok = await ctx.confirm('Cancel flow run?', cancelPrompt(run), 'Cancel run');
    if (!ok) {
      return;
    }
    setBusy('cancel');
    try {
      await ctx.api.cancelRun(run.id);
      setActionError(null);
      await model.refresh();
    } catch (err) {
      setActionError((err as Error).message);
    } finally {
      setBusy(null);
    }
  };
  const restart = async (kernelId: string) => {
    setBusy('restart');
    try {
      await ctx.restartKernel(kernelId);
      setActionError(null);
    } catch (err) {
      setActionError(`Could not restart the kernel: ${(err as Error).message}`);
    } finally {
      setBusy(null);
    }
  };
  const retry = async () => {
    setBusy('retry');
    try {
      const created = await ctx.retry(run);
      setActionError(null);
      if (created) {
        props.onOpenRun(created.id);
      }
    } catch (err) {
      setActionError((err as Error).message);
    } finally {
      setBusy(null);
    }
  };
  const openInNotebook = async () => {
    setBusy('open');
    try {
      setLoaded(await ctx.openInNotebook(run));
      setActionError(null);
    } catch (err) {
      setActionError((err as Error).message);
    } finally {
      setBusy(null);
    }
  };
  const viewOutput = async (r: FlowRun) => {
    setBusy('output');
    try {
      await ctx.viewOutput(r);
      setActionError(null);
    } catch (err) {
      setActionError((err as Error).message);
    } finally {
      setBusy(null);
    }
  };
  const openOutput = async (r: FlowRun) => {
    setBusy('output');
    try {
      await ctx.openOutput(r);
      setActionError(null);
    } catch (err) {
      setActionError((err as Error).message);
    } finally {
      setBusy(null);
    }
  };
  const tasks = model.graph ? layoutGraph(model.graph) : [];
  const strayKernel = kernelLeftRunning(run);
  const logs = filterLogs(model.logs, { level: logLevel, task: logTask });
  const names = new Map((model.graph?.nodes ?? []).map(n => [n.id, n.name]));
  return (
    <div className="nbflow-detail" data-run-id={run.id}>
      <div className="nbflow-toolbar">
        <button className="jp-Button nbflow-back" onClick={props.onBack}>‹ Runs</button>
        <span className="nbflow-detail-title">{run.name}</span>
        <StateBadge state={run.state} />
      </div>
      <div className="nbflow-actions">
        {!isTerminal(run.state) && (
          <button className="jp-Button jp-mod-styled jp-mod-warn nbflow-cancel" disabled={busy !== null} onClick={() => void cancel()}>
            Cancel run
          </button>
        )}
        {isTerminal(run.state) && run.mode === 'batch' && (
          <>
            <button
              className="jp-Button jp-mod-styled jp-mod-accept nbflow-view-output"
              title="Show the executed notebook read-only, without starting a kernel"
              disabled={busy !== null}
              onClick={() => void viewOutput(run)}
            >
              View output
            </button>
            <button
              className="jp-Button jp-mod-styled nbflow-open-output"
              title="Save a copy under nbflow-outputs/ and open it as a notebook"
              disabled={busy !== null}
              onClick={() => void openOutput(run)}
            >
              Open as notebook
            </button>
            {run.notebook_path && (
              <button
                className="jp-Button jp-mod-styled nbflow-open-in-notebook"
                title="Open the notebook in a kernel with this run's parameters and its completed task cells' variables loaded (debug at the failed cell)"
                disabled={busy !== null}
                onClick={() => void openInNotebook()}
              >
                Open in notebook
              </button>
            )}
            <button
              className="jp-Button jp-mod-styled nbflow-retry"
              title="Run again as a new run linked to this one (parameters can be changed)"
              disabled={busy !== null}
              onClick={() => void retry()}
            >
              {['FAILED', 'CRASHED', 'CANCELLED'].includes(run.state?.type ?? '') ? 'Repair / retry' : 'Retry'}
            </button>
          </>
        )}
      </div>
      {loaded && (
        <div className="nbflow-loaded">
          <div>
            Loaded into the notebook's kernel:{' '}
            <button className="jp-Button nbflow-loaded-close" onClick={() => setLoaded(null)}>
              ✕
            </button>
          </div>
          <pre className="nbflow-diff">{loaded}</pre>
        </div>
      )}
      {strayKernel && (
        <div className="nbflow-warning nbflow-stray-kernel">
          Its kernel ignored the interrupt and may still be executing the cell.{' '}
          <button
            className="jp-Button jp-mod-styled jp-mod-warn nbflow-restart-kernel"
            disabled={busy !== null}
            onClick={() => void restart(strayKernel)}
          >
            Restart kernel
          </button>
        </div>
      )}
      <ErrorLine error={actionError ?? model.error} />
      <table className="nbflow-kv">
        <tbody>
          <tr><th>Flow</th><td>{run.flow_name}</td></tr>
          <tr><th>Runner</th><td>{run.runner ?? run.mode}</td></tr>
          <tr><th>Started</th><td>{formatTime(run.start_time ?? run.expected_start_time)}</td></tr>
          <tr><th>Duration</th><td>{formatDuration(runDuration(run, now))}</td></tr>
          <tr><th>Attempts</th><td>{run.run_count}</td></tr>
          {run.parent_flow_run_id && (
            <tr>
              <th>Pipeline</th>
              <td>
                <a href="#" className="nbflow-link nbflow-parent-run" onClick={e => { e.preventDefault(); props.onOpenRun(run.parent_flow_run_id!); }}>
                  {run.parent_flow_run_id.slice(0, 8)}
                </a>
              </td>
            </tr>
          )}
          {run.retry_of && (
            <tr>
              <th>Retry of</th>
              <td>
                <a href="#" className="nbflow-link nbflow-retry-of" onClick={e => { e.preventDefault(); props.onOpenRun(run.retry_of!); }}>
                  {run.retry_of.slice(0, 8)}
                </a>
              </td>
            </tr>
          )}
          {run.state?.message && <tr><th>Message</th><td>{run.state.message}</td></tr>}
        </tbody>
      </table>
      <h3>Parameters</h3>
      {Object.keys(run.parameters).length ? (
        <table className="nbflow-kv nbflow-parameters">
          <tbody>
            {Object.entries(run.parameters).map(([k, v]) => (
              <tr key={k}><th>{k}</th><td><code>{JSON.stringify(v)}</code></td></tr>
            ))}
          </tbody>
        </table>
      ) : (
        <div className="nbflow-dim">none</div>
      )}
      <h3>State history</h3>
      <ol className="nbflow-history">
        {model.states.map(s => (
          <li key={s.id}>
            <StateBadge state={s} /> <span className="nbflow-dim">{formatTime(s.timestamp)}</span>
            {s.message && <span className="nbflow-dim"> — {s.message}</span>}
          </li>
        ))}
      </ol>
      {model.graph && model.graph.nodes.length > 0 && (
        <>
          <h3>Graph</h3>
          <RunGraph graph={model.graph} children={children} onOpenRun={props.onOpenRun} />
          <h3>Timeline</h3>
          <RunTimeline tasks={model.graph.nodes} now={now} />
        </>
      )}
      <h3>Tasks</h3>
      {tasks.length ? (
        <div className="nbflow-dag">
          {tasks.map(({ task, depth }) => (
            <div
              key={task.id}
              className="nbflow-dag-node"
              data-task={task.name}
              style={{ marginLeft: `${depth * 18}px`, borderLeftColor: task.state ? STATE_COLORS[task.state.type] : '#ccc' }}
            >
              <div className="nbflow-dag-head">
                {depth > 0 && <span className="nbflow-dag-arrow">↳</span>}
                <strong>{task.name}</strong> <StateBadge state={task.state} />
                {task.state?.name === 'Cached' && <span className="nbflow-tag">cache hit</span>}
                {task.run_count > 1 && <span className="nbflow-tag">{task.run_count - 1} retries</span>}
                <span className="nbflow-dim"> {formatDuration(runDuration(task, now) ?? task.total_run_time)}</span>
              </div>
              {(task.upstream.length > 0 || task.inputs.length > 0 || task.outputs.length > 0) && (
                <div className="nbflow-dim nbflow-dag-io">
                  {task.upstream.length > 0 && <>after {task.upstream.map(u => names.get(u) ?? u.slice(0, 8)).join(', ')} · </>}
                  {task.inputs.length > 0 && <>in: {task.inputs.join(', ')} · </>}
                  {task.outputs.length > 0 && <>out: {task.outputs.join(', ')}</>}
                </div>
              )}
            </div>
          ))}
        </div>
      ) : (
        <div className="nbflow-dim">no task runs yet</div>
      )}
      {children.length > 0 && (
        <>
          <h3>Child runs</h3>
          <table className="nbflow-kv nbflow-children">
            <tbody>
              {children.map(c => (
                <tr key={c.id} data-run-id={c.id}>
                  <th>
                    <a href="#" className="nbflow-link" onClick={e => { e.preventDefault(); props.onOpenRun(c.id); }}>
                      {c.name}
                    </a>
                  </th>
                  <td>
                    <StateBadge state={c.state} /> <span className="nbflow-dim">{c.flow_name} · {formatDuration(runDuration(c, now))}</span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      {artifacts.length > 0 && (
        <>
          <h3>Artifacts</h3>
          <table className="nbflow-kv nbflow-artifacts">
            <tbody>
              {artifacts.map(a => (
                <tr key={a.id} data-kind={a.kind}>
                  <th>{a.key}</th>
                  <td>
                    <span className="nbflow-tag">{a.kind}</span>{' '}
                    <span className="nbflow-dim">{a.uri ?? (a.data ? JSON.stringify(a.data).slice(0, 80) : '')}</span>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      )}
      <h3>Logs {!isTerminal(run.state) && <span className="nbflow-dim">(following)</span>}</h3>
      <div className="nbflow-toolbar nbflow-log-filters">
        <select
          aria-label="Log level"
          className="nbflow-log-level"
          value={logLevel}
          onChange={e => setLogLevel(Number(e.target.value))}
        >
          <option value={0}>All levels</option>
          <option value={20}>Info and up</option>
          <option value={30}>Warnings and errors</option>
          <option value={40}>Errors</option>
        </select>
        <select
          aria-label="Log task"
          className="nbflow-log-task"
          value={logTask}
          onChange={e => setLogTask(e.target.value)}
        >
          <option value="">All tasks</option>
          <option value="flow">The run itself</option>
          {(model.graph?.nodes ?? []).map(n => (
            <option key={n.id} value={n.id}>
              {n.name}
            </option>
          ))}
        </select>
      </div>
      <pre className="nbflow-logs" ref={logsRef}>
        {logs.map((l, i) => (
          <div key={i} className={`nbflow-log nbflow-log-${LEVELS[l.level] ?? l.level}`}>
            {formatTime(l.timestamp)} {LEVELS[l.level] ?? l.level} {l.message}
          </div>
        ))}
        {!logs.length && (
          <span className="nbflow-dim">{model.logs.length ? 'no logs match the filter' : 'no logs'}</span>
        )}
      </pre>
    </div>
  );
}
