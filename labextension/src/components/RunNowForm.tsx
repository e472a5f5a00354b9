import * as React from 'react';
import { ApiError, Deployment, Flow, NbflowApi } from '../api';
import { initialTexts, parameterErrors, ParametersForm, ParameterTexts, parseTexts } from './ParametersForm';

/** Run a deployment now with parameters (defaults: the deployment's, then the flow's). */
export function RunNowForm(props: {
  api: NbflowApi;
  deploymentId: string;
  onDone: () => void;
  onCancel: () => void;
}): JSX.Element {
  const [deployment, setDeployment] = React.useState<Deployment | null>(null);
  const [flow, setFlow] = React.useState<Flow | null>(null);
  const [texts, setTexts] = React.useState<ParameterTexts>({});
  const [errors, setErrors] = React.useState<Record<string, string>>({});
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  React.useEffect(() => {
    (async () => {
      const d = (await props.api.listDeployments()).find(x => x.id === props.deploymentId) ?? null;
      const f = d ? (await props.api.listFlows()).find(x => x.id === d.flow_id) ?? null : null;
      setDeployment(d);
      setFlow(f);
      if (f) {
        setTexts(initialTexts(f.parameters_schema, d?.parameters));
      }
    })().catch(err => setError((err as Error).message));
  }, [props.deploymentId]);
  if (!deployment || !flow) {
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
      await props.api.runDeployment(deployment.id, { parameters: parsed.values });
      props.onDone();
    } catch (err) {
      const e = err as ApiError;
      setErrors(parameterErrors(e));
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="nbflow-run-now-form">
      <div className="nbflow-dim">
        Run <strong>{deployment.name}</strong> ({flow.name}) now on {deployment.runner}.
      </div>
      <ParametersForm schema={flow.parameters_schema} texts={texts} errors={errors} onChange={setTexts} />
      {error && <div className="nbflow-error">{error}</div>}
      <div className="nbflow-form-buttons">
        <button className="jp-Button jp-mod-styled jp-mod-reject" disabled={busy} onClick={props.onCancel}>Cancel</button>
        <button className="jp-Button jp-mod-styled jp-mod-accept nbflow-start-run" disabled={busy} onClick={() => void submit()}>Start run</button>
      </div>
    </div>
  );
}
