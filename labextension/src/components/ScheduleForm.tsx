import * as React from 'react';
import {
  ApiError,
  Deployment,
  DeploymentEdit,
  FieldChange,
  NbflowApi,
  NotebookParameters,
  RunEnvironments,
  Schedule
} from '../api';
import { cronProblem, formatTime, relativeTime } from '../format';
import { initialTexts, ParametersForm, ParameterTexts, parseTexts } from './ParametersForm';

/** The main job variables of each runner, shown as inputs. */
export const RUNNER_FIELDS: Record<string, { key: string; label: string; placeholder: string }[]> = {
  subprocess: [
    { key: 'working_dir', label: 'Working directory', placeholder: '(server root)' },
    { key: 'python', label: 'Python interpreter', placeholder: '(this one)' }
  ],
  docker: [
    { key: 'image', label: 'Image', placeholder: 'nbflow-runtime:latest' },
    { key: 'network_mode', label: 'Network mode', placeholder: 'bridge' }
  ],
  kubernetes: [
    { key: 'image', label: 'Image', placeholder: 'nbflow-runtime:latest' },
    { key: 'namespace', label: 'Namespace', placeholder: 'default' },
    { key: 'service_account_name', label: 'Service account', placeholder: '(default)' }
  ]
};

const UNITS: Record<string, number> = { seconds: 1, minutes: 60, hours: 3600, days: 86400 };

/** A changed value in the confirmation: short JSON, schedules as people read them. */
function showValue(v: unknown): string {
  if (v === null || v === undefined) {
    return '—';
  }
  if (Array.isArray(v) && v.every(x => x && typeof x === 'object' && ('cron' in x || 'interval_seconds' in x))) {
    return v.length ? v.map(x => (x.cron ? `cron ${x.cron} (${x.timezone})` : `every ${x.interval_seconds} s (${x.timezone})`)).join('; ') : 'no schedule';
  }
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}

export function timezones(): string[] {
  const intl = Intl as unknown as { supportedValuesOf?: (k: string) => string[] };
  const zones = intl.supportedValuesOf ? intl.supportedValuesOf('timeZone') : [];
  return zones.includes('UTC') ? zones : ['UTC', ...zones];
}

export function browserTimezone(): string {
  return Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
}

type Kind = 'cron' | 'interval' | 'none';

const FIX_FIELDS = 'Fix the fields marked in red.';

/** An interval in its largest whole unit: 1800 s → [30, 'minutes']. */
export function splitInterval(seconds: number): [number, string] {
  for (const unit of ['days', 'hours', 'minutes']) {
    if (seconds % UNITS[unit] === 0) {
      return [seconds / UNITS[unit], unit];
    }
  }
  return [seconds, 'seconds'];
}

