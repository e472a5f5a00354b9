import * as React from 'react';
import { ApiError, Automation, MatchKind, NotificationDelivery } from '../api';
import { formatTime } from '../format';
import { PanelContext } from './context';
import { ErrorLine } from './common';

const STATES = ['FAILED', 'CRASHED', 'LATE', 'CANCELLED', 'COMPLETED'];

function label(state: string): string {
  return state.charAt(0) + state.slice(1).toLowerCase();
}

/** Parse `30m`, `2h`, `90s`, `45` (minutes) into seconds; null when empty. */
export function parseDuration(text: string): { seconds?: number | null; error?: string } {
  const t = text.trim();
  if (!t) {
    return { seconds: null };
  }
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$/i.exec(t);
  if (!m) {
    return { error: 'use a number with s, m, h or d, e.g. 30m' };
  }
  const unit = (m[2] ?? 'm').toLowerCase();
  const factor = { s: 1, m: 60, h: 3600, d: 86400 }[unit]!;
  return { seconds: Number(m[1]) * factor };
}

/** A new notification rule: when, which runs, and where to send it. */
function RuleForm(props: { ctx: PanelContext; onCreated: () => void }): JSX.Element {
  const { ctx } = props;
  const [states, setStates] = React.useState<string[]>(['FAILED', 'CRASHED']);
  const [matchKind, setMatchKind] = React.useState<MatchKind>('any');
  const [matchValue, setMatchValue] = React.useState('');
  const [longer, setLonger] = React.useState('');
  const [action, setAction] = React.useState<'webhook' | 'email'>('webhook');
  const [url, setUrl] = React.useState('');
  const [slack, setSlack] = React.useState(false);
  const [emails, setEmails] = React.useState('');
  const [errors, setErrors] = React.useState<Record<string, string>>({});
  const [error, setError] = React.useState<string | null>(null);
  const [busy, setBusy] = React.useState(false);
  const duration = parseDuration(longer);
  const submit = async () => {
    const local: Record<string, string> = {};
    if (!states.length && duration.seconds === null) {
      local.on_states = 'pick at least one state, or a duration';
    }
    if (matchKind !== 'any' && !matchValue.trim()) {
      local.match_value = `name the ${matchKind}`;
    }
    if (duration.error) {
      local.longer_than_seconds = duration.error;
    }
    setErrors(local);
    if (Object.keys(local).length) {
      return;
    }
    setBusy(true);
    try {
      await ctx.api.createAutomation({
        on_states: states,
        match_kind: matchKind,
        match_value: matchKind === 'any' ? null : matchValue.trim(),
        longer_than_seconds: duration.seconds ?? null,
        action,
        webhook_url: action === 'webhook' ? url.trim() : null,
        webhook_slack: action === 'webhook' ? slack : false,
        email_to: action === 'email' ? emails.split(/[\s,;]+/).filter(Boolean) : []
      });
      setError(null);
      setErrors({});
      setUrl('');
      setEmails('');
      props.onCreated();
    } catch (err) {
      const e = err as ApiError;
      const mapped: Record<string, string> = {};
      for (const { field, problem } of e.errors ?? []) {
        mapped[field.replace(/^body\./, '').split('.')[0]] = problem;
      }
      setErrors(mapped);
      setError(e.message);
    } finally {
      setBusy(false);
    }
  };
  const fieldError = (name: string) =>
    errors[name] ? (
      <div className="nbflow-field-error" data-field={name}>
        {errors[name]}
      </div>
    ) : null;
  return (
    <fieldset className="nbflow-rule-form">
      <legend>New notification rule</legend>
      <div className="nbflow-field">
        <span className="nbflow-field-label">When a run becomes</span>
        <div className="nbflow-radio-row">
          {STATES.map(s => (
            <label key={s}>
              <input
                type="checkbox"
                name={`state-${s}`}
                checked={states.includes(s)}
                onChange={() => setStates(xs => (xs.includes(s) ? xs.filter(x => x !== s) : [...xs, s]))}
              />{' '}
              {label(s)}
            </label>
          ))}
        </div>
        {fieldError('on_states')}
      </div>
      <label className="nbflow-field">
        <span className="nbflow-field-label">or runs longer than</span>
        <input name="longer_than" placeholder="e.g. 30m (optional)" value={longer} onChange={e => setLonger(e.target.value)} />
        {fieldError('longer_than_seconds')}
      </label>
      <div className="nbflow-field">
        <span className="nbflow-field-label">Of</span>
        <div className="nbflow-inline">
          <select name="match_kind" value={matchKind} onChange={e => setMatchKind(e.target.value as MatchKind)}>
            <option value="any">any run</option>
            <option value="deployment">the deployment</option>
            <option value="flow">the flow</option>
            <option value="tag">runs tagged</option>
          </select>
          {matchKind !== 'any' && (
            <input name="match_value" placeholder="name" value={matchValue} onChange={e => setMatchValue(e.target.value)} />
          )}
        </div>
        {fieldError('match_value')}
      </div>
      <div className="nbflow-field">
        <span className="nbflow-field-label">Send</span>
        <div className="nbflow-radio-row">
          <label>
            <input type="radio" name="action" checked={action === 'webhook'} onChange={() => setAction('webhook')} /> a webhook
          </label>
          <label>
            <input type="radio" name="action" checked={action === 'email'} onChange={() => setAction('email')} /> an email
          </label>
        </div>
        {action === 'webhook' ? (
          <>
            <input name="webhook_url" placeholder="https://hooks.example.com/…" value={url} onChange={e => setUrl(e.target.value)} />
            <label>
              <input type="checkbox" name="slack" checked={slack} onChange={() => setSlack(!slack)} /> Slack-compatible payload
            </label>
            {fieldError('webhook_url')}
          </>
        ) : (
          <>
            <input name="email_to" placeholder="someone@example.com, …" value={emails} onChange={e => setEmails(e.target.value)} />
            {fieldError('email_to')}
          </>
        )}
        {fieldError('action')}
      </div>
      {error && <div className="nbflow-error">{error}</div>}
      <div className="nbflow-form-buttons">
        <button className="jp-Button jp-mod-styled jp-mod-accept nbflow-add-rule" disabled={busy} onClick={() => void submit()}>
          Add rule
        </button>
      </div>
    </fieldset>
  );
}

