import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { REPO } from '../helpers/paths.ts';

/**
 * Imports only point inward: core at the centre; the machines (pure: xstate and the error catalogue only); the
 * adapters (cassandra, storage, archive, catalog); the steps; the runtime that binds them; bus, ui and cli at the
 * edge. Every import of src/**\/*.ts is read, static and dynamic, runtime and type-only (`import type`; an
 * inline `import { type X }` still loads the module under verbatimModuleSyntax, so it counts as runtime).
 * The generalisation of 'machines are pure' in test/unit/machines/backup.machine.test.ts.
 */

/**
 * Which folders each folder of src may import. `types`: folders it may import types from only (`import type`).
 * A new folder needs a row here; an edge not listed fails with the file that made it.
 */
const MAY_IMPORT: Record<string, { runtime: string[]; types?: string[] }> = {
  core: { runtime: [] },
  cassandra: { runtime: ['core'] },
  storage: { runtime: ['core'] },
  state: { runtime: ['core'] },
  // The packer takes the snapshot's file list (cassandra/layout's SnapshotFile) as it is.
  archive: { runtime: ['core'], types: ['cassandra'] },
  catalog: { runtime: ['archive', 'core'], types: ['cassandra', 'storage'] },
  // Known exception to "machines import core only": their context and input carry plain-JSON types declared
  // beside the code that produces them (Compression, DataSettings, SettingChange, StorageConfig). Types only:
  // nothing of those folders loads with a machine.
  machines: { runtime: ['core'], types: ['archive', 'cassandra', 'storage'] },
  diagram: { runtime: ['machines', 'core'] },
  sandbox: { runtime: ['cassandra', 'core'] },
  steps: { runtime: ['machines', 'catalog', 'archive', 'cassandra', 'storage', 'core'] },
  workflows: { runtime: ['machines', 'catalog', 'archive', 'cassandra', 'storage', 'core'] },
  runtime: { runtime: ['steps', 'machines', 'archive', 'cassandra', 'storage', 'sandbox', 'state', 'core'] },
  bus: { runtime: ['runtime', 'workflows', 'machines', 'catalog', 'storage', 'state', 'core'] },
  // Prometheus metrics: fed events and numbers by the composition roots (agent command, local CLI runs).
  metrics: { runtime: ['core'], types: ['runtime'] },
  ui: { runtime: ['bus', 'runtime', 'diagram', 'machines', 'core'] },
  // The composition root of local commands; nothing imports it.
  cli: {
    runtime: ['ui', 'bus', 'runtime', 'workflows', 'steps', 'sandbox', 'diagram', 'machines', 'catalog', 'archive', 'cassandra', 'storage', 'state', 'core'],
  },
};
// The agent command serves metrics and local runs write their textfile (kept apart from the line above to merge easily).
MAY_IMPORT['cli']?.runtime.push('metrics');

/** Packages that talk to the outside world stay in the adapter that owns them. */
const DRIVERS: [RegExp, string][] = [
  [/^cassandra-driver$/, 'cassandra'],
  [/^amqplib$/, 'bus'],
  [/^tar-stream$/, 'archive'],
  [/^@aws-sdk\//, 'storage/s3'],
  [/^node:sqlite$/, 'state'],
];

interface Import {
  /** src-relative path of the importing file. */
  from: string;
  /** src-relative path of the imported file, or the package name. */
  to: string;
  local: boolean;
  typeOnly: boolean;
  dynamic: boolean;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? sourceFiles(path) : name.endsWith('.ts') ? [path] : [];
    });
}

