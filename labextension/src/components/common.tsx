import * as React from 'react';
import { State } from '../api';
import { STATE_COLORS } from '../format';

/** Re-render a component when a model's `changed` fires. */
export function useChanged(model: { changed: { connect(fn: () => void): () => void } } | null): number {
  const [tick, setTick] = React.useState(0);
  React.useEffect(() => {
    if (!model) {
      return;
    }
    return model.changed.connect(() => setTick(t => t + 1));
  }, [model]);
  return tick;
}

/** Re-render every `ms` (running durations, relative times). */
export function useClock(ms: number): number {
  const [now, setNow] = React.useState(Date.now());
  React.useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(t);
  }, [ms]);
  return now;
}

export function StateBadge(props: { state?: State | null }): JSX.Element {
  const s = props.state;
  if (!s) {
    return <span className="nbflow-state nbflow-state-NONE">no state</span>;
  }
  return (
    <span
      className={`nbflow-state nbflow-state-${s.type}`}
      style={{ backgroundColor: STATE_COLORS[s.type] }}
      title={s.message ? `${s.name}: ${s.message}` : s.name}
    >
      {s.name}
    </span>
  );
}

export function ErrorLine(props: { error?: string | null }): JSX.Element | null {
  return props.error ? <div className="nbflow-error">{props.error}</div> : null;
}
