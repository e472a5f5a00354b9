import * as React from 'react';
import { ApiError, Deployment, NbflowApi, NotebookParameters, Schedule } from '../api';
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

  React.useEffect(() => {
    api.notebookParameters(props.path).then(
      i => {
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
    const job_variables: Record<string, unknown> = {};
    for (const f of RUNNER_FIELDS[runner] ?? []) {
      const v = (jobVars[f.key] ?? '').trim();
      if (v) {
        job_variables[f.key] = v;
      }
    }
    const s = schedule();
    setBusy(true);
    try {
      const deployment = await api.deployNotebook(info, {
        name: name.trim(),
        runner,
        job_variables,
        parameters: parsed.values,
        schedules: s ? [s] : []
      });
      if (runNow) {
        await api.runDeployment(deployment.id, {});
      }
      setFormError(null);
      props.onDone(deployment, runNow);
    } catch (err) {
      const e = err as ApiError;
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
        }
      }
      setFieldErrors(f => ({ ...f, ...mapped }));
      setFormError(e.message);
    } finally {
      setBusy(false);
    }
  };

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
      <div className="nbflow-form-buttons">
        <button className="jp-Button jp-mod-styled jp-mod-reject" disabled={busy} onClick={props.onCancel}>Cancel</button>
        <button className="jp-Button jp-mod-styled nbflow-save" disabled={busy} onClick={() => void submit(false)}>Save deployment</button>
        <button className="jp-Button jp-mod-styled jp-mod-accept nbflow-save-run" disabled={busy} onClick={() => void submit(true)}>Save and run now</button>
      </div>
    </div>
  );
}
