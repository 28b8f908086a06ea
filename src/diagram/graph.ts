import type { AnyStateMachine } from 'xstate';

/**
 * Draws a machine from its definition (xstate has no Mermaid exporter; its graph utilities leave out eventless
 * transitions): every state, every transition with a readable label — `done`/`error` of the invoked step,
 * named events such as CANCEL, `[guard]` for eventless ones — including failure and compensation paths.
 */
export interface DiagramEdge {
  from: string;
  to: string;
  label: string;
}
export interface DiagramNode {
  id: string;
  /** The step this state invokes, if any. */
  invokes: string | null;
  final: boolean;
  initial: string | null;
  children: DiagramNode[];
}
export interface Diagram {
  id: string;
  root: DiagramNode;
  edges: DiagramEdge[];
}

interface StateNodeLike {
  id: string;
  key: string;
  type: string;
  states: Record<string, StateNodeLike>;
  initial?: { target: StateNodeLike[] } | undefined;
  invoke: { src: unknown }[];
  transitions: Map<string, { target?: StateNodeLike[] | undefined; guard?: { type?: string } | unknown }[]>;
  always?: { target?: StateNodeLike[] | undefined; guard?: { type?: string } | unknown }[] | undefined;
}

export function diagram(machine: AnyStateMachine): Diagram {
  const root = machine.root as unknown as StateNodeLike;
  const edges: DiagramEdge[] = [];
  const visit = (n: StateNodeLike): DiagramNode => {
    for (const [event, list] of n.transitions) {
      for (const t of list) for (const target of t.target ?? []) edges.push({ from: n.id, to: target.id, label: label(event, t.guard) });
    }
    for (const t of n.always ?? []) for (const target of t.target ?? []) edges.push({ from: n.id, to: target.id, label: label('', t.guard) });
    return {
      id: n.id,
      invokes: typeof n.invoke[0]?.src === 'string' ? (n.invoke[0].src as string) : null,
      final: n.type === 'final',
      initial: n.initial?.target[0]?.id ?? null,
      children: Object.values(n.states).map(visit),
    };
  };
  return { id: root.id, root: visit(root), edges };
}

function label(event: string, guard: unknown): string {
  const g = typeof guard === 'string' ? guard : (guard as { type?: string } | undefined)?.type;
  const base = event.startsWith('xstate.done.actor')
    ? 'done'
    : event.startsWith('xstate.error.actor')
      ? 'error'
      : event.startsWith('xstate.done.state')
        ? 'done'
        : event;
  return g ? `${base}${base ? ' ' : ''}[${g}]` : base || 'always';
}

/** Mermaid `stateDiagram-v2` text; state ids are the machine's dotted ids with dots as underscores. */
export function toMermaid(d: Diagram): string {
  const name = (id: string) => id.split('.').slice(1).join('_') || id;
  const lines = ['stateDiagram-v2'];
  const render = (n: DiagramNode, depth: number) => {
    const pad = '  '.repeat(depth);
    if (n.initial) lines.push(`${pad}[*] --> ${name(n.initial)}`);
    for (const c of n.children) {
      if (c.children.length) {
        lines.push(`${pad}state ${name(c.id)} {`);
        render(c, depth + 1);
        lines.push(`${pad}}`);
      } else if (c.invokes) {
        lines.push(`${pad}${name(c.id)} : ${c.invokes}`);
      }
      if (c.final && depth === 1) lines.push(`${pad}${name(c.id)} --> [*]`);
    }
  };
  render(d.root, 1);
  for (const e of d.edges) lines.push(`  ${name(e.from)} --> ${name(e.to)} : ${e.label}`);
  return `${lines.join('\n')}\n`;
}
