import { resolve } from 'node:path';
import { runCommand } from '../../bus/client.ts';
import { checkId } from '../../catalog/catalog.ts';
import { bucketsFor, type VerifyResult, verdictCode, verdictMessage } from '../../catalog/verify.ts';
import { CbrError, ERRORS, fromErrorInfo, isErrorCode } from '../../core/errors.ts';
import { runSample } from '../../metrics/metrics.ts';
import { runVerify, type VerifyRequest } from '../../workflows/verifyRequest.ts';
import { type BusValues, busOptions, followOptions, livenessFor, noticeLine, outageDeadline, signingKey } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { metricsOptions, openStorage, recordRun, storageOptions } from '../context.ts';
import type { CliIO } from '../io.ts';
import { formatBytes, ProgressBar } from '../progress.ts';
import { onInterrupt } from '../signals.ts';

export const command = defineCommand('backup-verify', {
  summary: 'Check a backup in storage without a node: every object there at its size, or (--deep) every byte read back and checked.',
  args: '<id> | --latest [--host <host-id>]',
  options: {
    deep: {
      type: 'boolean',
      default: false,
      description: 'read every byte back: decrypt, decompress, check against the recorded SHA-256s and sizes',
    },
    sample: {
      type: 'string',
      placeholder: '<percent>',
      description: 'check about this share of the files (e.g. 10%); runs in a row take the next share, so ceil(100/percent) runs cover all',
    },
    latest: {
      type: 'boolean',
      default: false,
      description:
        'verify the newest completed backup (of the host --host names, else of any) instead of naming one: for schedules; with --bus, the newest of that host, found by its agent',
    },
    'decrypt-key-file': { type: 'string', placeholder: '<file>', description: 'the key the backup was sealed with, in this file (needed by --deep)' },
    'decrypt-key-env': { type: 'string', placeholder: '<var>', description: 'the key the backup was sealed with, in this environment variable' },
    ...jsonOption,
    ...storageOptions,
    ...metricsOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: [
    'Exit 0: the backup is whole. 16 (CBR_ERR_VERIFY_MISSING): objects are missing; 17 (CBR_ERR_VERIFY_CORRUPT): objects',
    'have another size or content. --json prints the report, every problem with the object, expected and found.',
    "A full backup's archive is one object and always checked whole; --sample applies to incremental backups' files.",
    "With --bus the host's agent verifies it against its storage, with a key path or variable of that host.",
  ],
  async run({ values, positionals }, io) {
    if (values.latest && positionals.length > 0) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--latest takes no <id>');
    if (values.sample !== undefined) bucketsFor(values.sample);
    // --latest is resolved where the verify runs (here, or by the agent): its sample cursor follows the host, not an id.
    const req = {
      ...(values.latest ? { latest: true, ...(values.host ? { host: values.host } : {}) } : { backupId: checkId(positionals[0] ?? '') }),
      deep: values.deep,
      sample: values.sample,
      decryptKeyFile: values['decrypt-key-file'],
      decryptKeyEnv: values['decrypt-key-env'],
    };
    let result: VerifyResult;
    if (values.bus) result = await overBus(io, values, req);
    else {
      const bar = io.isTTY && !values.json ? new ProgressBar(io.stderr) : null;
      bar?.step(values.deep ? 'verifying (deep)' : 'verifying');
      const abort = new AbortController();
      const dispose = onInterrupt(() => abort.abort());
      try {
        result = await runVerify(openStorage(values, io.env), req, {
          env: io.env,
          signal: abort.signal,
          onProgress: (p) => bar?.update(p.bytes, p.totalBytes),
        });
      } catch (err) {
        if (abort.signal.aborted) throw new CbrError('CBR_ERR_ABORTED', 'verify interrupted');
        throw err;
      } finally {
        dispose();
        bar?.end();
      }
      await recordRun(io, values['metrics-textfile'], runSample('verify', { ...result, code: verdictCode(result) ?? '' }));
    }
    return report(io, result, values.json);
  },
});

/** Prints the report; the exit status is the verdict's. */
function report(io: CliIO, r: VerifyResult, json: boolean): number {
  const code = verdictCode(r);
  if (json) io.stdout(`${JSON.stringify({ ...r, ...(code ? { error: { code, message: verdictMessage(r), retryable: false } } : {}) }, null, 2)}\n`);
  else {
    const what = `${r.strategy} backup ${r.id} of ${r.sourceInstance}`;
    const scope = r.sample ? `bucket ${r.sample.bucket + 1} of ${r.sample.buckets} (${(r.sampledFraction * 100).toFixed(1)}% of its bytes)` : 'whole';
    const read = r.deep ? `, ${formatBytes(r.bytesRead)} read back` : '';
    io.stdout(`${what}: ${r.deep ? 'deep' : 'shallow'} check, ${scope}, ${r.objects} objects, ${r.files} files${read}, ${r.seconds.toFixed(1)} s\n`);
    for (const p of r.problems) io.stdout(`  ${p.kind.padEnd(10)} ${p.message}\n`);
    io.stdout(r.ok ? 'OK\n' : `FAILED: ${code}\n`);
  }
  if (code) io.stderr(`cbr backup-verify: ${code}: ${verdictMessage(r)}\n`);
  return code ? ERRORS[code].exit : 0;
}

async function overBus(io: CliIO, values: BusValues & { json: boolean }, req: VerifyRequest & { deep: boolean }): Promise<VerifyResult> {
  if (!values.host) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--host is required with --bus');
  const bar = io.isTTY && !values.json ? new ProgressBar(io.stderr) : null;
  const deadlineMs = outageDeadline(values, io.env);
  const payload = {
    ...(req.latest ? { latest: true, host: values.host } : { backupId: req.backupId }),
    deep: req.deep,
    ...(req.sample !== undefined ? { sample: req.sample } : {}),
    // The agent reads the key on its host: a path there, never the key.
    ...(req.decryptKeyFile ? { decryptKeyFile: resolve(req.decryptKeyFile) } : {}),
    ...(req.decryptKeyEnv ? { decryptKeyEnv: req.decryptKeyEnv } : {}),
  };
  bar?.step('verifying');
  const e = await runCommand({
    url: values.bus!,
    prefix: values.prefix ?? '',
    draft: { type: 'backup.verify', host: values.host, payload },
    signingKey: await signingKey(values['signing-key-file']),
    outageDeadlineMs: deadlineMs,
    liveness: livenessFor('backup.verify', io.env)!,
    onNotice: (n) => io.stderr(`cbr: ${noticeLine(n, deadlineMs)}\n`),
    onEvent: (ev) => {
      if (ev.type === 'progress' && ev.progress) bar?.update(ev.progress.bytes, ev.progress.totalBytes);
    },
  }).finally(() => bar?.end());
  const verdict = e.result as VerifyResult | undefined;
  // A verify that ran has its report, passed or not; anything else (refused, no such backup, wrong key) is its error.
  if (e.type === 'result' && verdict && typeof verdict.ok === 'boolean' && Array.isArray(verdict.problems)) return verdict;
  const err = e.error;
  if (err && isErrorCode(err.code)) throw fromErrorInfo({ ...err, code: err.code });
  throw new CbrError('CBR_ERR_INTERNAL', `backup.verify ended ${e.state ?? e.type}`);
}
