import { randomBytes, randomUUID } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { type CqlSession, connectCql } from '../cassandra/cql.ts';
import { loadCredentials, loadProfile } from '../cassandra/profile.ts';
import { countRows } from '../cassandra/rowCounts.ts';
import type { BackupRecord } from '../catalog/catalog.ts';
import { CbrError, type ErrorInfo, fromErrorInfo, toErrorInfo } from '../core/errors.ts';
import { SYSTEM_KEYSPACES } from '../core/ids.ts';
import type { RestoreInput } from '../machines/restore.machine.ts';
import type { StorageConfig } from '../storage/port.ts';
import { restoreInput } from './restoreRequest.ts';

/**
 * A restore drill: a backup restored into a throwaway sandbox, then checked there, then the sandbox removed. One
 * function (runDrill) for both callers, `cbr drill` (src/cli/commands/drill.ts) and the agent's `backup.drill`
 * (src/bus/agent.ts); each injects how sandboxes are made (DrillSandboxes, built in src/cli/drillSandboxes.ts) and
 * how the restore workflow runs (its own runtime, or the agent's).
 */

/** Drill sandboxes are named `drill-<pid>-<hex>`: a later drill (or an operator reading `sandbox status`) knows them. */
export const DRILL_SANDBOX_RE = /^drill-(\d+)-[0-9a-f]{8}$/;

/** Makes and removes the throwaway sandboxes of drills (a port: the sandbox folder is not this layer's). */
export interface DrillSandboxes {
  /** Removes the sandboxes of drills whose process is gone (and marks restores left on them failed); their names. */
  removeStale(): Promise<string[]>;
  /** Makes a sandbox marked as this process's; resolves with its node profile's path. */
  create(name: string, signal: AbortSignal): Promise<string>;
  /** Removes it; CBR_ERR_SANDBOX_NOT_FOUND when it was never made. */
  remove(name: string): Promise<void>;
}

/** Runs the restore workflow of a drill to its end; on `signal` it cancels it (the restore rolls back). */
export type DrillRestore = (input: RestoreInput, signal: AbortSignal) => Promise<{ state: string; error: ErrorInfo | null }>;

export interface DrillRequest {
  backupId: string;
  record: BackupRecord;
  userChecks: readonly UserCheck[];
  storage: StorageConfig;
  decryptKeyFile?: string | undefined;
  decryptKeyEnv?: string | undefined;
  env: NodeJS.ProcessEnv;
  signal: AbortSignal;
  /** A sandbox that could not be removed (the drill's outcome stands). */
  warn: (message: string) => void;
}

