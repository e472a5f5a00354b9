import * as React from 'react';
import { Deployment, Flow, FlowRun, STATE_TYPES, StateType } from '../api';
import { cancelPrompt, formatDuration, formatTime, relativeTime, runDuration } from '../format';
import { isTerminal, RunsModel } from '../model';
import { PanelContext } from './context';
import { ErrorLine, StateBadge, useChanged, useClock } from './common';

/** The runs list: filters, a live page of runs and pagination. */
export function RunsView(props: {
  ctx: PanelContext;
  model: RunsModel;
  onSelect: (run: FlowRun) => void;
  onCompare: (a: string, b: string) => void;
}): JSX.Element {
  const { ctx, model } = props;
  useChanged(model);
  const now = useClock(1000);
  const [flows, setFlows] = React.useState<Flow[]>([]);
  const [deployments, setDeployments] = React.useState<Map<string, Deployment>>(new Map());
  const [cancelError, setCancelError] = React.useState<string | null>(null);
  // Runs ticked for comparison (oldest tick first: it is A).
  const [picked, setPicked] = React.useState<string[]>([]);
  const toggle = (id: string) =>
    setPicked(p => (p.includes(id) ? p.filter(x => x !== id) : [...p, id].slice(-2)));
  const upcoming = model.filter.view === 'upcoming';
  // Names of flows and deployments: reloaded when a run of one not known yet shows up.
  const unknown = model.items.some(r => r.deployment_id && !deployments.has(r.deployment_id));
  React.useEffect(() => {
    ctx.api.listFlows().then(setFlows, () => undefined);
    ctx.api.listDeployments().then(ds => setDeployments(new Map(ds.map(d => [d.id, d]))), () => undefined);
  }, [model.total, unknown]);
  const cancel = async (run: FlowRun) => {
    const ok = await ctx.confirm('Cancel flow run?', cancelPrompt(run), 'Cancel run');
    if (!ok) {
      return;
    }
    try {
      await ctx.api.cancelRun(run.id);
      setCancelError(null);
      await model.refresh();
    } catch (err) {
      setCancelError((err as Error).message);
    }
  };
  const source = (run: FlowRun): string =>
    run.deployment_id ? deployments.get(run.deployment_id)?.name ?? deploymentLabel(run) : run.mode;
  const stateFilter = model.filter.stateTypes[0] ?? '';
  return (
    <div className="nbflow-runs">
      <div className="nbflow-toolbar">
        <span className="nbflow-view-toggle" role="group" aria-label="History or upcoming runs">
          {(['history', 'upcoming'] as const).map(v => (
            <button
              key={v}
              className={`nbflow-view-${v} ${model.filter.view === v ? 'nbflow-view-active' : ''}`}
              aria-pressed={model.filter.view === v}
              onClick={() => void model.setFilter({ view: v })}
            >
              {v === 'history' ? 'History' : 'Upcoming'}
            </button>
          ))}
        </span>
        <select
          aria-label="Filter by state"
          className="nbflow-filter-state"
          value={stateFilter}
          onChange={e =>
            void model.setFilter({
              stateTypes: e.target.value ? [e.target.value as StateType] : []
            })
          }
        >
          <option value="">All states</option>
          {STATE_TYPES.map(t => (
            <option key={t} value={t}>
              {t.charAt(0) + t.slice(1).toLowerCase()}
            </option>
          ))}
        </select>
        <select
          aria-label="Filter by flow"
          className="nbflow-filter-flow"
          value={model.filter.flowName ?? ''}
          onChange={e => void model.setFilter({ flowName: e.target.value || null })}
        >
          <option value="">All flows</option>
          {flows.map(f => (
            <option key={f.id} value={f.name}>
              {f.name}
            </option>
          ))}
        </select>
        <button className="jp-Button nbflow-refresh" title="Refresh" onClick={() => void model.refresh()}>
          ⟳
        </button>
        <span
          className={`nbflow-live ${model.live ? 'nbflow-live-on' : ''}`}
          title={model.live ? 'Live: updates arrive through the event stream' : `Polling every ${ctx.settings.pollSeconds} s`}
        >
          {model.live ? '● live' : '○ polling'}
        </span>
      </div>
      <ErrorLine error={model.error ?? cancelError} />
      {!upcoming && picked.length > 0 && (
        <div className="nbflow-compare-bar">
          <span className="nbflow-dim">
            {picked.length === 1 ? 'Tick a second run to compare with.' : '2 runs ticked.'}
          </span>
          <button
            className="jp-Button jp-mod-styled jp-mod-accept nbflow-compare-button"
            disabled={picked.length !== 2}
            onClick={() => props.onCompare(picked[0], picked[1])}
          >
            Compare
          </button>
          <button className="jp-Button nbflow-compare-clear" onClick={() => setPicked([])}>
            Clear
          </button>
        </div>
      )}
      <table className="nbflow-table nbflow-runs-table">
        <thead>
          <tr>
            <th className="nbflow-col-state">State</th>
            <th className="nbflow-col-run">Run</th>
            <th className="nbflow-col-flow">Flow / deployment</th>
            <th className="nbflow-col-start">Start</th>
            <th className="nbflow-col-duration">Duration</th>
            <th className="nbflow-col-cancel"></th>
          </tr>
        </thead>
        <tbody>
          {model.items.map(run => (
            <tr
              key={run.id}
              className="nbflow-run-row"
              data-run-id={run.id}
              data-state={run.state?.type ?? ''}
              onClick={() => props.onSelect(run)}
            >
              <td className="nbflow-col-state">
                {!upcoming && (
                  <input
                    type="checkbox"
                    className="nbflow-pick"
                    aria-label={`Compare ${run.name}`}
                    checked={picked.includes(run.id)}
                    onClick={e => e.stopPropagation()}
                    onChange={() => toggle(run.id)}
                  />
                )}
                <StateBadge state={run.state} />
              </td>
              <td className="nbflow-col-run">
                <div className="nbflow-run-name">{run.name}</div>
                {/* In a narrow panel the flow and start columns fold into this line. */}
                <div className="nbflow-dim nbflow-run-sub">
                  {[
                    run.flow_name,
                    source(run),
                    formatTime(run.start_time ?? run.expected_start_time),
                    formatDuration(runDuration(run, now))
                  ]
                    .filter(Boolean)
                    .join(' · ')}
                </div>
              </td>
              <td className="nbflow-col-flow">
                <div>{run.flow_name ?? ''}</div>
                <div className="nbflow-dim">{source(run)}</div>
              </td>
              <td className="nbflow-col-start">
                {formatTime(run.start_time ?? run.expected_start_time)}
                {upcoming && run.expected_start_time && (
                  <div className="nbflow-dim">{relativeTime(run.expected_start_time)}</div>
                )}
              </td>
              <td className="nbflow-col-duration">{formatDuration(runDuration(run, now))}</td>
              <td className="nbflow-col-cancel">
                {!isTerminal(run.state) && (
                  <button
                    className="nbflow-row-cancel"
                    title="Cancel this run"
                    aria-label={`Cancel ${run.name}`}
                    onClick={e => {
                      e.stopPropagation();
                      void cancel(run);
                    }}
                  >
                    ✕
                  </button>
                )}
              </td>
            </tr>
          ))}
          {!model.items.length && !model.loading && (
            <tr>
              <td colSpan={6} className="nbflow-empty">
                {upcoming
                  ? 'No upcoming runs: no active schedule has a run ahead.'
                  : `No flow runs${model.filter.stateTypes.length || model.filter.flowName ? ' match the filter' : ' yet'}.`}
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <div className="nbflow-pager">
        <button className="jp-Button" disabled={model.page <= 1} onClick={() => void model.goToPage(model.page - 1)}>
          ‹ Prev
        </button>
        <span className="nbflow-page-info">
          Page {model.page} of {model.pageCount} · {model.total} runs
        </span>
        <button
          className="jp-Button"
          disabled={model.page >= model.pageCount}
          onClick={() => void model.goToPage(model.page + 1)}
        >
          Next ›
        </button>
      </div>
    </div>
  );
}

function deploymentLabel(run: FlowRun): string {
  return `deployment ${run.deployment_id!.slice(0, 8)}`;
}
