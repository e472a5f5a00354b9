/**
 * A run's task cells drawn as a graph (laid out by dagre) and as a timeline.
 *
 * Both scale to the panel's width (an SVG with a viewBox), so a narrow sidebar shrinks
 * them instead of scrolling sideways.  States are coloured as they change: the components
 * re-render whenever the run page's model does.
 */
import dagre from '@dagrejs/dagre';
import * as React from 'react';
import { FlowRunGraph, TaskRun } from '../api';
import { formatDuration, runDuration, STATE_COLORS } from '../format';

const NODE_W = 150;
const NODE_H = 36;

function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function stateColor(task: TaskRun): string {
  return task.state ? STATE_COLORS[task.state.type] : '#bbb';
}

interface Placed {
  task: TaskRun;
  x: number;
  y: number;
}

/** Node positions and edge polylines of a graph (recomputed when its shape changes). */
function layout(graph: FlowRunGraph): {
  nodes: Placed[];
  edges: { id: string; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
} {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 14, ranksep: 26, marginx: 4, marginy: 4 });
  g.setDefaultEdgeLabel(() => ({}));
  const ids = new Set(graph.nodes.map(n => n.id));
  for (const n of graph.nodes) {
    g.setNode(n.id, { width: NODE_W, height: NODE_H });
  }
  for (const e of graph.edges) {
    if (ids.has(e.upstream) && ids.has(e.downstream)) {
      g.setEdge(e.upstream, e.downstream);
    }
  }
  dagre.layout(g);
  const byId = new Map(graph.nodes.map(n => [n.id, n]));
  const nodes = g.nodes().map(id => {
    const pos = g.node(id) as { x: number; y: number };
    return { task: byId.get(id)!, x: pos.x, y: pos.y };
  });
  const edges = g.edges().map(e => ({
    id: `${e.v}-${e.w}`,
    points: (g.edge(e) as { points: { x: number; y: number }[] }).points
  }));
  const label = g.graph() as { width?: number; height?: number };
  return { nodes, edges, width: label.width ?? NODE_W, height: label.height ?? NODE_H };
}

/** The cell DAG as a graph: one box per task run, coloured by its state. */
export function RunGraph(props: { graph: FlowRunGraph }): JSX.Element {
  const { graph } = props;
  const shape = graph.nodes.map(n => n.id).join(',') + '|' + graph.edges.map(e => `${e.upstream}>${e.downstream}`).join(',');
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const placed = React.useMemo(() => layout(graph), [shape]);
  const current = new Map(graph.nodes.map(n => [n.id, n]));
  return (
    <svg
      className="nbflow-graph"
      viewBox={`0 0 ${placed.width} ${placed.height}`}
      width="100%"
      style={{ maxWidth: `${placed.width}px` }}
      role="img"
      aria-label="Task graph"
    >
      <defs>
        <marker id="nbflow-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" markerHeight="6" orient="auto">
          <path d="M0,0 L8,4 L0,8 z" fill="var(--jp-ui-font-color2)" />
        </marker>
      </defs>
      {placed.edges.map(e => (
        <polyline
          key={e.id}
          className="nbflow-graph-edge"
          points={e.points.map(p => `${p.x},${p.y}`).join(' ')}
          markerEnd="url(#nbflow-arrow)"
        />
      ))}
      {placed.nodes.map(({ task: placedTask, x, y }) => {
        const task = current.get(placedTask.id) ?? placedTask;
        const cached = task.state?.name === 'Cached';
        return (
          <g
            key={task.id}
            className="nbflow-graph-node"
            data-task={task.name}
            data-state={task.state?.type ?? ''}
            transform={`translate(${x - NODE_W / 2},${y - NODE_H / 2})`}
          >
            <title>
              {`${task.name}: ${task.state?.name ?? 'no state'}${task.state?.message ? ` — ${task.state.message}` : ''}`}
            </title>
            <rect width={NODE_W} height={NODE_H} rx={4} fill="var(--jp-layout-color2)" stroke={stateColor(task)} strokeWidth={2} />
            <rect width={6} height={NODE_H} rx={2} fill={stateColor(task)} />
            <text x={12} y={15} className="nbflow-graph-name">
              {shorten(task.name, 19)}
            </text>
            <text x={12} y={29} className="nbflow-graph-state" fill={stateColor(task)}>
              {task.state?.name ?? '—'}
              {cached ? ' (cache)' : ''}
              {task.run_count > 1 ? ` · ${task.run_count - 1} ${task.run_count === 2 ? 'retry' : 'retries'}` : ''}
            </text>
          </g>
        );
      })}
    </svg>
  );
}

/** The task runs on a time axis: when each started and how long it ran (or runs). */
export function RunTimeline(props: { tasks: TaskRun[]; now: number }): JSX.Element {
  const { tasks, now } = props;
  const timed = tasks
    .filter(t => t.start_time)
    .sort((a, b) => Date.parse(a.start_time!) - Date.parse(b.start_time!));
  if (!timed.length) {
    return <div className="nbflow-dim">no task has started yet</div>;
  }
  const start = Date.parse(timed[0].start_time!);
  const end = Math.max(
    start + 1,
    ...timed.map(t => (t.end_time ? Date.parse(t.end_time) : now))
  );
  const span = end - start;
  return (
    <div className="nbflow-timeline" aria-label="Task timeline">
      {timed.map(t => {
        const from = Date.parse(t.start_time!) - start;
        const to = (t.end_time ? Date.parse(t.end_time) : now) - start;
        const left = (from / span) * 100;
        const width = Math.max(0.8, ((to - from) / span) * 100);
        const cached = t.state?.name === 'Cached';
        return (
          <div key={t.id} className="nbflow-timeline-row" data-task={t.name}>
            <span className="nbflow-timeline-name" title={t.name}>
              {t.name}
            </span>
            <span className="nbflow-timeline-track">
              <span
                className={`nbflow-timeline-bar ${cached ? 'nbflow-timeline-cached' : ''}`}
                style={{ left: `${left}%`, width: `${Math.min(width, 100 - left)}%`, background: stateColor(t) }}
                title={`${t.state?.name ?? ''} ${formatDuration(runDuration(t, now))}${t.run_count > 1 ? `, ${t.run_count} attempts` : ''}`}
              />
            </span>
            <span className="nbflow-timeline-duration">{cached ? 'cache' : formatDuration(runDuration(t, now))}</span>
          </div>
        );
      })}
      <div className="nbflow-dim nbflow-timeline-axis">
        <span>0s</span>
        <span>{formatDuration(span / 1000)}</span>
      </div>
    </div>
  );
}
