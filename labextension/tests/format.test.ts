/** Cancel wording by where a run runs, and the run page's log filter. */
import { FlowRun, LogRecord } from '../src/api';
import { cancelPrompt, filterLogs } from '../src/format';

const base = {
  id: 'r',
  name: 'nightly',
  flow_id: 'f',
  parameters: {},
  run_count: 1,
  total_run_time: 0,
  tags: [],
  created: '',
  updated: ''
};

function run(mode: FlowRun['mode'], type: 'RUNNING' | 'SCHEDULED'): FlowRun {
  return { ...base, mode, state: { id: 's', type, name: type, timestamp: '' } };
}

describe('cancelPrompt', () => {
  it('says what cancelling does where the run runs', () => {
    expect(cancelPrompt(run('interactive', 'RUNNING'))).toContain('kernel is interrupted');
    expect(cancelPrompt(run('interactive', 'RUNNING'))).not.toContain('process');
    expect(cancelPrompt(run('batch', 'RUNNING'))).toContain('process');
    expect(cancelPrompt(run('batch', 'SCHEDULED'))).toContain('has not started');
  });
});

describe('filterLogs', () => {
  const log = (level: number, task: string | null, message: string): LogRecord => ({
    flow_run_id: 'r',
    task_run_id: task,
    level,
    logger: 'nbflow',
    message,
    timestamp: ''
  });
  const logs = [log(20, null, 'start'), log(20, 't1', 'fetched 140 rows'), log(40, 't1', 'boom'), log(30, 't2', 'slow')];

  it('filters by level and by task', () => {
    const messages = (l: LogRecord[]) => l.map(x => x.message);
    expect(messages(filterLogs(logs, { level: 0, task: '' }))).toHaveLength(4);
    expect(messages(filterLogs(logs, { level: 30, task: '' }))).toEqual(['boom', 'slow']);
    expect(messages(filterLogs(logs, { level: 0, task: 't1' }))).toEqual(['fetched 140 rows', 'boom']);
    expect(messages(filterLogs(logs, { level: 40, task: 't1' }))).toEqual(['boom']);
    expect(messages(filterLogs(logs, { level: 0, task: 'flow' }))).toEqual(['start']);
  });
});

import { cronProblem } from '../src/format';

describe('cronProblem', () => {
  it('explains a bad field in words', () => {
    expect(cronProblem('0 25 * * mon-fri')).toBe('hour 25 is out of range 0–23');
    expect(cronProblem('61 * * * *')).toBe('minute 61 is out of range 0–59');
    expect(cronProblem('0 6 * 13 *')).toBe('month 13 is out of range 1–12');
    expect(cronProblem('0 6 * * funday')).toContain('day of week: "funday" is not a number');
    expect(cronProblem('0 6 * *')).toContain('has 4');
    expect(cronProblem('*/0 * * * *')).toContain('step');
    expect(cronProblem('0 9-5 * * *')).toContain('runs backwards');
    expect(cronProblem('')).toContain('enter a cron expression');
  });

  it('accepts what cron accepts', () => {
    for (const ok of ['0 6 * * *', '*/15 9-17 * * mon-fri', '0 0 1,15 * *', '30 6 * jan-mar 1-5', '0 0 * * 7', '0 12 * * SUN']) {
      expect(cronProblem(ok)).toBeNull();
    }
    // croniter's extensions are the server's to judge
    expect(cronProblem('0 0 L * *')).toBeNull();
  });
});