/** Statements `import … from '…'`, `export … from '…'`, `import '…'` at the start of a line (not in comments). */
const STATIC = /^[ \t]*(import|export)(\s+type\b)?(?:[^;'"`]*?\bfrom)?\s*['"]([^'"]+)['"]/gm;
/** `import('…')`: a runtime import, unless in a type (`typeof import('…')`, `import('…').SomeType`). */
const DYNAMIC = /(typeof\s+)?\bimport\(\s*['"]([^'"]+)['"]\s*\)(\.(?!then\b|catch\b|finally\b)[A-Za-z_$])?/g;

function importsOf(src: string, file: string): Import[] {
  const text = readFileSync(file, 'utf8');
  const from = relative(src, file);
  const out: Import[] = [];
  const add = (spec: string, typeOnly: boolean, dynamic: boolean) => {
    const local = spec.startsWith('.');
    const to = local ? relative(src, resolve(dirname(file), spec)) : packageName(spec);
    out.push({ from, to, local, typeOnly, dynamic });
  };
  // `export const x = '…'` does not match: a quote must follow `from`, or the keyword itself (`import '…'`).
  for (const m of text.matchAll(STATIC)) add(m[3]!, Boolean(m[2]), false);
  for (const m of text.matchAll(DYNAMIC)) {
    const line = text.slice(text.lastIndexOf('\n', m.index) + 1, m.index).trimStart();
    if (line.startsWith('//') || line.startsWith('*')) continue;
    add(m[2]!, Boolean(m[1] || m[3]), true);
  }
  return out;
}

function packageName(spec: string): string {
  if (spec.startsWith('node:')) return spec;
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]!;
}

const folderOf = (path: string) => path.split('/')[0]!;
const describeImport = (i: Import) =>
  `src/${i.from} imports ${i.local ? `src/${i.to}` : i.to}${i.typeOnly ? ' (type only)' : ''}${i.dynamic ? ' (dynamic)' : ''}`;

interface Graph {
  src: string;
  files: string[];
  imports: Import[];
  local: Import[];
  crossFolder: Import[];
}

function readGraph(src: string): Graph {
  const files = sourceFiles(src);
  const imports = files.flatMap((f) => importsOf(src, f));
  const local = imports.filter((i) => i.local);
  return { src, files, imports, local, crossFolder: local.filter((i) => folderOf(i.from) !== folderOf(i.to)) };
}

/** Strongly connected components of a directed graph (Tarjan), each with more than one node or a self-edge. */
function cycles(edges: Map<string, Set<string>>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  let next = 0;
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next++);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || edges.get(v)?.has(v)) out.push(scc.sort());
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) visit(v);
  return out;
}

function edgesOf(imports: Import[], key: (path: string) => string): Map<string, Set<string>> {
  const edges = new Map<string, Set<string>>();
  for (const i of imports) {
    if (!edges.has(key(i.from))) edges.set(key(i.from), new Set());
    edges.get(key(i.from))!.add(key(i.to));
  }
  return edges;
}

