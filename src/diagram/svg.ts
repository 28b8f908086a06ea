import dagre from '@dagrejs/dagre';
import type { Diagram, DiagramNode } from './graph.ts';

/**
 * SVG of a machine diagram, laid out by dagre one compound state at a time (dagre cannot route edges to a
 * cluster, so each compound is laid out inside, then placed as one box in its parent's graph). Every state is a
 * `<g class="state" data-state="a.b">` with the same dotted path the workflow events carry, so the live view
 * highlights a state by toggling a class; edges are `done` (solid), `error`/CANCEL (red, dashed) or guarded.
 */

interface Point {
  x: number;
  y: number;
}
interface Placed {
  node: DiagramNode;
  /** Top-left corner, relative to the parent's content origin. */
  x: number;
  y: number;
  w: number;
  h: number;
  children: Placed[];
  /** Edges drawn inside this compound, in its coordinates. */
  edges: { labels: string[]; points: Point[]; label: Point; kind: EdgeKind }[];
  initial: Point | null;
}
type EdgeKind = 'done' | 'fail' | 'guard';

const CHAR = 7.2;
const SMALL_CHAR = 6.2;
const HEADER = 26;
const PAD = 14;
const INITIAL = '\u0000initial';

export function toSvg(d: Diagram): string {
  const byId = new Map<string, DiagramNode>();
  const parent = new Map<string, string>();
  const index = (n: DiagramNode) => {
    byId.set(n.id, n);
    for (const c of n.children) {
      parent.set(c.id, n.id);
      index(c);
    }
  };
  index(d.root);
  const ancestors = (id: string): string[] => {
    const out = [id];
    for (let p = parent.get(id); p !== undefined; p = parent.get(p)) out.push(p);
    return out;
  };
  // Each edge belongs to the lowest compound holding both ends; there its ends are lifted to direct children.
  const edgesAt = new Map<string, { from: string; to: string; label: string }[]>();
  for (const e of d.edges) {
    const a = ancestors(e.from);
    const b = new Set(ancestors(e.to));
    const lca = a.slice(1).find((x) => b.has(x)) ?? (b.has(e.from) ? parent.get(e.from) : undefined) ?? d.root.id;
    const lift = (id: string) => ancestors(id).find((x) => parent.get(x) === lca) ?? id;
    const list = edgesAt.get(lca) ?? [];
    list.push({ from: lift(e.from), to: lift(e.to), label: e.label });
    edgesAt.set(lca, list);
  }
  const root = place(d.root, edgesAt);
  const width = Math.ceil(root.w + 2);
  const height = Math.ceil(root.h + 2);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" class="cbr-machine" data-machine="${esc(d.id)}" viewBox="-1 -1 ${width} ${height}" width="${width}" height="${height}" font-family="system-ui, sans-serif" font-size="13">`,
    '<defs>',
    '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="context-stroke"/></marker>',
    '</defs>',
    `<style>${STYLE}</style>`,
  ];
  render(root, 0, 0, d.root.id, out, true);
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}

function place(n: DiagramNode, edgesAt: Map<string, { from: string; to: string; label: string }[]>): Placed {
  if (n.children.length === 0) {
    const key = shortName(n.id);
    const w = Math.max(key.length * CHAR, (n.invokes?.length ?? 0) * SMALL_CHAR) + 28;
    return { node: n, x: 0, y: 0, w, h: n.invokes ? 42 : 30, children: [], edges: [], initial: null };
  }
  const children = n.children.map((c) => place(c, edgesAt));
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: 'TB', nodesep: 28, ranksep: 34, edgesep: 12, marginx: 0, marginy: 0 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const c of children) g.setNode(c.node.id, { width: c.w, height: c.h });
  if (n.initial) {
    g.setNode(INITIAL, { width: 12, height: 12 });
    g.setEdge(INITIAL, idOf(children, n.initial), { width: 0, height: 0 }, 'initial');
  }
  // Parallel transitions (done and error to the same state) share one arrow with both labels.
  const merged = new Map<string, { from: string; to: string; labels: string[] }>();
  for (const e of edgesAt.get(n.id) ?? []) {
    if (e.from === e.to) continue;
    const k = `${e.from}\u0001${e.to}`;
    const m = merged.get(k) ?? { from: e.from, to: e.to, labels: [] };
    if (!m.labels.includes(e.label)) m.labels.push(e.label);
    merged.set(k, m);
  }
  const edgeList = [...merged.values()];
  edgeList.forEach((e, i) => {
    const text = e.labels.join(', ');
    g.setEdge(e.from, e.to, { width: text.length * SMALL_CHAR + 6, height: 14, labelpos: 'c' }, `e${i}`);
  });
  dagre.layout(g);
  const info = g.graph() as { width?: number; height?: number };
  const isRoot = !parentLike(n);
  const top = isRoot ? PAD / 2 : HEADER;
  const left = isRoot ? PAD / 2 : PAD;
  for (const c of children) {
    const p = g.node(c.node.id) as { x: number; y: number };
    c.x = left + p.x - c.w / 2;
    c.y = top + p.y - c.h / 2;
  }
  const shift = (pt: Point): Point => ({ x: left + pt.x, y: top + pt.y });
  const edges = edgeList.map((e, i) => {
    const ge = g.edge({ v: e.from, w: e.to, name: `e${i}` }) as { points: Point[]; x: number; y: number };
    return { labels: e.labels, points: ge.points.map(shift), label: shift({ x: ge.x, y: ge.y }), kind: kindOf(e.labels) };
  });
  let initial: Point | null = null;
  if (n.initial) {
    const p = g.node(INITIAL) as { x: number; y: number };
    const ge = g.edge({ v: INITIAL, w: idOf(children, n.initial), name: 'initial' }) as { points: Point[] };
    initial = shift(p);
    edges.push({ labels: [], points: ge.points.map(shift), label: shift(p), kind: 'done' });
  }
  const minW = (shortName(n.id).length + 4) * CHAR;
  const w = Math.max((info.width ?? 0) + 2 * left, minW);
  const h = (info.height ?? 0) + top + (isRoot ? PAD / 2 : PAD);
  return { node: n, x: 0, y: 0, w, h, children, edges, initial };
}