/** The schedule dialog's body: runner, job variables, schedule with preview, parameters. */
export function ScheduleForm(props: {
  api: NbflowApi;
  path: string;
  defaultRunner: string;
  onDone: (deployment: Deployment, ranNow: boolean) => void;
  onCancel: () => void;
}): JSX.Element {
  const { api } = props;
  const [info, setInfo] = React.useState<NotebookParameters | null>(null);
  const [loadError, setLoadError] = React.useState<string | null>(null);
  const [name, setName] = React.useState(props.path.replace(/^.*\//, '').replace(/\.ipynb$/, ''));
  const [runner, setRunner] = React.useState(props.defaultRunner);
  const [jobVars, setJobVars] = React.useState<Record<string, string>>({});
  // No schedule unless the notebook's %%flow cell has one: a deployment runs on demand.
  const [kind, setKind] = React.useState<Kind>('none');
  const [cron, setCron] = React.useState('');
  const [every, setEvery] = React.useState('1');
  const [unit, setUnit] = React.useState('hours');
  const [tz, setTz] = React.useState(browserTimezone());
  const [texts, setTexts] = React.useState<ParameterTexts>({});
  const [preview, setPreview] = React.useState<string[]>([]);
  const [fieldErrors, setFieldErrors] = React.useState<Record<string, string>>({});
  const [formError, setFormError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  // The deployment of this notebook, when there is one: the dialog edits it.
  const [existing, setExisting] = React.useState<Deployment | null>(null);
  const [runMode, setRunMode] = React.useState<'snapshot' | 'file'>('snapshot');
  const [kernel, setKernel] = React.useState('');
  const [envs, setEnvs] = React.useState<RunEnvironments | null>(null);
  // An edit waiting for confirmation, with what it changes.
  const [pending, setPending] = React.useState<{ edit: DeploymentEdit; changes: FieldChange[]; runNow: boolean } | null>(null);
  // The parameters' errors, one object per change of the errors (the form keys on it).
  const paramErrors = React.useMemo(
    () =>
      Object.fromEntries(
        Object.entries(fieldErrors)
          .filter(([k, v]) => k.startsWith('param-') && v)
          .map(([k, v]) => [k.slice(6), v])
      ),
    [fieldErrors]
  );

  /** Fill the form from a deployed definition (what runs), not the notebook's defaults. */
  const showDeployment = (d: Deployment, i: NotebookParameters) => {
    setExisting(d);
    setName(d.name);
    setRunner(d.runner);
    setRunMode(d.run_mode ?? 'snapshot');
    setKernel(d.kernel_name ?? '');
    const jv: Record<string, string> = {};
    for (const [k, v] of Object.entries(d.job_variables ?? {})) {
      jv[k] = typeof v === 'string' ? v : JSON.stringify(v);
    }
    setJobVars(jv);
    const sch = d.schedules.find(x => x.active !== false) ?? d.schedules[0];
    if (!sch) {
      setKind('none');
    } else if (sch.cron) {
      setKind('cron');
      setCron(sch.cron);
      setTz(sch.timezone);
    } else if (sch.interval_seconds) {
      setKind('interval');
      const [n, u] = splitInterval(sch.interval_seconds);
      setEvery(String(n));
      setUnit(u);
      setTz(sch.timezone);
    }
    setTexts(initialTexts(i.parameters_schema, d.parameters));
  };

  React.useEffect(() => {
    api.runEnvironments().then(setEnvs, () => setEnvs(null));
  }, []);

  React.useEffect(() => {
    api.notebookParameters(props.path).then(
      async i => {
        setInfo(i);
        setTexts(initialTexts(i.parameters_schema));
        if (i.runner) {
          setRunner(i.runner);
        }
        if (i.cron) {
          setKind('cron');
          setCron(i.cron);
          setTz(i.timezone);
        } else if (i.interval_seconds) {
          setKind('interval');
          setEvery(String(i.interval_seconds));
          setUnit('seconds');
        }
        const jv: Record<string, string> = {};
        for (const [k, v] of Object.entries(i.job_variables ?? {})) {
          jv[k] = typeof v === 'string' ? v : JSON.stringify(v);
        }
        setJobVars(jv);
        const deployed = (await api.listDeployments()).filter(d => d.notebook_path === i.path);
        if (deployed.length) {
          showDeployment(deployed[0], i);
        }
      },
      err => setLoadError((err as Error).message)
    );
  }, [props.path]);

  const intervalSeconds = Number(every) * (UNITS[unit] ?? 1);
  const schedule = (): Schedule | null =>
    kind === 'none'
      ? null
      : kind === 'cron'
        ? { cron: cron.trim(), timezone: tz }
        : { interval_seconds: intervalSeconds, timezone: tz };

  // Preview the next times (debounced): the server validates cron and time zone.
  React.useEffect(() => {
    if (kind === 'none') {
      setPreview([]);
      setFieldErrors(e => ({ ...e, cron: '', interval: '', timezone: '' }));
      return;
    }
    // A cron the browser can judge is explained at once, in words, without a round trip.
    const local = kind === 'cron' ? cronProblem(cron) : null;
    if (local) {
      setPreview([]);
      setFieldErrors(e => ({ ...e, cron: local, interval: '', timezone: '' }));
      return;
    }
    // A later edit makes this preview's answer stale: it must not undo the newer state.
    let stale = false;
    const t = setTimeout(() => {
      const s = schedule()!;
      if (kind === 'interval' && !(intervalSeconds > 0)) {
        setPreview([]);
        setFieldErrors(e => ({ ...e, interval: 'enter a positive number' }));
        return;
      }
      api.previewSchedule({ ...s, count: 5 }).then(
        p => {
          if (stale) {
            return;
          }
          setPreview(p.next);
          setFieldErrors(e => ({ ...e, cron: '', interval: '', timezone: '' }));
        },
        (err: ApiError) => {
          if (stale) {
            return;
          }
          setPreview([]);
          const tzProblem = err.problemFor?.('timezone');
          const problem = err.problemFor?.('cron') ?? err.problemFor?.('interval_seconds') ?? err.message;
          setFieldErrors(e => ({
            ...e,
            cron: kind === 'cron' && !tzProblem ? problem : '',
            interval: kind === 'interval' && !tzProblem ? problem : '',
            timezone: tzProblem ?? ''
          }));
        }
      );
    }, 250);
    return () => {
      stale = true;
      clearTimeout(t);
    };
  }, [kind, cron, every, unit, tz]);

  const submit = async (runNow: boolean) => {
    if (!info) {
      return;
    }
    const parsed = parseTexts(info.parameters_schema, texts);
    const errors: Record<string, string> = { ...fieldErrors };
    for (const k of Object.keys(errors)) {
      if (k.startsWith('param-')) {
        delete errors[k];
      }
    }
    for (const [k, v] of Object.entries(parsed.errors)) {
      errors[`param-${k}`] = v;
    }
    setFieldErrors(errors);
    if (Object.values(errors).some(Boolean)) {
      setFormError(FIX_FIELDS);
      return;
    }
    // Job variables the form does not show (env, volumes…) are kept as deployed.
    const job_variables: Record<string, unknown> = { ...(existing?.job_variables ?? {}) };
    for (const f of RUNNER_FIELDS[runner] ?? []) {
      const v = (jobVars[f.key] ?? '').trim();
      if (v) {
        job_variables[f.key] = v;
      } else {
        delete job_variables[f.key];
      }
    }
    const s = schedule();
    if (existing) {
      const edit: DeploymentEdit = {
        name: name.trim(),
        runner,
        job_variables,
        parameters: parsed.values,
        schedules: s ? [s] : [],
        run_mode: runMode,
        kernel_name: kernel || null,
        expected_version: existing.version,
        // Save deploys the notebook as it is now (a version when its code changed).
        resnapshot: runMode === 'snapshot' && !!existing.notebook_path
      };
      setBusy(true);
      try {
        const { changes } = await api.deploymentChanges(existing.id, edit);
        if (!changes.length && !runNow) {
          setFormError('Nothing changed: the deployment already is what the form shows.');
          return;
        }
        setFormError(null);
        if (!changes.length) {
          await api.runDeployment(existing.id, {});
          props.onDone(existing, true);
          return;
        }
        setPending({ edit, changes, runNow });
      } catch (err) {
        await showConflictOrError(err as ApiError);
      } finally {
        setBusy(false);
      }
      return;
    }
    setBusy(true);
    try {
      const deployment = await api.deployNotebook(info, {
        name: name.trim(),
        runner,
        job_variables,
        parameters: parsed.values,
        schedules: s ? [s] : [],
        run_mode: runMode,
        kernel_name: kernel || null
      });
      if (runNow) {
        await api.runDeployment(deployment.id, {});
      }
      setFormError(null);
      props.onDone(deployment, runNow);
    } catch (err) {
      showError(err as ApiError);
    } finally {
      setBusy(false);
    }
  };

  /** Save a confirmed edit; a conflict (someone saved meanwhile) reloads the deployment. */
  const confirmEdit = async () => {
    if (!pending || !existing || !info) {
      return;
    }
    setBusy(true);
    try {
      const saved = await api.editDeployment(existing.id, pending.edit);
      if (pending.runNow) {
        await api.runDeployment(saved.id, {});
      }
      setPending(null);
      props.onDone(saved, pending.runNow);
    } catch (err) {
      setPending(null);
      await showConflictOrError(err as ApiError);
    } finally {
      setBusy(false);
    }
  };

  /** A 409 (saved by someone else meanwhile): show the saved deployment and say so. */
  async function showConflictOrError(e: ApiError): Promise<void> {
    if (e.status !== 409 || !existing || !info) {
      showError(e);
      return;
    }
    const fresh = (await api.listDeployments()).find(d => d.id === existing.id);
    if (fresh) {
      showDeployment(fresh, info);
    }
    setFormError(`${e.message} The form now shows the saved deployment; make your change again.`);
  }

  function showError(e: ApiError): void {
    {
      const mapped: Record<string, string> = {};
      for (const { field, problem } of e.errors ?? []) {
        if (/schedules\.\d+\.cron$/.test(field) || field.endsWith('schedules.0')) {
          mapped.cron = problem;
        } else if (field.endsWith('.name')) {
          mapped.name = problem;
        } else if (field.endsWith('.runner')) {
          mapped.runner = problem;
        } else if (/parameters\.(\w+)/.test(field)) {
          mapped[`param-${/parameters\.(\w+)/.exec(field)![1]}`] = problem;
        } else if (field.endsWith('.kernel_name')) {
          mapped.kernel = problem;
        }
      }
      setFieldErrors(f => ({ ...f, ...mapped }));
      setFormError(e.message);
    }
  }

  if (loadError) {
    return (
      <div className="nbflow-schedule-form">
        <div className="nbflow-error">{loadError}</div>
        <button className="jp-Button jp-mod-styled jp-mod-reject" onClick={props.onCancel}>Close</button>
      </div>
    );
  }
  if (!info) {
    return <div className="nbflow-schedule-form nbflow-dim">Reading {props.path}…</div>;
  }
  const fieldError = (key: string) =>
    fieldErrors[key] ? <span className="nbflow-field-error" data-field={key}>{fieldErrors[key]}</span> : null;
  const invalid = (key: string) => (fieldErrors[key] ? 'nbflow-invalid' : '');
  const liveParamErrors = parseTexts(info.parameters_schema, texts).errors;
  const stillWrong =
    Object.entries(fieldErrors).some(([k, v]) => v && !k.startsWith('param-')) ||
    Object.keys(liveParamErrors).length > 0;
  const banner = formError === FIX_FIELDS && !stillWrong ? null : formError;
  return (
    <div className="nbflow-schedule-form">
      <div className="nbflow-dim">
        Flow <strong>{info.flow_name}</strong> from <code>{info.path}</code>
        {!info.has_flow_cell && ' (no %%flow cell: the notebook runs as one flow)'}
      </div>
      {existing && (
        <div className="nbflow-editing" data-version={existing.version}>
          Editing deployment <strong>{existing.name}</strong>
          {existing.version !== undefined && <> · version {existing.version}</>}: the fields show what
          is deployed. Saving asks you to confirm what changes.
        </div>
      )}
      <label className="nbflow-field">
        <span className="nbflow-field-label">Deployment name</span>
        <input className="jp-mod-styled" name="name" value={name} onChange={e => setName(e.target.value)} />
        {fieldError('name')}
      </label>
      <fieldset>
        <legend>Runner</legend>
        <div className="nbflow-radio-row">
          {(info.runners.length ? info.runners : Object.keys(RUNNER_FIELDS)).map(r => (
            <label key={r}>
              <input type="radio" name="runner" value={r} checked={runner === r} onChange={() => setRunner(r)} /> {r}
            </label>
          ))}
        </div>
        {fieldError('runner')}
        {(RUNNER_FIELDS[runner] ?? []).map(f => (
          <label key={f.key} className="nbflow-field">
            <span className="nbflow-field-label">{f.label}</span>
            <input
              className="jp-mod-styled"
              name={`job-${f.key}`}
              placeholder={f.placeholder}
              value={jobVars[f.key] ?? ''}
              onChange={e => setJobVars({ ...jobVars, [f.key]: e.target.value })}
            />
          </label>
        ))}
        <div className="nbflow-field">
          <span className="nbflow-field-label">Which notebook runs</span>
          <div className="nbflow-radio-row">
            <label>
              <input type="radio" name="run_mode" value="snapshot" checked={runMode === 'snapshot'} onChange={() => setRunMode('snapshot')} /> the
              snapshot saved now
            </label>
            <label>
              <input type="radio" name="run_mode" value="file" checked={runMode === 'file'} onChange={() => setRunMode('file')} /> the file as it
              is at run time
            </label>
          </div>
        </div>
        {runner === 'subprocess' && envs && envs.kernelspecs.length > 0 && (
          <label className="nbflow-field">
            <span className="nbflow-field-label">Kernel</span>
            <select name="kernel_name" className={invalid('kernel')} value={kernel} onChange={e => setKernel(e.target.value)}>
              <option value="">the notebook's own</option>
              {envs.kernelspecs.map(k => (
                <option key={k.name} value={k.name}>
                  {k.display_name} ({k.name})
                </option>
              ))}
            </select>
            {fieldError('kernel')}
          </label>
        )}
      </fieldset>
      <fieldset>
        <legend>Schedule</legend>
        <div className="nbflow-radio-row">
          {(['cron', 'interval', 'none'] as Kind[]).map(k => (
            <label key={k}>
              <input type="radio" name="kind" value={k} checked={kind === k} onChange={() => setKind(k)} />{' '}
              {k === 'none' ? 'no schedule (run on demand)' : k}
            </label>
          ))}
        </div>
        {kind === 'cron' && (
          <label className="nbflow-field">
            <span className="nbflow-field-label">Cron (minute hour day month weekday)</span>
            <input
              className={`jp-mod-styled nbflow-mono ${invalid('cron')}`}
              name="cron"
              placeholder="0 6 * * *"
              aria-invalid={!!fieldErrors.cron}
              value={cron}
              onChange={e => setCron(e.target.value)}
            />
            {fieldError('cron')}
          </label>
        )}
        {kind === 'interval' && (
          <label className="nbflow-field">
            <span className="nbflow-field-label">Every</span>
            <span className="nbflow-inline">
              <input className={`jp-mod-styled ${invalid('interval')}`} name="every" type="number" min="1" aria-invalid={!!fieldErrors.interval} value={every} onChange={e => setEvery(e.target.value)} />
              <select name="unit" value={unit} onChange={e => setUnit(e.target.value)}>
                {Object.keys(UNITS).map(u => <option key={u} value={u}>{u}</option>)}
              </select>
            </span>
            {fieldError('interval')}
          </label>
        )}
        {kind !== 'none' && (
          <label className="nbflow-field">
            <span className="nbflow-field-label">Time zone</span>
            <select name="timezone" value={tz} onChange={e => setTz(e.target.value)}>
              {timezones().map(z => <option key={z} value={z}>{z}</option>)}
            </select>
            {fieldError('timezone')}
          </label>
        )}
        {preview.length > 0 && (
          <div className="nbflow-preview">
            <div className="nbflow-dim">Next runs ({tz}):</div>
            <ul>
              {preview.map(t => (
                <li key={t}>{formatTime(t, tz)} <span className="nbflow-dim">({relativeTime(t)})</span></li>
              ))}
            </ul>
          </div>
        )}
      </fieldset>
      <fieldset>
        <legend>Parameters</legend>
        <ParametersForm
          schema={info.parameters_schema}
          texts={texts}
          errors={paramErrors}
          onChange={setTexts}
        />
      </fieldset>
      {banner && <div className="nbflow-error nbflow-form-error">{banner}</div>}
      {pending && (
        <div className="nbflow-confirm-changes">
          <div>
            <strong>Save these changes to {existing?.name}?</strong>
          </div>
          <table className="nbflow-kv">
            <tbody>
              {pending.changes.map(c => (
                <tr key={c.field} data-field={c.field}>
                  <th>{c.field}</th>
                  <td>
                    {c.field === 'notebook' ? (
                      'the notebook changed since it was deployed: the new snapshot is deployed (see Versions for the code diff)'
                    ) : (
                      <>
                        <code>{showValue(c.old)}</code> → <code>{showValue(c.new)}</code>
                      </>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
          <div className="nbflow-form-buttons">
            <button className="jp-Button jp-mod-styled jp-mod-reject" disabled={busy} onClick={() => setPending(null)}>
              Back
            </button>
            <button className="jp-Button jp-mod-styled jp-mod-accept nbflow-confirm-save" disabled={busy} onClick={() => void confirmEdit()}>
              Save changes{pending.runNow ? ' and run now' : ''}
            </button>
          </div>
        </div>
      )}
      {!pending && (
      <div className="nbflow-form-buttons">
        <button className="jp-Button jp-mod-styled jp-mod-reject" disabled={busy} onClick={props.onCancel}>Cancel</button>
        <button className="jp-Button jp-mod-styled nbflow-save" disabled={busy} onClick={() => void submit(false)}>Save deployment</button>
        <button className="jp-Button jp-mod-styled jp-mod-accept nbflow-save-run" disabled={busy} onClick={() => void submit(true)}>Save and run now</button>
      </div>
      )}
    </div>
  );
}
