// npm run bench:incremental — on a real sandbox node holding ~1 GiB of real SSTables: a full (TAR) backup, the
// first incremental (it stores every file once), ~1% new rows, the next incremental; then that incremental restored
// into a new sandbox beside `zstd -d | tar -x` of an equivalent archive made with the native tools, all in one run.

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runCommand } from '../src/bus/client.ts';
import { connectCql } from '../src/cassandra/cql.ts';
import { classpath, JDK17_MODULE_OPTIONS } from '../src/cassandra/java.ts';
import { createNodetool, toolsLogback } from '../src/cassandra/nodetool.ts';
import { loadCredentials, loadProfile, type Profile } from '../src/cassandra/profile.ts';
import { cbrCache } from '../src/core/paths.ts';
import { profilePath, removeSandbox, startSandbox, stopSandbox } from '../src/sandbox/sandbox.ts';
import { StateDb } from '../src/state/stateDb.ts';
import { BENCH_DIR, best, mibps, NODE, REPO, sh, type Timing, table, timed } from './lib.ts';

const RUNS = Number(process.env['CBR_BENCH_RUNS'] ?? 2);
const GIB = Number(process.env['CBR_BENCH_GIB'] ?? 1);
const NEW_PERCENT = 1;
// The loader's rows take about 1.7 KB each on disk (LZ4, the table's default); 100 rows per partition.
const ROWS_PER_PARTITION = 100;
const PARTITIONS = Math.round((GIB * 2 ** 30) / 1700 / ROWS_PER_PARTITION);
const NEW_PARTITIONS = Math.max(1, Math.round((PARTITIONS * NEW_PERCENT) / 100));
const SRC = 'bench-inc-src';
const DST = 'bench-inc-dst';

const home = join(BENCH_DIR, 'home-incremental');
const env = { ...process.env, CBR_HOME: home };
const storageRoot = join(home, 'storage');
const cbr = join(REPO, 'bin', 'cbr.js');
const BUS_URL = process.env['CBR_BENCH_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const BUS_PREFIX = `bench-inc-${process.pid}.`;

interface Run {
  seconds: number;
  /** Peak resident set of the cbr process itself (VmHWM), not of the nodetool JVMs or the node it starts. */
  rssMiB: number;
  stdout: string;
}

/** Runs a command and polls its own /proc status: GNU time would report the largest child (a nodetool JVM) instead. */
function measured(cmd: string, args: string[]): Promise<Run> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let peakKiB = 0;
    const poll = () => {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'));
        if (m) peakKiB = Math.max(peakKiB, Number(m[1]));
      } catch {
        /* exited between two polls */
      }
    };
    const timer = setInterval(poll, 50);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d;
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      clearInterval(timer);
      const seconds = (performance.now() - t0) / 1000;
      if (code !== 0) reject(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${stderr.slice(-2000)}${stdout.slice(-2000)}`));
      else resolve({ seconds, rssMiB: peakKiB / 1024, stdout });
    });
    poll();
  });
}

/** Seconds each state of a workflow lasted, from the transitions the runtime records in its state database. */
function stateSeconds(workflowId: string): Map<string, number> {
  const db = new StateDb(join(home, 'state.db'));
  try {
    const rows = db.transitions(workflowId);
    const out = new Map<string, number>();
    for (let i = 0; i + 1 < rows.length; i++) {
      const r = rows[i]!;
      out.set(r.state, (out.get(r.state) ?? 0) + (Date.parse(rows[i + 1]!.at) - Date.parse(r.at)) / 1000);
    }
    return out;
  } finally {
    db.close();
  }
}

function duBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  return Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0]);
}

/** nodetool from the node's jars, for the commands cbr's wrapper has no use for (import). */
function nodetool(profile: Profile, args: string[]): void {
  const auth = profile.jmx.user && profile.jmx.passwordFile ? ['-u', profile.jmx.user, '-pwf', profile.jmx.passwordFile] : [];
  execFileSync(
    join(profile.java.home, 'bin', 'java'),
    [
      '-Xmx128m',
      ...JDK17_MODULE_OPTIONS,
      `-Dlogback.configurationFile=${join(cbrCache(env), 'logback-tools.xml')}`,
      '-cp',
      classpath(profile.java.libDir),
      'org.apache.cassandra.tools.NodeTool',
      '-h',
      profile.jmx.host,
      '-p',
      String(profile.jmx.port),
      ...auth,
      ...args,
    ],
    { stdio: ['ignore', 'ignore', 'inherit'] },
  );
}

/** Compiles bench/loader/Loader.java once (again when the source is newer) against the node's jars. */
function loaderClasses(profile: Profile): string {
  const src = join(REPO, 'bench', 'loader', 'Loader.java');
  const out = join(BENCH_DIR, 'loader');
  const cls = join(out, 'Loader.class');
  if (!existsSync(cls) || statSync(cls).mtimeMs < statSync(src).mtimeMs) {
    mkdirSync(out, { recursive: true });
    execFileSync(join(profile.java.home, 'bin', 'javac'), ['-nowarn', '-d', out, '-cp', classpath(profile.java.libDir), src], { stdio: 'inherit' });
  }
  return out;
}

function loader(profile: Profile, classes: string, args: string[]): string {
  return execFileSync(
    join(profile.java.home, 'bin', 'java'),
    [
      '-Xmx1g',
      ...JDK17_MODULE_OPTIONS,
      // The writer follows the node's own settings (its storage_compatibility_mode picks the SSTable version).
      `-Dcassandra.config=file://${profile.cassandraYaml}`,
      `-Dlogback.configurationFile=${join(cbrCache(env), 'logback-tools.xml')}`,
      '-cp',
      `${classes}:${classpath(profile.java.libDir)}`,
      'Loader',
      ...args,
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  ).trim();
}

