import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { connectCql } from '../../cassandra/cql.ts';
import { loadCredentials, loadProfile } from '../../cassandra/profile.ts';
import { checkId, latestBackupId, readRecord } from '../../catalog/catalog.ts';
import { CbrError, type ErrorInfo, fromErrorInfo, toErrorInfo } from '../../core/errors.ts';
import { runSample } from '../../metrics/metrics.ts';
import { ownerAlive, ownerToken } from '../../runtime/owner.ts';
import { createSandbox, instanceDir, listSandboxes, removeSandbox } from '../../sandbox/sandbox.ts';
import { DrillLog } from '../../state/drillLog.ts';
import { StateDb } from '../../state/stateDb.ts';
import { openStore } from '../../storage/open.ts';
import { type DrillCheck, type DrillResult, describeFailures, drillChecks, pairChecks } from '../../workflows/drill.ts';
import { restoreInput } from '../../workflows/restoreRequest.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { metricsOptions, recordRun, runLocally, stateDbPath, storageConfig, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';
import { onInterrupt } from '../signals.ts';

/** Drill sandboxes are named `drill-<pid>-<hex>`: a later drill (or an operator reading `sandbox status`) knows them. */
export const DRILL_SANDBOX_RE = /^drill-(\d+)-[0-9a-f]{8}$/;
const OWNER_FILE = 'drill-owner';

export const command = defineCommand('drill', {
  summary: 'Restore a backup into a throwaway sandbox, check its keyspaces, tables and row counts, remove it; report pass or fail.',
  args: '<backup-id> | --latest [--host <host-id>] [--check <CQL> --expect <value> ...] | --last [--host <host-id>]',
  options: {
    check: {
      type: 'string',
      multiple: true,
      placeholder: '<CQL>',
      description: 'a SELECT run on the restored node; the first column of its first row must equal the matching --expect',
    },
    expect: { type: 'string', multiple: true, placeholder: '<value>', description: 'what the --check at the same position must answer, as text' },
    'decrypt-key-file': { type: 'string', placeholder: '<file>', description: 'the key the backup was sealed with, in this file' },
    'decrypt-key-env': { type: 'string', placeholder: '<var>', description: 'the key the backup was sealed with, in this environment variable' },
    last: { type: 'boolean', default: false, description: 'print the last drill and the last passing drill of each host (from the state database)' },
    latest: { type: 'boolean', default: false, description: 'drill the newest completed backup (of --host) instead of naming one: for schedules' },
    host: { type: 'string', placeholder: '<host-id>', description: 'with --last: only this host; with --latest: the newest backup of this host' },
    ...jsonOption,
    ...storageOptions,
    ...metricsOptions,
  },
  notes: [
    'Exit status 0 when every check passed; CBR_ERR_DRILL_FAILED when a check failed; a failed restore exits with its own code.',
    'Sandboxes of drills killed with -9 (drill-<pid>-<hex>) are removed by the next drill.',
  ],
  async run({ values, positionals, usage }, io) {
    if (values.last) {
      const db = new StateDb(stateDbPath(io.env));
      try {
        const rows = new DrillLog(db.db).last(values.host);
        if (values.json) printJson(io, { drills: rows });
        else if (rows.length === 0) io.stdout(`no drills recorded${values.host ? ` for host ${values.host}` : ''}\n`);
        else
          for (const r of rows) {
            io.stdout(
              `${r.host}  last drill ${r.last.finishedAt} ${r.last.ok ? 'PASS' : 'FAIL'} (backup ${r.last.backupId})  last pass ${r.lastOk ? `${r.lastOk.finishedAt} (backup ${r.lastOk.backupId})` : 'never'}\n`,
            );
          }
      } finally {
        db.close();
      }
      return 0;
    }
    const id = positionals[0];
    if (values.latest ? positionals.length > 0 : !id || positionals.length > 1) {
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `drill takes one <backup-id> or --latest\nusage: ${usage}`);
    }
    const userChecks = pairChecks(values.check, values.expect);
    const storage = storageConfig(values, io.env);
    const backupId = values.latest ? await latestBackupId(openStore(storage), values.host) : checkId(id ?? '');
    const record = await readRecord(openStore(storage), backupId);

    const result = await drill(io.env, {
      backupId,
      record,
      userChecks,
      storage,
      decryptKeyFile: values['decrypt-key-file'],
      decryptKeyEnv: values['decrypt-key-env'],
      json: values.json,
      io,
    });
    const db = new StateDb(stateDbPath(io.env));
    try {
      new DrillLog(db.db).record(result);
    } finally {
      db.close();
    }
    const code = result.ok ? '' : (result.error?.code ?? 'CBR_ERR_DRILL_FAILED');
    await recordRun(
      io,
      values['metrics-textfile'],
      runSample('drill', { ok: result.ok, code, seconds: result.seconds.total, host: result.host, strategy: record.strategy ?? 'full' }),
    );
    if (values.json) printJson(io, result);
    else printHuman(io, result);
    if (result.ok) return 0;
    const error = result.error ?? { code: 'CBR_ERR_DRILL_FAILED', message: 'drill failed', retryable: false };
    io.stderr(`cbr drill: ${error.code}: ${error.message}\n`);
    return fromErrorInfo(error).exitCode;
  },
});

interface DrillOptions {
  backupId: string;
  record: Awaited<ReturnType<typeof readRecord>>;
  userChecks: ReturnType<typeof pairChecks>;
  storage: ReturnType<typeof storageConfig>;
  decryptKeyFile: string | undefined;
  decryptKeyEnv: string | undefined;
  json: boolean;
  io: Parameters<Parameters<typeof defineCommand>[1]['run']>[1];
}

