import { checkId, latestBackupId, readRecord } from '../../catalog/catalog.ts';
import { CbrError, fromErrorInfo } from '../../core/errors.ts';
import { drillSample } from '../../metrics/metrics.ts';
import { DrillLog } from '../../state/drillLog.ts';
import { StateDb } from '../../state/stateDb.ts';
import { openStore } from '../../storage/open.ts';
import { type DrillResult, pairChecks, runDrill } from '../../workflows/drill.ts';
import { type BusValues, busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { metricsOptions, recordRun, runLocally, stateDbPath, storageConfig, storageOptions } from '../context.ts';
import { drillSandboxes } from '../drillSandboxes.ts';
import { type CliIO, printJson } from '../io.ts';
import { onInterrupt } from '../signals.ts';

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
    ...jsonOption,
    ...storageOptions,
    ...metricsOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: [
    'Exit status 0 when every check passed; CBR_ERR_DRILL_FAILED when a check failed; a failed restore exits with its own code.',
    'Sandboxes of drills killed with -9 (drill-<pid>-<hex>) are removed by the next drill.',
    '--host: with --last, only this host; with --latest, the newest backup of this host; with --bus, the agent that drills (on its',
    "machine, against its storage; with --latest, its own host's newest backup), and the drill is kept in that host's state database.",
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
    if (values.bus) return overBus(io, values, values.latest ? undefined : checkId(id ?? ''), userChecks);
    const storage = storageConfig(values, io.env);
    const backupId = values.latest ? await latestBackupId(openStore(storage), values.host) : checkId(id ?? '');
    const record = await readRecord(openStore(storage), backupId);

    // Ctrl-C or SIGTERM: the restore rolls back (runLocally cancels it), the sandbox is removed, the drill ends CBR_ERR_ABORTED.
    const abort = new AbortController();
    const dispose = onInterrupt(() => abort.abort());
    const result = await runDrill(
      {
        backupId,
        record,
        userChecks,
        storage,
        decryptKeyFile: values['decrypt-key-file'],
        decryptKeyEnv: values['decrypt-key-env'],
        env: io.env,
        signal: abort.signal,
        warn: (m) => io.stderr(`warning: ${m}\n`),
      },
      {
        sandboxes: drillSandboxes(io.env),
        restore: (input) => runLocally(io, values.json, input.workflowId, (runtime) => runtime.startRestore(input)),
      },
    ).finally(dispose);
    const db = new StateDb(stateDbPath(io.env));
    try {
      new DrillLog(db.db).record(result);
    } finally {
      db.close();
    }
    await recordRun(io, values['metrics-textfile'], drillSample(result));
    if (values.json) printJson(io, result);
    else printHuman(io, result);
    if (result.ok) return 0;
    const error = result.error ?? { code: 'CBR_ERR_DRILL_FAILED', message: 'drill failed', retryable: false };
    io.stderr(`cbr drill: ${error.code}: ${error.message}\n`);
    return fromErrorInfo(error).exitCode;
  },
});

async function overBus(
  io: CliIO,
  values: BusValues & { json: boolean; 'decrypt-key-file'?: string | undefined; 'decrypt-key-env'?: string | undefined },
  backupId: string | undefined,
  checks: ReturnType<typeof pairChecks>,
): Promise<number> {
  const { result } = await runOverBus(
    io,
    values,
    {
      type: 'backup.drill',
      payload: {
        ...(backupId ? { backupId } : { latest: true, host: values.host }),
        ...(checks.length ? { checks: checks.map((c) => ({ cql: c.cql, expect: c.expect })) } : {}),
        ...(values['decrypt-key-file'] ? { decryptKeyFile: values['decrypt-key-file'] } : {}),
        ...(values['decrypt-key-env'] ? { decryptKeyEnv: values['decrypt-key-env'] } : {}),
      },
    },
    values.json,
    // A drill that ran and failed: its checks are shown as a local drill's are, then its code ends the command.
    (failed) => {
      const r = failed.result as unknown as DrillResult | undefined;
      if (!r?.checks) return;
      if (values.json) printJson(io, r);
      else printHuman(io, r);
    },
  );
  const r = result as unknown as DrillResult;
  if (values.json) printJson(io, r);
  else printHuman(io, r);
  return 0;
}

function printHuman(io: CliIO, r: DrillResult): void {
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