/** Each check returns what it refuses, one line per offending import (or cycle), empty when all is well. */
const checks = {
  unknownFolders: (g: Graph) =>
    readdirSync(g.src)
      .filter((n) => statSync(join(g.src, n)).isDirectory() && !MAY_IMPORT[n])
      .map((f) => `src/${f} has no row in MAY_IMPORT (test/unit/architecture.test.ts)`),

  layers: (g: Graph) =>
    g.crossFolder
      .filter((i) => {
        const rule = MAY_IMPORT[folderOf(i.from)];
        const to = folderOf(i.to);
        return !rule || !(rule.runtime.includes(to) || (i.typeOnly && rule.types?.includes(to)));
      })
      .map((i) => {
        const rule = MAY_IMPORT[folderOf(i.from)];
        const may = `may import ${rule?.runtime.join(', ') || 'nothing'}${rule?.types ? `; types from ${rule.types.join(', ')}` : ''}`;
        return `${describeImport(i)}: ${folderOf(i.from)} -> ${folderOf(i.to)} is not allowed (${may})`;
      }),

  cliImported: (g: Graph) => g.crossFolder.filter((i) => folderOf(i.to) === 'cli').map((i) => `${describeImport(i)}: nothing imports the cli`),

  folderCycles: (g: Graph) =>
    cycles(edgesOf(g.crossFolder, folderOf)).map((scc) => {
      const inside = g.crossFolder.filter((i) => scc.includes(folderOf(i.from)) && scc.includes(folderOf(i.to)));
      const byEdge = new Map(inside.map((i) => [`${folderOf(i.from)} -> ${folderOf(i.to)}`, i]));
      return `cycle between ${scc.join(', ')}: ${[...byEdge].map(([edge, i]) => `${edge} (${describeImport(i)})`).join('; ')}`;
    }),

  // A cycle through a type-only import loads nothing in a loop (today sandbox/process.ts <-> sandbox.ts and
  // bus/signing.ts <-> schemas/commands.ts are such); one of runtime imports evaluates a module half-made.
  fileCycles: (g: Graph) =>
    cycles(
      edgesOf(
        g.local.filter((i) => !i.typeOnly),
        (p) => p,
      ),
    ).map((scc) => `runtime import cycle: ${scc.join(' -> ')}`),

  impureMachines: (g: Graph) =>
    g.imports
      .filter((i) => folderOf(i.from) === 'machines' && !i.typeOnly)
      .filter((i) => (i.local ? !(folderOf(i.to) === 'machines' || i.to === 'core/errors.ts') : i.to !== 'xstate'))
      .map((i) => `${describeImport(i)}: machines load xstate and core/errors.ts only`),

  storageAdapters: (g: Graph) => {
    const adapterOf = (path: string) => ['storage/local/', 'storage/s3/', 'storage/swift/'].find((a) => path.startsWith(a));
    return g.local
      .filter((i) => (i.from === 'storage/port.ts' && adapterOf(i.to)) || (adapterOf(i.from) && adapterOf(i.to) && adapterOf(i.from) !== adapterOf(i.to)))
      .map((i) => `${describeImport(i)}: the port knows no adapter, an adapter no other`);
  },

  stepSides: (g: Graph) => {
    const side = (path: string) => (path.startsWith('steps/backup/') ? 'backup' : path.startsWith('steps/restore/') ? 'restore' : null);
    return g.local
      .filter((i) => side(i.from) && side(i.to) && side(i.from) !== side(i.to))
      .map((i) => `${describeImport(i)}: backup and restore steps share only steps/*.ts`);
  },

  strayDrivers: (g: Graph) =>
    g.imports
      .filter((i) => !i.local && !i.typeOnly && DRIVERS.some(([re, home]) => re.test(i.to) && !i.from.startsWith(`${home}/`)))
      .map((i) => `${describeImport(i)}: ${DRIVERS.find(([re]) => re.test(i.to))![1]}/ owns this driver`),
};

const TITLES: Record<keyof typeof checks, string> = {
  unknownFolders: 'every folder of src has a row in the layer table',
  layers: 'every import between folders is one the layer table allows',
  cliImported: 'nothing imports the cli',
  folderCycles: 'no cycle between folders',
  fileCycles: 'no cycle of runtime imports between files',
  impureMachines: 'machines are pure: at runtime they load xstate and the error catalogue only',
  storageAdapters: 'the storage port imports none of its adapters, and no adapter another',
  stepSides: 'backup steps and restore steps do not import each other',
  strayDrivers: 'drivers of the outside world stay in the adapter that owns them',
};

describe('the import graph points inward', () => {
  const g = readGraph(join(REPO, 'src'));

  it('reads the imports it checks', () => {
    assert.ok(g.files.length > 50, `${g.files.length} files under src`);
    assert.ok(g.crossFolder.some((i) => i.typeOnly) && g.crossFolder.some((i) => !i.typeOnly), 'both runtime and type-only imports are seen');
    for (const i of g.local) assert.ok(statSync(join(g.src, i.to), { throwIfNoEntry: false })?.isFile(), `${describeImport(i)}, which does not exist`);
  });

  for (const [name, check] of Object.entries(checks)) {
    it(TITLES[name as keyof typeof checks], () => assert.deepEqual(check(g), []));
  }

  it('the layer table itself has no cycle', () => {
    const table = new Map(Object.entries(MAY_IMPORT).map(([f, r]) => [f, new Set([...r.runtime, ...(r.types ?? [])])]));
    assert.deepEqual(cycles(table), []);
  });
});

