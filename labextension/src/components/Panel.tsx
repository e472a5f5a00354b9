import * as React from 'react';
import { ReactWidget } from '@jupyterlab/ui-components';
import { FlowRun } from '../api';
import { Changed, RunDetailModel, RunsModel } from '../model';
import { PanelContext } from './context';
import { DeploymentsView } from './DeploymentsView';
import { RunDetail } from './RunDetail';
import { RunsView } from './RunsView';
import { CompareView } from './CompareView';
import { AlertsView } from './AlertsView';

function PanelBody(props: { ctx: PanelContext; runs: RunsModel; panel: NbflowPanel }): JSX.Element {
  const { ctx, runs, panel } = props;
  const [tab, setTab] = React.useState<'runs' | 'deployments' | 'alerts'>('runs');
  const [detail, setDetail] = React.useState<RunDetailModel | null>(null);
  const [compare, setCompare] = React.useState<[string, string] | null>(null);
  const [version, setVersion] = React.useState(0);
  React.useEffect(() => panel.deploymentsChanged.connect(() => setVersion(v => v + 1)), []);
  const showRequested = () => {
    if (panel.requestedRun) {
      setTab('runs');
      setDetail(new RunDetailModel(ctx.api, panel.requestedRun));
      panel.requestedRun = null;
    }
  };
  React.useEffect(() => {
    showRequested(); // a run asked for before the panel first rendered
    return panel.runRequested.connect(showRequested);
  }, []);
  React.useEffect(() => {
    if (!detail) {
      return;
    }
    // State and task-run changes arrive through the event stream; the follow loop picks up
    // logs (and everything, when the stream is down).
    const onEvent = (e: Parameters<RunDetailModel['applyEvent']>[0]) => void detail.applyEvent(e);
    runs.eventListeners.add(onEvent);
    detail.follow(1);
    return () => {
      runs.eventListeners.delete(onEvent);
      detail.stop();
    };
  }, [detail]);
  const select = (run: FlowRun) => setDetail(new RunDetailModel(ctx.api, run.id));
  return (
    <div className="nbflow-panel">
      <div className="nbflow-header">
        <span className="nbflow-title">nbflow</span>
        <div className="nbflow-tabs" role="tablist">
          <button role="tab" aria-selected={tab === 'runs'} className={`nbflow-tab ${tab === 'runs' ? 'nbflow-tab-active' : ''}`} onClick={() => { setTab('runs'); setDetail(null); setCompare(null); }}>
            Runs
          </button>
          <button role="tab" aria-selected={tab === 'deployments'} className={`nbflow-tab ${tab === 'deployments' ? 'nbflow-tab-active' : ''}`} onClick={() => { setTab('deployments'); setDetail(null); setCompare(null); }}>
            Deployments
          </button>
          <button role="tab" aria-selected={tab === 'alerts'} title="Notification rules" className={`nbflow-tab ${tab === 'alerts' ? 'nbflow-tab-active' : ''}`} onClick={() => { setTab('alerts'); setDetail(null); setCompare(null); }}>
            Alerts
          </button>
        </div>
      </div>
      <div className="nbflow-body">
        {tab === 'runs' && detail && (
          <RunDetail
            key={detail.runId}
            ctx={ctx}
            model={detail}
            onBack={() => setDetail(null)}
            onOpenRun={id => setDetail(new RunDetailModel(ctx.api, id))}
          />
        )}
        {tab === 'runs' && !detail && compare && (
          <CompareView ctx={ctx} a={compare[0]} b={compare[1]} onBack={() => setCompare(null)} />
        )}
        {tab === 'runs' && !detail && !compare && (
          <RunsView ctx={ctx} model={runs} onSelect={select} onCompare={(a, b) => setCompare([a, b])} />
        )}
        {tab === 'deployments' && <DeploymentsView ctx={ctx} version={version} />}
        {tab === 'alerts' && <AlertsView ctx={ctx} />}
      </div>
    </div>
  );
}

/** The side panel widget. */
export class NbflowPanel extends ReactWidget {
  readonly runs: RunsModel;
  readonly deploymentsChanged = new Changed();
  readonly runRequested = new Changed();
  /** The run `showRun` asked for, until the panel shows it. */
  requestedRun: string | null = null;

  constructor(private ctx: PanelContext) {
    super();
    this.id = 'nbflow-panel';
    this.addClass('nbflow-panel-widget');
    this.runs = new RunsModel(ctx.api, { pageSize: ctx.settings.pageSize });
    this.startLive();
  }

  /** (Re)start live updates following the settings. */
  startLive(): void {
    const s = this.ctx.settings;
    this.runs.pageSize = s.pageSize;
    this.runs.stop();
    if (s.refresh !== 'manual') {
      this.runs.start({
        openSocket: s.refresh === 'live' ? this.ctx.openSocket : undefined,
        pollSeconds: s.pollSeconds
      });
    }
    void this.runs.refresh();
  }

  /** Show one run's page (a notification's link: `lab?nbflow-run=<id>`). */
  showRun(id: string): void {
    this.requestedRun = id;
    this.runRequested.emit();
  }

  dispose(): void {
    this.runs.stop();
    super.dispose();
  }

  render(): JSX.Element {
    return <PanelBody ctx={this.ctx} runs={this.runs} panel={this} />;
  }
}
