/**
 * A run's task cells drawn as a graph (laid out by dagre) and as a timeline.
 *
 * Both scale to the panel's width (an SVG with a viewBox), so a narrow sidebar shrinks
 * them instead of scrolling sideways.  States are coloured as they change: the components
 * re-render whenever the run page's model does.
 */
import dagre from '@dagrejs/dagre';
import * as React from 'react';
import { FlowRun, FlowRunGraph, State, TaskRun } from '../api';
import { formatDuration, runDuration, STATE_COLORS } from '../format';

const NODE_W = 150;
const NODE_H = 36;

function shorten(text: string, max: number): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function stateColor(task: TaskRun): string {
  return task.state ? STATE_COLORS[task.state.type] : '#bbb';
}

/** One box of the graph: a task cell of the run, or a child run a task started. */
interface GraphNode {
  id: string;
  name: string;
  state: State | null | undefined;
  /** Second line: the state, cache and retries (tasks) or the child's flow. */
  detail: string;
  /** A child run (run_notebook): drawn dashed, opens the child's run page. */
  childRunId?: string;
}

interface Placed {
  node: GraphNode;
  x: number;
  y: number;
}

function nodeColor(node: GraphNode): string {
  return node.state ? STATE_COLORS[node.state.type] : '#bbb';
}

/** Node positions and edge polylines of a graph (recomputed when its shape changes). */
function layout(
  nodes: GraphNode[],
  edges: { upstream: string; downstream: string }[]
): {
  nodes: Placed[];
  edges: { id: string; child: boolean; points: { x: number; y: number }[] }[];
  width: number;
  height: number;
} {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'TB', nodesep: 14, ranksep: 26, marginx: 4, marginy: 4 });
  g.setDefaultEdgeLabel(() => ({}));
  const byId = new Map(nodes.map(n => [n.id, n]));
  for (const n of nodes) {
    g.setNode(n.id, { width: NODE_W, height: NODE_H });
  }
  for (const e of edges) {
    if (byId.has(e.upstream) && byId.has(e.downstream)) {
      g.setEdge(e.upstream, e.downstream);
    }
  }
  dagre.layout(g);
  const placed = g.nodes().map(id => {
    const pos = g.node(id) as { x: number; y: number };
    return { node: byId.get(id)!, x: pos.x, y: pos.y };
  });
  const lines = g.edges().map(e => ({
    id: `${e.v}-${e.w}`,
    child: !!byId.get(e.w)?.childRunId,
    points: (g.edge(e) as { points: { x: number; y: number }[] }).points
  }));
  const label = g.graph() as { width?: number; height?: number };
  return { nodes: placed, edges: lines, width: label.width ?? NODE_W, height: label.height ?? NODE_H };
}

function taskNode(task: TaskRun): GraphNode {
  const retries = task.run_count > 1 ? ` · ${task.run_count - 1} ${task.run_count === 2 ? 'retry' : 'retries'}` : '';
  const cached = task.state?.name === 'Cached' ? ' (cache)' : '';
  return { id: task.id, name: task.name, state: task.state, detail: `${task.state?.name ?? '—'}${cached}${retries}` };
}

/** What tells a pipeline's children apart: their scalar parameters (else the run's name). */
function childLabel(run: FlowRun): string {
  const scalars = Object.values(run.parameters ?? {}).filter(
    v => ['string', 'number', 'boolean'].includes(typeof v)
  );
  return scalars.length ? scalars.map(String).join(', ') : run.name;
}

function childNode(run: FlowRun): GraphNode {
  return {
    id: `child:${run.id}`,
    name: `↗ ${run.flow_name ?? run.name}`,
    state: run.state,
    detail: `${run.state?.name ?? '—'} · ${childLabel(run)}`,
    childRunId: run.id
  };
}

/**
 * The cell DAG as a graph: one box per task run, coloured by its state.  A pipeline's
 * child runs hang below the task that started them (dashed), each a link to its run page.
 */
export function RunGraph(props: {
  graph: FlowRunGraph;
  children?: FlowRun[];
  onOpenRun?: (id: string) => void;
}): JSX.Element {
  const { graph, children = [], onOpenRun } = props;
  const taskIds = new Set(graph.nodes.map(n => n.id));
  const nodes = [...graph.nodes.map(taskNode), ...children.map(childNode)];
  const edges = [
    ...graph.edges,
    ...children
      .filter(c => c.parent_task_run_id && taskIds.has(c.parent_task_run_id))
      .map(c => ({ upstream: c.parent_task_run_id!, downstream: `child:${c.id}` }))
  ];
  const shape = nodes.map(n => n.id).join(',') + '|' + edges.map(e => `${e.upstream}>${e.downstream}`).join(',');
  // eslint-disable-next-line react-hooks/exhaustive-deps
  const placed = React.useMemo(() => layout(nodes, edges), [shape]);
  const current = new Map(nodes.map(n => [n.id, n]));
  return (
    <svg
      className="nbflow-graph"
      viewBox={`0 0 ${placed.width} ${placed.height}`}
      width="100%"
      style={{ maxWidth: `${placed.width}px` }}
      role="img"
      aria-label={children.length ? 'Task graph with child runs' : 'Task graph'}
    >
      <defs>
        <marker id="nbflow-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" markerHeight="6" orient="auto">
          <path d="M0,0 L8,4 L0,8 z" fill="var(--jp-ui-font-color2)" />
        </marker>
      </defs>
      {placed.edges.map(e => (
        <polyline
          key={e.id}
          className={`nbflow-graph-edge${e.child ? ' nbflow-graph-child-edge' : ''}`}
          points={e.points.map(p => `${p.x},${p.y}`).join(' ')}
          markerEnd="url(#nbflow-arrow)"
          strokeDasharray={e.child ? '4 3' : undefined}
        />
      ))}
      {placed.nodes.map(({ node: placedNode, x, y }) => {
        const node = current.get(placedNode.id) ?? placedNode;
        const color = nodeColor(node);
        const child = node.childRunId;
        const open = child && onOpenRun ? () => onOpenRun(child) : undefined;
        return (
          <g
            key={node.id}
            className={`nbflow-graph-node${child ? ' nbflow-graph-child' : ''}`}
            data-task={child ? undefined : node.name}
            data-run-id={child}
            data-state={node.state?.type ?? ''}
            transform={`translate(${x - NODE_W / 2},${y - NODE_H / 2})`}
            onClick={open}
            role={open ? 'link' : undefined}
            style={open ? { cursor: 'pointer' } : undefined}
          >
            <title>
              {child
                ? `child run ${node.name.slice(2)} (${node.detail}): open its run page`
                : `${node.name}: ${node.state?.name ?? 'no state'}${node.state?.message ? ` — ${node.state.message}` : ''}`}
            </title>
            <rect
              width={NODE_W}
              height={NODE_H}
              rx={child ? 10 : 4}
              fill="var(--jp-layout-color2)"
              stroke={color}
              strokeWidth={2}
              strokeDasharray={child ? '5 3' : undefined}
            />
            <rect width={6} height={NODE_H} rx={2} fill={color} />
            <text x={12} y={15} className="nbflow-graph-name">
              {shorten(node.name, 19)}
            </text>
            <text x={12} y={29} className="nbflow-graph-state" fill={color}>
              {shorten(node.detail, 22)}
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
