/** Formatting helpers shared by the components (plain functions, unit-tested). */
import { FlowRun, LogRecord, StateType } from './api';

/** The CSS colour variable of a state type. */
export const STATE_COLORS: Record<StateType, string> = {
  SCHEDULED: '#8e8e8e',
  PENDING: '#b58900',
  RUNNING: '#1f78d1',
  COMPLETED: '#2e9d4d',
  FAILED: '#d23f31',
  CANCELLING: '#c27c0e',
  CANCELLED: '#6c6c6c',
  CRASHED: '#a0206b',
  PAUSED: '#7a5fb0'
};

/** `1.2s`, `3m 04s`, `2h 05m` from seconds. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !isFinite(seconds) || seconds < 0) {
    return '';
  }
  if (seconds < 60) {
    return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)}s`;
  }
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  const pad = (n: number) => String(n).padStart(2, '0');
  return h ? `${h}h ${pad(m)}m` : `${m}m ${pad(s)}s`;
}

/** The duration of a run: end - start, or now - start while it runs. */
export function runDuration(
  run: { start_time?: string | null; end_time?: string | null; total_run_time?: number },
  now: number = Date.now()
): number | null {
  if (!run.start_time) {
    return null;
  }
  const start = Date.parse(run.start_time);
  const end = run.end_time ? Date.parse(run.end_time) : now;
  return Math.max(0, (end - start) / 1000);
}

/** A date-time in the user's (or a given) time zone, e.g. `Nov 22, 21:05:03`. */
export function formatTime(iso: string | null | undefined, timeZone?: string): string {
  if (!iso) {
    return '';
  }
  const d = new Date(iso);
  if (isNaN(d.getTime())) {
    return iso;
  }
  return d.toLocaleString(undefined, {
    timeZone,
    month: 'short',
    day: 'numeric',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hour12: false
  });
}

/** A time relative to now: `in 5 min`, `3 h ago`. */
export function relativeTime(iso: string, now: number = Date.now()): string {
  const diff = (Date.parse(iso) - now) / 1000;
  const abs = Math.abs(diff);
  let text: string;
  if (abs < 60) {
    text = `${Math.round(abs)} s`;
  } else if (abs < 3600) {
    text = `${Math.round(abs / 60)} min`;
  } else if (abs < 86400) {
    text = `${Math.round(abs / 3600)} h`;
  } else {
    text = `${Math.round(abs / 86400)} d`;
  }
  return diff >= 0 ? `in ${text}` : `${text} ago`;
}

/** Describe a schedule for people: `every 30 min`, `cron 0 6 * * * (Europe/Berlin)`. */
export function describeSchedule(s: {
  cron?: string | null;
  interval_seconds?: number | null;
  timezone: string;
}): string {
  if (s.interval_seconds) {
    const v = s.interval_seconds;
    if (v % 86400 === 0) {
      return `every ${v / 86400} d`;
    }
    if (v % 3600 === 0) {
      return `every ${v / 3600} h`;
    }
    if (v % 60 === 0) {
      return `every ${v / 60} min`;
    }
    return `every ${v} s`;
  }
  return `cron ${s.cron} (${s.timezone})`;
}

/** The next time of a cron/interval schedule is computed by the server; this parses a value
 * typed in a parameters form according to its JSON schema type. */
export function parseParameter(
  text: string,
  type: string | string[] | undefined
): { value?: unknown; error?: string } {
  const types = type === undefined ? [] : Array.isArray(type) ? type : [type];
  const first = types[0];
  if (first === 'string') {
    return { value: text };
  }
  if (first === 'boolean') {
    const t = text.trim().toLowerCase();
    if (t === 'true' || t === 'false') {
      return { value: t === 'true' };
    }
    return { error: 'expected true or false' };
  }
  if (first === 'integer' || first === 'number') {
    const n = Number(text);
    if (text.trim() === '' || isNaN(n)) {
      return { error: `expected ${first === 'integer' ? 'an integer' : 'a number'}` };
    }
    if (first === 'integer' && !Number.isInteger(n)) {
      return { error: 'expected an integer' };
    }
    return { value: n };
  }
  try {
    return { value: JSON.parse(text) };
  } catch {
    if (types.includes('string') || types.length === 0) {
      return { value: text };
    }
    return { error: `expected JSON (${types.join(' or ')})` };
  }
}