interface Load {
  rows: number;
  bytes: number;
  writeSeconds: number;
  importSeconds: number;
}

/** Writes SSTables for one partition range with the loader, then `nodetool import`s them into the node. */
function load(profile: Profile, classes: string, first: number, partitions: number, seed: number): Load {
  const dir = join(BENCH_DIR, `load-${seed}`);
  rmSync(dir, { recursive: true, force: true });
  let t0 = performance.now();
  const said = loader(profile, classes, ['write', dir, String(first), String(partitions), String(ROWS_PER_PARTITION), String(seed)]);
  const writeSeconds = (performance.now() - t0) / 1000;
  const tableDir = join(dir, 'bench', 'events');
  const bytes = readdirSync(tableDir).reduce((s, f) => s + statSync(join(tableDir, f)).size, 0);
  t0 = performance.now();
  // --quick: the files were written a moment ago by the same jars; skip verifying them and the cache checks.
  nodetool(profile, ['import', '--quick', 'bench', 'events', tableDir]);
  const importSeconds = (performance.now() - t0) / 1000;
  rmSync(dir, { recursive: true, force: true });
  return { rows: Number(/^(\d+) rows/.exec(said)?.[1] ?? 0), bytes, writeSeconds, importSeconds };
}

interface BackupOut {
  id: string;
  files: number;
  rawBytes: number;
  size: number;
  newBytes?: number;
  sharedBytes?: number;
  newStoredBytes?: number;
}

async function backup(id: string, extra: string[]): Promise<{ run: Run; out: BackupOut; grew: number; states: Map<string, number>; streaming: number }> {
  const before = duBytes(storageRoot);
  const run = await measured(NODE, [cbr, 'backup-create', id, '--config', profilePath(SRC, env), '--id', id, '--json', ...extra]);
  const out = JSON.parse(run.stdout) as BackupOut;
  const states = stateSeconds(id);
  return { run, out, grew: duBytes(storageRoot) - before, states, streaming: states.get('streaming') ?? Number.NaN };
}