/** The root is drawn without a frame; compound states get a titled box. */
function parentLike(n: DiagramNode): boolean {
  return n.id.includes('.');
}

function idOf(children: Placed[], id: string): string {
  return children.find((c) => c.node.id === id || id.startsWith(`${c.node.id}.`))?.node.id ?? id;
}

function kindOf(labels: string[]): EdgeKind {
  // "done, error" goes on either way (a clean-up step): drawn as the normal path.
  if (labels.includes('done')) return 'done';
  if (labels.some((l) => l === 'error' || l.startsWith('CANCEL'))) return 'fail';
  if (labels.some((l) => l.includes('['))) return 'guard';
  return 'done';
}

function render(p: Placed, ox: number, oy: number, rootId: string, out: string[], isRoot = false): void {
  const x = ox + p.x;
  const y = oy + p.y;
  if (!isRoot) {
    const path = p.node.id.slice(rootId.length + 1);
    const cls = ['state', p.children.length ? 'compound' : '', p.node.final ? 'final' : '', /fail|rollingBack|compensating/.test(path) ? 'failure-path' : '']
      .filter(Boolean)
      .join(' ');
    out.push(`<g class="${cls}" data-state="${esc(path)}">`);
    out.push(`<title>${esc(path)}${p.node.invokes ? ` (step ${esc(p.node.invokes)})` : ''}</title>`);
    out.push(`<rect x="${n(x)}" y="${n(y)}" width="${n(p.w)}" height="${n(p.h)}" rx="${p.children.length ? 10 : 8}"/>`);
    if (p.node.final) out.push(`<rect class="inner" x="${n(x + 3)}" y="${n(y + 3)}" width="${n(p.w - 6)}" height="${n(p.h - 6)}" rx="6"/>`);
    const key = shortName(p.node.id);
    if (p.children.length) {
      out.push(`<text class="title" x="${n(x + 10)}" y="${n(y + 18)}">${esc(key)}</text>`);
    } else {
      const cy = p.node.invokes ? y + 18 : y + p.h / 2 + 4.5;
      out.push(`<text x="${n(x + p.w / 2)}" y="${n(cy)}" text-anchor="middle">${esc(key)}</text>`);
      if (p.node.invokes) out.push(`<text class="step" x="${n(x + p.w / 2)}" y="${n(y + 33)}" text-anchor="middle">${esc(p.node.invokes)}</text>`);
    }
    out.push('</g>');
  }
  for (const e of p.edges) {
    const pts = e.points.map((pt) => `${n(ox + pt.x + (isRoot ? 0 : p.x))},${n(oy + pt.y + (isRoot ? 0 : p.y))}`);
    out.push(`<path class="edge ${e.kind}" d="M${pts.join('L')}" marker-end="url(#arrow)"/>`);
    if (e.labels.length) {
      const lx = ox + e.label.x + (isRoot ? 0 : p.x);
      const ly = oy + e.label.y + (isRoot ? 0 : p.y);
      out.push(`<text class="edge-label ${e.kind}" x="${n(lx)}" y="${n(ly + 4)}" text-anchor="middle">${esc(e.labels.join(', '))}</text>`);
    }
  }
  if (p.initial) out.push(`<circle class="initial" cx="${n(ox + p.initial.x + (isRoot ? 0 : p.x))}" cy="${n(oy + p.initial.y + (isRoot ? 0 : p.y))}" r="6"/>`);
  for (const c of p.children) render(c, isRoot ? ox : x, isRoot ? oy : y, rootId, out);
}

function shortName(id: string): string {
  return id.split('.').pop() ?? id;
}

function n(v: number): string {
  return String(Math.round(v * 10) / 10);
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c] ?? c);
}

const STYLE = [
  '.state rect{fill:#f7f9fc;stroke:#5b6b82;stroke-width:1.2}',
  '.state.compound>rect{fill:#fff5f2;stroke:#c0573e;stroke-dasharray:5 3}',
  '.state.final rect.inner{fill:none}',
  '.state text{fill:#1d2633}',
  '.state text.step{fill:#6b7a90;font-size:11px;font-family:ui-monospace,monospace}',
  '.state text.title{font-weight:600;fill:#9a3a25}',
  '.edge{fill:none;stroke:#5b6b82;stroke-width:1.2}',
  '.edge.fail{stroke:#c0392b;stroke-dasharray:4 3}',
  '.edge.guard{stroke:#7d5ba6}',
  '.edge-label{font-size:10.5px;fill:#45536a;paint-order:stroke;stroke:#fff;stroke-width:3px}',
  '.edge-label.fail{fill:#a93226}',
  '.initial{fill:#1d2633}',
  '.state.active>rect{fill:#dbeafe;stroke:#1d4ed8;stroke-width:2.5}',
  '.state.visited>rect{fill:#e8f5e9;stroke:#2e7d32}',
  '.state.failed-here>rect{fill:#fde2e1;stroke:#c0392b;stroke-width:2.5}',
].join('');
