import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadKey } from '../archive/crypto.ts';
import { checkId, latestBackupId } from '../catalog/catalog.ts';
import { advanceBucket, latestScope, nextBucket } from '../catalog/sampleCursor.ts';
import { bucketsFor, type VerifyProgress, type VerifyResult, verifyBackup } from '../catalog/verify.ts';
import { cbrHome } from '../core/paths.ts';
import type { ObjectStore } from '../storage/port.ts';
import { keySource } from './keySource.ts';

/**
 * A verify as `cbr backup-verify`'s options or a `backup.verify` payload ask for it, run in one place: the key
 * source, the backup (`latest`: the newest), the sample's bucket (from this host's cursor file, per backup or, with
 * `latest`, per host; moved on once the run finished), the verify itself.
 */
export interface VerifyRequest {
  /** The backup; absent with `latest`. */
  backupId?: string | undefined;
  /** The newest completed backup (of `host` when given, else of any host) instead of a fixed id: for schedules. */
  latest?: boolean | undefined;
  host?: string | undefined;
  deep?: boolean | undefined;
  /** A percentage (`10%`, `10`); absent: everything. */
  sample?: string | undefined;
  decryptKeyFile?: string | undefined;
  decryptKeyEnv?: string | undefined;
}

/** Where sampled verifies remember which bucket comes next. */
export function sampleCursorPath(env: NodeJS.ProcessEnv): string {
  return join(cbrHome(env), 'verify-samples.json');
}

export async function runVerify(
  store: ObjectStore,
  req: VerifyRequest,
  opts: { env: NodeJS.ProcessEnv; signal?: AbortSignal; onProgress?: (p: VerifyProgress) => void; concurrency?: number },
): Promise<VerifyResult> {
  const buckets = req.sample === undefined ? 1 : bucketsFor(req.sample);
  const source = keySource(req.decryptKeyFile, req.decryptKeyEnv, 'decrypt');
  const key = source ? await loadKey(source, opts.env) : null;
  const id = req.latest ? await latestBackupId(store, req.host, opts.signal) : checkId(req.backupId ?? '');
  const cursor = sampleCursorPath(opts.env);
  // --latest follows the host from one backup to the next (a new id each night would start at bucket 0 each time).
  const scope = req.latest ? latestScope(req.host) : id;
  const bucket = buckets > 1 ? await nextBucket(cursor, store.description, scope, buckets) : 0;
  // Fault-injection drills: a pause before reading, to widen the window for a kill mid-verify in tests.
  const delayMs = Number(opts.env['CBR_DRILL_VERIFY_DELAY_MS'] ?? 0) || 0;
  if (delayMs > 0) await sleep(delayMs, undefined, opts.signal ? { signal: opts.signal } : {});
  const result = await verifyBackup(store, id, {
    deep: req.deep ?? false,
    ...(buckets > 1 ? { sample: { bucket, buckets } } : {}),
    key,
    ...(opts.signal ? { signal: opts.signal } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
  });
  if (result.sample) {
    await mkdir(cbrHome(opts.env), { recursive: true });
    await advanceBucket(cursor, store.description, scope, buckets, bucket);
  }
  return result;
}