describe('the checks refuse what they should', () => {
  it('on a made-up tree of every kind of import', () => {
    const src = mkdtempSync(join(tmpdir(), 'cbr-arch-'));
    const put = (path: string, text: string) => {
      mkdirSync(dirname(join(src, path)), { recursive: true });
      writeFileSync(join(src, path), text);
    };
    try {
      put('core/errors.ts', "// import { main } from '../cli/main.ts';\nexport const fromHere = 'from';\n");
      put('core/bad.ts', "import { take } from '../steps/take.ts';\nexport const x = take;\n");
      put('machines/m.ts', "import { readFile } from 'node:fs';\nimport { E } from '../core/errors.ts';\nconst c = await import('../cassandra/c.ts');\n");
      put('cassandra/c.ts', "import type {\n  S,\n} from '../sandbox/s.ts';\nexport type T = S;\n");
      put('sandbox/s.ts', "import { c } from '../cassandra/c.ts';\nexport type S = 1;\n");
      put('storage/port.ts', "import type { L } from './local/l.ts';\n");
      put('storage/local/l.ts', "import { s3 } from '../s3/s.ts';\nexport type L = 1;\n");
      put('storage/s3/s.ts', 'export const s3 = 1;\n');
      put('steps/take.ts', "import cassandra from 'cassandra-driver';\ntype R = import('../runtime/r.ts').Runtime;\n");
      put('steps/backup/a.ts', "export { b } from '../restore/b.ts';\n");
      put('steps/restore/b.ts', "import { a } from '../backup/a.ts';\nexport const b = 1;\n");
      put('runtime/r.ts', 'export type Runtime = 1;\n');
      put('ui/u.ts', "import '../cli/main.ts';\n");
      put('cli/main.ts', 'export {};\n');
      put('extra/e.ts', 'export {};\n');
      const bad = readGraph(src);
      const found = Object.fromEntries(Object.entries(checks).map(([name, check]) => [name, check(bad)]));
      assert.deepEqual(found['unknownFolders'], ['src/extra has no row in MAY_IMPORT (test/unit/architecture.test.ts)']);
      const layers = found['layers']!.join('\n');
      for (const edge of [
        'src/core/bad.ts imports src/steps/take.ts: core -> steps',
        'src/machines/m.ts imports src/cassandra/c.ts (dynamic): machines -> cassandra',
        'src/cassandra/c.ts imports src/sandbox/s.ts (type only): cassandra -> sandbox',
        'src/steps/take.ts imports src/runtime/r.ts (type only) (dynamic): steps -> runtime',
        'src/ui/u.ts imports src/cli/main.ts: ui -> cli',
      ]) {
        assert.ok(layers.includes(edge), `${edge} in\n${layers}`);
      }
      assert.ok(!layers.includes('errors.ts imports'), 'a commented-out import is no import');
      assert.deepEqual(found['cliImported'], ['src/ui/u.ts imports src/cli/main.ts: nothing imports the cli']);
      assert.match(found['folderCycles']!.join('\n'), /cycle between cassandra, sandbox: cassandra -> sandbox \(.*\); sandbox -> cassandra/);
      assert.deepEqual(found['fileCycles'], ['runtime import cycle: steps/backup/a.ts -> steps/restore/b.ts']);
      assert.deepEqual(found['impureMachines'], [
        'src/machines/m.ts imports node:fs: machines load xstate and core/errors.ts only',
        'src/machines/m.ts imports src/cassandra/c.ts (dynamic): machines load xstate and core/errors.ts only',
      ]);
      assert.equal(found['storageAdapters']!.length, 2);
      assert.equal(found['stepSides']!.length, 2);
      assert.deepEqual(found['strayDrivers'], ['src/steps/take.ts imports cassandra-driver: cassandra/ owns this driver']);
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
  });
});
