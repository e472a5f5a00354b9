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