/** Restore, check, remove; the sandbox goes whatever happens (a failure, an abort). Never throws: the result says. */
export async function runDrill(o: DrillRequest, deps: { sandboxes: DrillSandboxes; restore: DrillRestore }): Promise<DrillResult> {
  const started = new Date();
  const t0 = performance.now();
  const name = `drill-${process.pid}-${randomBytes(4).toString('hex')}`;
  const counted = o.record.tables ?? [];
  let checks: DrillCheck[] = [];
  let error: ErrorInfo | null = null;
  let tRestored = t0;
  let tChecked = t0;
  let passwordFile: string | null = null;
  let removed = false;
  try {
    await deps.sandboxes.removeStale();
    const profilePath = await deps.sandboxes.create(name, o.signal);
    o.signal.throwIfAborted();
    const { input } = await restoreInput(
      { backupId: o.backupId, instanceName: name, clusterName: name, decryptKeyFile: o.decryptKeyFile, decryptKeyEnv: o.decryptKeyEnv },
      { id: randomUUID(), profilePath, storage: o.storage },
      o.env,
    );
    passwordFile = input.passwordFile;
    const outcome = await deps.restore(input, o.signal);
    tRestored = tChecked = performance.now();
    if (outcome.state !== 'completed') throw fromErrorInfo(outcome.error ?? { code: 'CBR_ERR_INTERNAL', message: 'restore failed', retryable: false });
    o.signal.throwIfAborted();
    const profile = await loadProfile(profilePath);
    const cql = await connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) });
    try {
      checks = await drillChecks(cql, o.record, o.userChecks, o.signal);
    } finally {
      await cql.close();
    }
    tChecked = performance.now();
    if (checks.some((c) => !c.ok)) error = { code: 'CBR_ERR_DRILL_FAILED', message: describeFailures(checks), retryable: false };
  } catch (err) {
    if (tRestored === t0) tRestored = tChecked = performance.now();
    else tChecked = performance.now();
    error = o.signal.aborted ? { code: 'CBR_ERR_ABORTED', message: 'drill interrupted', retryable: true } : toErrorInfo(err);
  } finally {
    try {
      await deps.sandboxes.remove(name);
      removed = true;
    } catch (err) {
      // Never made (the drill failed before): nothing to remove.
      if (err instanceof CbrError && err.code === 'CBR_ERR_SANDBOX_NOT_FOUND') removed = true;
      else o.warn(`sandbox ${name} was not removed: ${(err as Error).message}; remove it with cbr sandbox rm ${name}`);
    }
    if (passwordFile) await rm(passwordFile, { force: true }).catch(() => {});
  }
  const tEnd = performance.now();
  const s = (ms: number) => Math.round(ms) / 1000;
  return {
    id: randomUUID(),
    backupId: o.backupId,
    host: o.record.hostId,
    sourceInstance: o.record.sourceInstance,
    strategy: o.record.strategy ?? 'full',
    ok: error === null,
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    seconds: { restore: s(tRestored - t0), checks: s(tChecked - tRestored), cleanup: s(tEnd - tChecked), total: s(tEnd - t0) },
    checks,
    rowCountsRecorded: counted.some((t) => t.rows !== null),
    notCounted: o.record.tables ? counted.filter((t) => t.rows === null).map((t) => ({ table: `${t.keyspace}.${t.table}`, note: t.note ?? '' })) : [],
    sandbox: name,
    sandboxRemoved: removed,
    error,
  };
}

/** One `--check "<CQL>" --expect <value>`: the first column of the first row, as text, must equal `expect`. */
export interface UserCheck {
  cql: string;
  expect: string;
}

export interface DrillCheck {
  kind: 'keyspace' | 'table' | 'rows' | 'query';
  /** `ks`, `ks.table`, or the CQL of a query check. */
  name: string;
  ok: boolean;
  expected: string;
  actual: string;
}

/** The outcome of one drill: printed, kept in the state database (src/state/drillLog.ts), read by metrics and schedules. */
export interface DrillResult {
  /** The drill's own id. */
  id: string;
  backupId: string;
  /** The source node's host id and instance, from the record. */
  host: string;
  sourceInstance: string;
  /** The backup's strategy (metrics label). */
  strategy: string;
  ok: boolean;
  startedAt: string;
  finishedAt: string;
  /** Seconds per phase: restore (sandbox made, backup restored, node answering), checks, cleanup (sandbox removed); total. */
  seconds: { restore: number; checks: number; cleanup: number; total: number };
  checks: DrillCheck[];
  /** False when the record holds no row counts (backups made before counts), or none could be taken. */
  rowCountsRecorded: boolean;
  /** Tables whose rows were not compared, and why (from the record). */
  notCounted: { table: string; note: string }[];
  /** The sandbox the drill used (removed at the end unless cleanup failed). */
  sandbox: string;
  sandboxRemoved: boolean;
  /** The coded error that failed the drill: a failed restore's own, CBR_ERR_DRILL_FAILED for failed checks. */
  error: ErrorInfo | null;
}

/** The user keyspaces and tables a record holds: from its file list (every record has one), or its counts. */
export function recordTables(record: Pick<BackupRecord, 'files' | 'keyspaces' | 'tables'>): { keyspaces: string[]; tables: string[] } {
  const tables = new Set<string>();
  for (const f of record.files) {
    const [ks, dir] = f.path.split('/');
    const m = dir ? /^([A-Za-z0-9_]+)-[0-9a-f]{32}$/.exec(dir) : null;
    if (ks && m && !SYSTEM_KEYSPACES.has(ks)) tables.add(`${ks}.${m[1]}`);
  }
  for (const t of record.tables ?? []) tables.add(`${t.keyspace}.${t.table}`);
  const keyspaces = new Set([...record.keyspaces, ...[...tables].map((t) => t.split('.')[0]!)]);
  return { keyspaces: [...keyspaces].sort(), tables: [...tables].sort() };
}