/** How a default value is shown in a text input. */
export function showParameter(value: unknown, type: string | string[] | undefined): string {
  const first = Array.isArray(type) ? type[0] : type;
  if (first === 'string' && typeof value === 'string') {
    return value;
  }
  if (value === undefined) {
    return '';
  }
  return JSON.stringify(value);
}

/** What cancelling a run does, in the confirmation dialog: it depends on where it runs. */
export function cancelPrompt(run: FlowRun): string {
  const what = `Cancel "${run.name}" (${run.state?.name ?? 'no state'})?`;
  const started = run.state?.type === 'RUNNING' || run.state?.type === 'CANCELLING';
  if (!started) {
    return `${what} It has not started; it will not run.`;
  }
  if (run.mode === 'interactive') {
    return (
      `${what} Its kernel is interrupted: the running cell stops and the run ends Cancelled. ` +
      'The kernel and its variables stay.'
    );
  }
  return `${what} Its process (and everything it started) is stopped; the output notebook keeps what ran.`;
}

export const LOG_LEVELS: Record<number, string> = {
  10: 'DEBUG',
  20: 'INFO',
  30: 'WARNING',
  40: 'ERROR',
  50: 'CRITICAL'
};

/** Which logs to show: at least `level`, and of one task run (`''`: all, `'flow'`: the run's own). */
export interface LogFilter {
  level: number;
  task: string;
}

/** The logs that pass the filter, in order. */
export function filterLogs(logs: LogRecord[], filter: LogFilter): LogRecord[] {
  return logs.filter(
    l =>
      l.level >= filter.level &&
      (filter.task === '' ||
        (filter.task === 'flow' ? !l.task_run_id : l.task_run_id === filter.task))
  );
}

const CRON_FIELDS: { name: string; min: number; max: number; names?: string[]; first?: number }[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  {
    name: 'month',
    min: 1,
    max: 12,
    names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'],
    first: 1
  },
  { name: 'day of week', min: 0, max: 7, names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'], first: 0 }
];

/**
 * What is wrong with a five-field cron expression, in words ("hour 25 is out of range
 * 0–23"), or null.  Extensions the server's croniter accepts (L, W, #, ?, a seconds field)
 * are left to the server: null here, its answer there.
 */
export function cronProblem(expr: string): string | null {
  const text = expr.trim();
  if (!text) {
    return 'enter a cron expression, e.g. 0 6 * * * (06:00 every day)';
  }
  if (/[LW#?]/i.test(text.replace(/[a-z]{3}/gi, m => (/^(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec|sun|mon|tue|wed|thu|fri|sat)$/i.test(m) ? '' : m)))) {
    return null;
  }
  const parts = text.split(/\s+/);
  if (parts.length === 6 || parts.length === 7) {
    return null; // croniter's seconds/year fields: the server decides
  }
  if (parts.length !== 5) {
    return `a cron expression has 5 fields (minute hour day-of-month month day-of-week); this one has ${parts.length}`;
  }
  for (let i = 0; i < 5; i++) {
    const f = CRON_FIELDS[i];
    for (const item of parts[i].split(',')) {
      if (!item) {
        return `${f.name}: an empty item in "${parts[i]}"`;
      }
      const [range, step, extra] = item.split('/');
      if (extra !== undefined) {
        return `${f.name}: "${item}" has two steps`;
      }
      if (step !== undefined && (!/^\d+$/.test(step) || Number(step) === 0)) {
        return `${f.name}: the step in "${item}" must be a whole number above 0`;
      }
      if (range === '*') {
        continue;
      }
      const bounds = range.split('-');
      if (bounds.length > 2 || bounds.some(b => !b)) {
        return `${f.name}: "${item}" is not a value, a range like 1-5 or a list like 1,15`;
      }
      const values: number[] = [];
      for (const b of bounds) {
        const named = f.names?.indexOf(b.toLowerCase()) ?? -1;
        const v = named >= 0 ? named + (f.first ?? 0) : /^\d+$/.test(b) ? Number(b) : NaN;
        if (isNaN(v)) {
          return `${f.name}: "${b}" is not a number${f.names ? ` or a name like ${f.names[1]}` : ''}`;
        }
        if (v < f.min || v > f.max) {
          return `${f.name} ${v} is out of range ${f.min}–${f.max}`;
        }
        values.push(v);
      }
      if (values.length === 2 && values[0] > values[1]) {
        return `${f.name}: the range ${range} runs backwards (write ${bounds[1]}-${bounds[0]}?)`;
      }
    }
  }
  return null;
}