/** Peak resident set (VmHWM) of a running process, in KiB; 0 once it has gone. */
function vmHwmKiB(pid: number): number {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

/**
 * `cbr agent` as operators run it: started once, fed commands over the real broker. Its stderr (the log) goes to
 * a file in the bench home, for a failure message.
 */
let agentProc: ChildProcess | null = null;

function startAgent(): { proc: ChildProcess; log: string } {
  const log = join(home, 'agent.log');
  const proc = spawn(NODE, [cbr, 'agent', '--config', profilePath(SRC, env), '--bus', BUS_URL, '--prefix', BUS_PREFIX], {
    // As deploy/cbr-agent.service runs it.
    env: { ...env, MALLOC_ARENA_MAX: '2' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  agentProc = proc;
  let text = '';
  proc.stderr?.on('data', (d: Buffer) => {
    text += d;
    writeFileSync(log, text);
  });
  return { proc, log };
}

/** SIGTERM (the agent checkpoints and stops), then waits for its exit. */
async function stopAgent(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise((resolve) => proc.once('close', resolve));
  proc.kill('SIGTERM');
  await exited;
}

/**
 * One backup.create through the running agent: from the command sent (client connect included) to its result
 * event. The agent's own peak RSS over that backup: VmHWM reset first (`clear_refs` 5), then polled.
 */
async function agentBackup(
  agent: { proc: ChildProcess; log: string },
  hostId: string,
  id: string,
  payload: Record<string, unknown>,
): Promise<{ run: Run; out: BackupOut; grew: number; states: Map<string, number>; streaming: number }> {
  const pid = agent.proc.pid!;
  if (agent.proc.exitCode !== null) throw new Error(`the agent exited ${agent.proc.exitCode}: ${readFileSync(agent.log, 'utf8').slice(-2000)}`);
  const before = duBytes(storageRoot);
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
  let peakKiB = vmHwmKiB(pid);
  const timer = setInterval(() => {
    peakKiB = Math.max(peakKiB, vmHwmKiB(pid));
  }, 50);
  const t0 = performance.now();
  const result = await runCommand({
    url: BUS_URL,
    prefix: BUS_PREFIX,
    draft: { id, type: 'backup.create', host: hostId, payload: { name: id, ...payload } },
  }).finally(() => clearInterval(timer));
  const seconds = (performance.now() - t0) / 1000;
  peakKiB = Math.max(peakKiB, vmHwmKiB(pid));
  if (result.type !== 'result' || result.state !== 'completed') {
    throw new Error(
      `agent backup ${id} ended ${result.state ?? result.type}: ${JSON.stringify(result.error)}\n${readFileSync(agent.log, 'utf8').slice(-2000)}`,
    );
  }
  const rec = JSON.parse(readFileSync(join(storageRoot, 'database_backups', id, 'backup.json'), 'utf8')) as BackupOut & { fileCount: number };
  const out: BackupOut = { ...rec, files: rec.fileCount };
  const states = stateSeconds(id);
  return {
    run: { seconds, rssMiB: peakKiB / 1024, stdout: '' },
    out,
    grew: duBytes(storageRoot) - before,
    states,
    streaming: states.get('streaming') ?? Number.NaN,
  };
}

/** Everything that needs the nodes: load, backups, the equivalent archive, the restore. */
async function onNodes() {
  // ---- the source node and its data -------------------------------------------------------------------------
  await startSandbox(SRC, { env });
  const src = await loadProfile(profilePath(SRC, env));
  const classes = loaderClasses(src);
  const cql = await connectCql({ ...src.cql, credentials: await loadCredentials(src.cql.credentialsFile) });
  await cql.execute("CREATE KEYSPACE bench WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
  await cql.execute(loader(src, classes, ['schema']));
  // The quiet logback file the nodetool calls above use.
  await toolsLogback(env);

  const firstLoad = load(src, classes, 0, PARTITIONS, 1);
  const countBefore = (await cql.execute('SELECT count(*) AS n FROM bench.events WHERE pk = 0'))[0]?.['n'];
  if (Number(String(countBefore)) !== ROWS_PER_PARTITION) throw new Error(`partition 0 has ${countBefore} rows after the import`);

  // ---- backups ------------------------------------------------------------------------------------------------
  // The agent starts once, before the first backup, and serves the agent's backups below; its idle JMX session
  // is whatever its configuration says (CBR_JMX_IDLE), as an operator's agent would have it.
  const agent = startAgent();
  const full = await backup('bench-full', ['--strategy', 'full']);
  const agentFull = await agentBackup(agent, src.hostId, 'bench-agent-full', { strategy: 'full' });
  const seed = await backup('bench-inc-0', ['--incremental']);
  const secondLoad = load(src, classes, PARTITIONS, NEW_PARTITIONS, 2);
  const t0 = performance.now();
  await createNodetool(src, env).flush();
  const flushSeconds = (performance.now() - t0) / 1000;
  const inc = await backup('bench-inc-1', ['--incremental']);
  await cql.close();

  // The native tools' equivalent: the same node state, snapshotted again right after the incremental (nothing was
  // written in between), packed by tar | zstd -1 -T0 into one archive, the layout cbr restores (ks/table/file).
  const dataDir = src.dataDirs[0]!;
  const equiv = join(BENCH_DIR, 'incremental-equivalent.tar.zst');
  await createNodetool(src, env).snapshot('bench-equiv');
  sh(`cd '${dataDir}' && tar -cf - --transform='s,/snapshots/bench-equiv,,' */*/snapshots/bench-equiv | zstd -1 -T0 -q -f -o '${equiv}'`);
  await createNodetool(src, env).clearSnapshot('bench-equiv');
  const equivRaw = Number(execFileSync('bash', ['-c', `zstd -dc -q '${equiv}' | wc -c`], { encoding: 'utf8' }).trim());

  // The agent's incremental: another ~1% of new rows and a flush (after the equivalent archive, which must match
  // the CLI's incremental restored below), then the next incremental of the same host through the agent.
  const thirdLoad = load(src, classes, PARTITIONS + NEW_PARTITIONS, NEW_PARTITIONS, 3);
  await createNodetool(src, env).flush();
  const agentInc = await agentBackup(agent, src.hostId, 'bench-agent-inc', { strategy: 'incremental' });

  // The source stops first: an idle node still takes CPU the restore's figures should not pay for.
  await stopAgent(agent.proc);
  await stopSandbox(SRC, env);

  // ---- restore ------------------------------------------------------------------------------------------------
  const passwordFile = join(home, 'restored.password');
  writeFileSync(passwordFile, 'bench-restored-password\n', { mode: 0o600 });
  const restore = await measured(NODE, [cbr, 'create', DST, '--backup', inc.out.id, '--sandbox', '--password-file', passwordFile, '--json']);
  const restored = JSON.parse(restore.stdout) as { workflowId: string; cassandraStarts: number };
  const restoreStates = stateSeconds(restored.workflowId);
  const unpackSeconds = restoreStates.get('unpacking') ?? Number.NaN;
  const dst = await loadProfile(profilePath(DST, env));
  const dstCql = await connectCql({ ...dst.cql, credentials: { username: 'cassandra', password: 'bench-restored-password' } });
  const restoredRows = String((await dstCql.execute(`SELECT count(*) AS n FROM bench.events WHERE pk = ${PARTITIONS}`))[0]?.['n']);
  await dstCql.close();
  return {
    firstLoad,
    secondLoad,
    thirdLoad,
    flushSeconds,
    full,
    seed,
    inc,
    agentFull,
    agentInc,
    equiv,
    equivRaw,
    restore,
    restored,
    restoreStates,
    unpackSeconds,
    restoredRows,
  };
}

// ---- the run -----------------------------------------------------------------------------------------------
const removeSandboxes = async () => {
  if (agentProc) await stopAgent(agentProc);
  for (const n of [SRC, DST]) await removeSandbox(n, env).catch(() => {});
};
await removeSandboxes();
rmSync(home, { recursive: true, force: true });
// The nodes go whether the run succeeds or not: no Cassandra is left behind on a shared machine.
const {
  firstLoad,
  secondLoad,
  thirdLoad,
  flushSeconds,
  full,
  seed,
  inc,
  agentFull,
  agentInc,
  equiv,
  equivRaw,
  restore,
  restored,
  restoreStates,
  unpackSeconds,
  restoredRows,
} = await onNodes().finally(removeSandboxes);

const target = join(BENCH_DIR, 'incremental-unpacked');
// Each run starts with nothing dirty in the page cache: the previous run's writes are not flushed on its time.
const fresh = () => {
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  execFileSync('sync');
};
// cbr's fetch step alone (bench/fetch-one.ts) and the native tools, interleaved run by run so the noise of a shared
// machine falls on both alike; each keeps its best run.
const min = (runs: Timing[]): Timing => ({ seconds: Math.min(...runs.map((t) => t.seconds)), maxRssMiB: Math.max(...runs.map((t) => t.maxRssMiB)) });
const fetchRuns: Timing[] = [];
const nativeRuns: Timing[] = [];
const nativeShaRuns: Timing[] = [];
const nativeSyncRuns: Timing[] = [];
for (let i = 0; i < RUNS; i++) {
  fresh();
  // As the CLI (bin/cbr.js) runs it: with Node's compile cache (the fetch workers load their modules from it too).
  fetchRuns.push(
    timed(NODE, [join(REPO, 'bench', 'fetch-one.ts'), storageRoot, 'database_backups', inc.out.id, join(target, 'data')], {
      ...process.env,
      NODE_COMPILE_CACHE: join(BENCH_DIR, 'node-compile'),
    }),
  );
  fresh();
  nativeRuns.push(sh(`zstd -dc -q '${equiv}' | tar -xf - -C '${target}'`));
  fresh();
  nativeShaRuns.push(sh(`tee >(sha256sum > /dev/null) < '${equiv}' | zstd -dc -q | tar -xf - -C '${target}'`));
  fresh();
  // cbr's fetch step ends with the staging filesystem flushed (nothing unsynced reaches the node): the same here.
  nativeSyncRuns.push(sh(`zstd -dc -q '${equiv}' | tar -xf - -C '${target}' && sync -f '${target}'`));
}
const fetchOnly = min(fetchRuns);
const native = min(nativeRuns);
const nativeSha = min(nativeShaRuns);
const nativeSync = min(nativeSyncRuns);
// Today's full restore path on the full backup's archive, for the "0.58-0.92x" figure in the same run.
const fullRecord = JSON.parse(readFileSync(join(storageRoot, 'database_backups', full.out.id, 'backup.json'), 'utf8')) as { object: string; sha256: string };
const fullArchive = join(storageRoot, 'database_backups', fullRecord.object);
const fullUnpack = best(RUNS, () => {
  fresh();
  return timed(NODE, [join(REPO, 'bench', 'unpack-one.ts'), fullArchive, target, fullRecord.sha256, 'zstd']);
});
const fullNative = best(RUNS, () => {
  fresh();
  return sh(`zstd -dc -q '${fullArchive}' | tar -xf - -C '${target}'`);
});
rmSync(target, { recursive: true, force: true });
// What any cbr command costs before it does anything: the floor under every RSS figure above.
const floor = await measured(NODE, [cbr, 'backup-list', '--json']);

// ---- report -------------------------------------------------------------------------------------------------
const MiB = (n: number) => (n / 2 ** 20).toFixed(1);
const pct = (a: number, b: number) => `${((100 * a) / b).toFixed(2)}%`;
const pass = (ok: boolean) => (ok ? 'pass' : 'FAIL');
const uploaded = inc.out.newStoredBytes ?? inc.grew;
const peakRss = Math.max(full.run.rssMiB, seed.run.rssMiB, inc.run.rssMiB, restore.rssMiB, fetchOnly.maxRssMiB);
const agentPeakRss = Math.max(agentFull.run.rssMiB, agentInc.run.rssMiB);
const cliBackupRss = Math.max(full.run.rssMiB, seed.run.rssMiB, inc.run.rssMiB);
const loads = table(
  ['load', 'rows', 'SSTable MiB', 'loader s', 'nodetool import s', 'rows/s'],
  [firstLoad, secondLoad, thirdLoad].map((l, i) => [
    [
      `initial (~${GIB} GiB)`,
      `new rows (~${NEW_PERCENT}%) + flush ${flushSeconds.toFixed(1)} s`,
      `new rows (~${NEW_PERCENT}%) again, for the agent's incremental`,
    ][i]!,
    l.rows,
    MiB(l.bytes),
    l.writeSeconds.toFixed(1),
    l.importSeconds.toFixed(1),
    (l.rows / (l.writeSeconds + l.importSeconds)).toFixed(0),
  ]),
);
const backupRow = (name: string, b: typeof full) => [
  name,
  b.out.files,
  MiB(b.out.rawBytes),
  MiB(b.out.newBytes ?? b.out.rawBytes),
  MiB(b.out.sharedBytes ?? 0),
  MiB(b.out.newStoredBytes ?? b.out.size),
  MiB(b.grew),
  b.run.seconds.toFixed(1),
  b.streaming.toFixed(1),
  b.run.rssMiB.toFixed(0),
];
const backups = table(
  ['backup', 'files', 'snapshot MiB', 'new MiB', 'shared MiB', 'uploaded MiB (record)', 'storage grew MiB (du)', 'wall s', 'streaming s', 'cbr peak RSS MiB'],
  [
    backupRow('CLI: full (TAR, zstd)', full),
    backupRow('CLI: first incremental (stores every file)', seed),
    backupRow(`CLI: incremental after ${NEW_PERCENT}% new rows`, inc),
    backupRow('agent: full (TAR, zstd)', agentFull),
    backupRow(`agent: incremental after another ${NEW_PERCENT}% new rows`, agentInc),
  ],
);
const restores = table(
  ['restore of the incremental', 'seconds', 'MiB/s', 'peak RSS MiB'],
  [
    ['cbr create --sandbox (command to restored node answering)', restore.seconds.toFixed(1), '', restore.rssMiB.toFixed(0)],
    ['cbr unpacking step of that restore (blobs -> staging, SHA-256 checked)', unpackSeconds.toFixed(2), mibps(inc.out.rawBytes, unpackSeconds), ''],
    [
      'cbr fetch step alone (bench/fetch-one.ts, 4 files at once, every file fsynced)',
      fetchOnly.seconds.toFixed(2),
      mibps(inc.out.rawBytes, fetchOnly.seconds),
      fetchOnly.maxRssMiB.toFixed(0),
    ],
    ['zstd -d \\| tar -x (equivalent archive)', native.seconds.toFixed(2), mibps(equivRaw, native.seconds), native.maxRssMiB.toFixed(0)],
    ['sha256sum + zstd -d \\| tar -x', nativeSha.seconds.toFixed(2), mibps(equivRaw, nativeSha.seconds), nativeSha.maxRssMiB.toFixed(0)],
    ['zstd -d \\| tar -x && sync -f', nativeSync.seconds.toFixed(2), mibps(equivRaw, nativeSync.seconds), nativeSync.maxRssMiB.toFixed(0)],
    [
      '(the full backup) cbr unpack of its archive',
      fullUnpack.seconds.toFixed(2),
      mibps(full.out.rawBytes, fullUnpack.seconds),
      fullUnpack.maxRssMiB.toFixed(0),
    ],
    [
      '(the full backup) zstd -d \\| tar -x of its archive',
      fullNative.seconds.toFixed(2),
      mibps(full.out.rawBytes, fullNative.seconds),
      fullNative.maxRssMiB.toFixed(0),
    ],
    ['(any command) cbr backup-list, the startup floor', floor.seconds.toFixed(2), '', floor.rssMiB.toFixed(0)],
  ],
);
const targets = table(
  ['target', 'measured', 'limit', 'result'],
  [
    ['incremental uploads / full stored bytes', pct(uploaded, full.out.size), '<= 3%', pass(uploaded <= 0.03 * full.out.size)],
    [
      'agent: incremental wall time / full wall time (command sent to result event)',
      pct(agentInc.run.seconds, agentFull.run.seconds),
      '<= 15%',
      pass(agentInc.run.seconds <= 0.15 * agentFull.run.seconds),
    ],
    [
      'CLI: incremental wall time / full wall time (process start to exit)',
      pct(inc.run.seconds, full.run.seconds),
      '<= 15%',
      pass(inc.run.seconds <= 0.15 * full.run.seconds),
    ],
    [
      'incremental fetch step alone / `zstd -d \\| tar -x`',
      `${(native.seconds / fetchOnly.seconds).toFixed(2)}x`,
      '>= 1.00x',
      pass(fetchOnly.seconds <= native.seconds),
    ],
    [
      'incremental fetch step alone / `zstd -d \\| tar -x && sync -f`',
      `${(nativeSync.seconds / fetchOnly.seconds).toFixed(2)}x`,
      '(both durable)',
      pass(fetchOnly.seconds <= nativeSync.seconds),
    ],
    ['the same, inside the whole restore', `${(native.seconds / unpackSeconds).toFixed(2)}x`, '>= 1.00x', pass(unpackSeconds <= native.seconds)],
    ['cbr CLI process peak RSS (every run above)', `${peakRss.toFixed(0)} MiB`, '< 200 MB', pass(peakRss * 2 ** 20 < 200e6)],
    ['cbr CLI process peak RSS (its three backups)', `${cliBackupRss.toFixed(0)} MiB`, '< 200 MB', pass(cliBackupRss * 2 ** 20 < 200e6)],
    ['cbr agent process peak RSS (its two backups)', `${agentPeakRss.toFixed(0)} MiB`, '< 200 MB', pass(agentPeakRss * 2 ** 20 < 200e6)],
  ],
);
const states = (m: Map<string, number>) => [...m].map(([s, secs]) => `${s} ${secs.toFixed(1)}`).join(', ');
const report =
  `## Incremental backup benchmark (${new Date().toISOString().slice(0, 10)}, 2 cores, load average ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')} at the end)\n\n` +
  `One sandbox node (Cassandra 5.0.6), table \`bench.events\` written by CQLSSTableWriter (bench/loader/Loader.java) and \`nodetool import\`ed; ` +
  `its compaction is off so the incremental sees exactly the new SSTables. Local storage, zstd. Native runs and cbr's fetch step alone: best of ${RUNS}, interleaved; the other cbr runs: once each.\n\n` +
  `### Load\n\n${loads}\n\n### Backups\n\n${backups}\n\n` +
  `Backup states (seconds): full: ${states(full.states)}; first incremental: ${states(seed.states)}; incremental: ${states(inc.states)}; ` +
  `agent full: ${states(agentFull.states)}; agent incremental: ${states(agentInc.states)}. ` +
  `CLI runs: wall time from process start to exit, RSS of the cbr process (not its JMX child JVM); agent runs: from the command sent (client connect included) to its result event, RSS of the agent process (VmHWM reset before each backup). ` +
  `Streaming step alone, incremental / full: ${pct(inc.streaming, full.streaming)}.\n\n` +
  `### Restore of the incremental into a new sandbox\n\n${restores}\n\n` +
  `Restore states (seconds): ${states(restoreStates)}; ${restored.cassandraStarts} Cassandra starts; partition ${PARTITIONS} (from the new rows) has ${restoredRows} rows after the restore. ` +
  `Equivalent archive: ${MiB(statSync(equiv).size)} MiB stored, ${MiB(equivRaw)} MiB of tar.\n\n### Targets\n\n${targets}\n`;
mkdirSync(BENCH_DIR, { recursive: true });
writeFileSync(join(BENCH_DIR, 'incremental.md'), report);
process.stdout.write(`${report}\n`);