/** The checks of a drill on the restored node: every keyspace and table of the record, recorded row counts, user queries. */
export async function drillChecks(
  cql: CqlSession,
  record: Pick<BackupRecord, 'files' | 'keyspaces' | 'tables'>,
  userChecks: readonly UserCheck[],
  signal?: AbortSignal,
): Promise<DrillCheck[]> {
  const { keyspaces, tables } = recordTables(record);
  const out: DrillCheck[] = [];
  const haveKs = new Set((await cql.execute('SELECT keyspace_name FROM system_schema.keyspaces')).map((r) => String(r['keyspace_name'])));
  for (const ks of keyspaces) out.push({ kind: 'keyspace', name: ks, ok: haveKs.has(ks), expected: 'present', actual: haveKs.has(ks) ? 'present' : 'missing' });
  const haveTables = new Set<string>();
  for (const q of ['SELECT keyspace_name, table_name FROM system_schema.tables', 'SELECT keyspace_name, view_name AS table_name FROM system_schema.views']) {
    for (const r of await cql.execute(q)) haveTables.add(`${String(r['keyspace_name'])}.${String(r['table_name'])}`);
  }
  for (const t of tables) out.push({ kind: 'table', name: t, ok: haveTables.has(t), expected: 'present', actual: haveTables.has(t) ? 'present' : 'missing' });
  for (const t of record.tables ?? []) {
    if (t.rows === null) continue;
    signal?.throwIfAborted();
    const name = `${t.keyspace}.${t.table}`;
    const actual = haveTables.has(name) ? await countRows(cql, t.keyspace, t.table).then(String, (err: Error) => `error: ${err.message}`) : 'table missing';
    if (t.defaultTtl) {
      // Rows of a table with a default TTL expire between the backup and the drill: at most the recorded count.
      const ok = /^\d+$/.test(actual) && Number(actual) <= t.rows;
      out.push({ kind: 'rows', name, ok, expected: `at most ${t.rows} (default TTL ${t.defaultTtl} s)`, actual });
    } else out.push({ kind: 'rows', name, ok: actual === String(t.rows), expected: String(t.rows), actual });
  }
  for (const c of userChecks) {
    signal?.throwIfAborted();
    const actual = await cql.execute(c.cql).then(firstValue, (err: Error) => `error: ${err.message}`);
    out.push({ kind: 'query', name: c.cql, ok: actual === c.expect, expected: c.expect, actual });
  }
  return out;
}

/** The first column of the first row as text ('null' for a null, '(no rows)' when there is none); numbers and longs as digits. */
export function firstValue(rows: Record<string, unknown>[]): string {
  const row = rows[0];
  if (!row) return '(no rows)';
  const v = Object.values(row)[0];
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'object' && !Array.isArray(v) && !(v instanceof Date) && !Buffer.isBuffer(v)) return String(v);
  if (Buffer.isBuffer(v)) return `0x${v.toString('hex')}`;
  if (v instanceof Date) return v.toISOString();
  return typeof v === 'string' ? v : JSON.stringify(v);
}

/** Pairs `--check` with `--expect` in order; a check without its expectation (or the reverse) is refused. */
export function pairChecks(checks: readonly string[] = [], expects: readonly string[] = []): UserCheck[] {
  if (checks.length !== expects.length)
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `each --check needs its --expect (${checks.length} --check, ${expects.length} --expect)`);
  return checks.map((cql, i) => {
    if (!/^\s*select\s/i.test(cql)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--check must be a SELECT: ${JSON.stringify(cql.slice(0, 80))}`);
    return { cql, expect: expects[i]! };
  });
}

/** The failed checks as one line (the error message of a failed drill). */
export function describeFailures(checks: readonly DrillCheck[]): string {
  const bad = checks.filter((c) => !c.ok);
  const shown = bad.slice(0, 5).map((c) => `${c.kind} ${c.name}: expected ${c.expected}, got ${c.actual}`);
  return `${bad.length} of ${checks.length} checks failed: ${shown.join('; ')}${bad.length > 5 ? '; ...' : ''}`;
}