/** Restore, check, remove; the sandbox goes whatever happens (a failure, Ctrl-C, SIGTERM). */
async function drill(env: NodeJS.ProcessEnv, o: DrillOptions): Promise<DrillResult> {
  const started = new Date();
  const t0 = performance.now();
  await removeStaleDrillSandboxes(env);
  const name = `drill-${process.pid}-${randomBytes(4).toString('hex')}`;
  const abort = new AbortController();
  const dispose = onInterrupt(() => abort.abort());
  const counted = o.record.tables ?? [];
  let checks: DrillCheck[] = [];
  let error: ErrorInfo | null = null;
  let tRestored = t0;
  let tChecked = t0;
  let passwordFile: string | null = null;
  let removed = false;
  try {
    await createSandbox(name, { env, signal: abort.signal });
    writeFileSync(join(instanceDir(name, env), OWNER_FILE), `${ownerToken()}\n`);
    abort.signal.throwIfAborted();
    const workflowId = randomUUID();
    const { input } = await restoreInput(
      { backupId: o.backupId, instanceName: name, clusterName: name, decryptKeyFile: o.decryptKeyFile, decryptKeyEnv: o.decryptKeyEnv },
      { id: workflowId, profilePath: join(instanceDir(name, env), 'profile.json'), storage: o.storage },
      env,
    );
    passwordFile = input.passwordFile;
    const outcome = await runLocally(o.io, o.json, workflowId, (runtime) => runtime.startRestore(input));
    tRestored = tChecked = performance.now();
    if (outcome.state !== 'completed') throw fromErrorInfo(outcome.error ?? { code: 'CBR_ERR_INTERNAL', message: 'restore failed', retryable: false });
    abort.signal.throwIfAborted();
    const profile = await loadProfile(join(instanceDir(name, env), 'profile.json'));
    const cql = await connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) });
    try {
      checks = await drillChecks(cql, o.record, o.userChecks, abort.signal);
    } finally {
      await cql.close();
    }
    tChecked = performance.now();
    if (checks.some((c) => !c.ok)) error = { code: 'CBR_ERR_DRILL_FAILED', message: describeFailures(checks), retryable: false };
  } catch (err) {
    if (tRestored === t0) tRestored = tChecked = performance.now();
    else tChecked = performance.now();
    error = abort.signal.aborted ? { code: 'CBR_ERR_ABORTED', message: 'drill interrupted', retryable: true } : toErrorInfo(err);
  } finally {
    try {
      await removeSandbox(name, env);
      removed = true;
    } catch (err) {
      // Never made (the drill failed before): nothing to remove.
      if (err instanceof CbrError && err.code === 'CBR_ERR_SANDBOX_NOT_FOUND') removed = true;
      else o.io.stderr(`warning: sandbox ${name} was not removed: ${(err as Error).message}; remove it with cbr sandbox rm ${name}\n`);
    }
    if (passwordFile) await rm(passwordFile, { force: true }).catch(() => {});
    dispose();
  }
  const tEnd = performance.now();
  const s = (ms: number) => Math.round(ms) / 1000;
  return {
    id: randomUUID(),
    backupId: o.backupId,
    host: o.record.hostId,
    sourceInstance: o.record.sourceInstance,
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

/**
 * Sandboxes of drills whose process is gone (killed with -9, a power cut): removed, and a restore workflow left
 * unfinished on one is marked failed so `cbr resume` does not take it up.
 */
export async function removeStaleDrillSandboxes(env: NodeJS.ProcessEnv): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await listSandboxes(env)) {
    const m = DRILL_SANDBOX_RE.exec(name);
    if (!m) continue;
    const ownerFile = join(instanceDir(name, env), OWNER_FILE);
    const token = existsSync(ownerFile) ? readFileSync(ownerFile, 'utf8').trim() : null;
    if (ownerAlive(token, Number(m[1]))) continue;
    await removeSandbox(name, env);
    removed.push(name);
  }
  if (removed.length && existsSync(stateDbPath(env))) {
    const db = new StateDb(stateDbPath(env));
    try {
      for (const w of db.list({ status: 'active' })) {
        const path = (w.input as { profilePath?: string }).profilePath ?? '';
        if (removed.some((n) => path === join(instanceDir(n, env), 'profile.json'))) db.save(w.id, 'error', w.state, w.snapshot);
      }
    } finally {
      db.close();
    }
  }
  return removed;
}

function printHuman(io: DrillOptions['io'], r: DrillResult): void {
  io.stdout(`drill of backup ${r.backupId} (host ${r.host}, ${r.sourceInstance}): ${r.ok ? 'PASS' : 'FAIL'}\n`);
  for (const c of r.checks)
    io.stdout(
      `  ${c.ok ? 'ok  ' : 'FAIL'} ${c.kind.padEnd(8)} ${c.name}${c.ok ? '' : `: expected ${c.expected}, got ${c.actual}`}${c.kind === 'rows' && c.ok ? ` = ${c.actual}` : ''}\n`,
    );
  if (!r.rowCountsRecorded) io.stdout('  row counts were not recorded with this backup: keyspaces and tables checked only\n');
  for (const n of r.notCounted) io.stdout(`  rows of ${n.table} not compared: ${n.note}\n`);
  io.stdout(
    `restore ${r.seconds.restore.toFixed(1)} s, checks ${r.seconds.checks.toFixed(1)} s, cleanup ${r.seconds.cleanup.toFixed(1)} s, total ${r.seconds.total.toFixed(1)} s\n`,
  );
  if (!r.sandboxRemoved) io.stdout(`sandbox ${r.sandbox} was NOT removed\n`);
}