/** Notification rules: list, mute, delete, their deliveries, and a form to add one. */
export function AlertsView(props: { ctx: PanelContext }): JSX.Element {
  const { ctx } = props;
  const [rules, setRules] = React.useState<Automation[] | null>(null);
  const [error, setError] = React.useState<string | null>(null);
  const [open, setOpen] = React.useState<string | null>(null);
  const [deliveries, setDeliveries] = React.useState<NotificationDelivery[]>([]);
  const load = () =>
    ctx.api.listAutomations().then(
      r => {
        setRules(r);
        setError(null);
      },
      err => setError((err as Error).message)
    );
  React.useEffect(() => void load(), []);
  React.useEffect(() => {
    if (open) {
      ctx.api.listDeliveries(open).then(setDeliveries, err => setError((err as Error).message));
    }
  }, [open]);
  const act = async (fn: () => Promise<unknown>) => {
    try {
      await fn();
      await load();
    } catch (err) {
      setError((err as Error).message);
    }
  };
  return (
    <div className="nbflow-alerts">
      <ErrorLine error={error} />
      {rules === null && !error && <div className="nbflow-dim">Loading…</div>}
      {rules?.length === 0 && <div className="nbflow-empty">No notification rules yet.</div>}
      {rules?.map(r => (
        <div key={r.id} className="nbflow-deployment nbflow-rule" data-rule={r.name}>
          <div>
            <strong>{r.name}</strong> {!r.enabled && <span className="nbflow-tag">muted</span>}
          </div>
          <div className="nbflow-dim">
            {r.action === 'webhook' ? `webhook ${r.webhook_url}${r.webhook_slack ? ' (Slack)' : ''}` : `email ${r.email_to?.join(', ')}`}
          </div>
          <div className="nbflow-actions">
            <button className="jp-Button jp-mod-styled" onClick={() => setOpen(open === r.id ? null : r.id)}>
              {open === r.id ? 'Hide deliveries' : 'Deliveries'}
            </button>
            <button className="jp-Button jp-mod-styled" onClick={() => void act(() => ctx.api.updateAutomation(r.id, { enabled: !r.enabled }))}>
              {r.enabled ? 'Mute' : 'Unmute'}
            </button>
            <button
              className="jp-Button jp-mod-styled jp-mod-warn"
              onClick={async () => {
                if (await ctx.confirm('Delete notification rule?', `Delete "${r.name}" and its delivery records?`, 'Delete')) {
                  await act(() => ctx.api.deleteAutomation(r.id));
                }
              }}
            >
              Delete
            </button>
          </div>
          {open === r.id && (
            <ul className="nbflow-deliveries">
              {deliveries.map(d => (
                <li key={d.id} data-status={d.status}>
                  {formatTime(d.created)} · {d.event} · <strong>{d.status}</strong>
                  {d.attempts > 1 && ` after ${d.attempts} attempts`}
                  {d.last_error && <span className="nbflow-dim"> — {d.last_error}</span>}
                </li>
              ))}
              {!deliveries.length && <li className="nbflow-dim">nothing sent yet</li>}
            </ul>
          )}
        </div>
      ))}
      <RuleForm ctx={ctx} onCreated={() => void load()} />
    </div>
  );
}
