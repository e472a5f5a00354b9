import * as React from 'react';
import { ApiError, Flow, FlowRun, NbflowApi } from '../api';
import { initialTexts, parameterErrors, ParametersForm, ParameterTexts, parseTexts } from './ParametersForm';

/** Retry a finished run: a new linked run, its parameters prefilled and editable. */
export function RetryForm(props: {
  api: NbflowApi;
  run: FlowRun;
  onDone: (run: FlowRun) => void;
  onCancel: () => void;
}): JSX.Element {
  const { api, run } = props;
  const [flow, setFlow] = React.useState<Flow | null>(null);
  const [texts, setTexts] = React.useState<ParameterTexts>({});
  const [errors, setErrors] = React.useState<Record<string, string>>({});
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  // A run that did not complete can be repaired: completed cells restored, not re-run.
  const repairable = ['FAILED', 'CRASHED', 'CANCELLED'].includes(run.state?.type ?? '');
  const [fromFailed, setFromFailed] = React.useState(repairable);
  React.useEffect(() => {
    api
      .listFlows()
      .then(flows => {
        const f = flows.find(x => x.id === run.flow_id) ?? null;
        setFlow(f);
        if (f) {
          setTexts(initialTexts(f.parameters_schema, run.parameters));
        }
      })
      .catch(err => setError((err as Error).message));
  }, [run.id]);
  if (!flow) {
    return <div className="nbflow-dim">{error ?? 'Loading…'}</div>;
  }
  const submit = async () => {
    const parsed = parseTexts(flow.parameters_schema, texts);
    setErrors(parsed.errors);
    if (Object.keys(parsed.errors).length) {
      return;
    }
    setBusy(true);
    try {
      props.onDone(await api.retryRun(run.id, { parameters: parsed.values, from_failed: repairable && fromFailed }));
    } catch (err) {
      const e = err as ApiError;
      setErrors(parameterErrors(e));
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="nbflow-run-now-form nbflow-retry-form">
      <div className="nbflow-dim">
        Run <strong>{flow.name}</strong> again as a new run linked to <strong>{run.name}</strong>, with
        the same configuration. Change parameters below if needed.
      </div>
      {repairable && (
        <label className="nbflow-field">
          <span>
            <input type="checkbox" name="from_failed" checked={fromFailed} onChange={() => setFromFailed(!fromFailed)} />{' '}
            <strong>Repair</strong>: start at the failed cell — the <code>%%task</code> cells that completed,
            with unchanged code and inputs, are restored from this run instead of run again (plain cells
            re-run)
          </span>
        </label>
      )}
      <ParametersForm schema={flow.parameters_schema} texts={texts} errors={errors} onChange={setTexts} />
      {error && <div className="nbflow-error">{error}</div>}
      <div className="nbflow-form-buttons">
        <button className="jp-Button jp-mod-styled jp-mod-reject" disabled={busy} onClick={props.onCancel}>
          Cancel
        </button>
        <button className="jp-Button jp-mod-styled jp-mod-accept nbflow-start-retry" disabled={busy} onClick={() => void submit()}>
          {repairable && fromFailed ? 'Repair' : 'Retry'}
        </button>
      </div>
    </div>
  );
}
