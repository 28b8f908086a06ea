import { readFile } from 'node:fs/promises';
import { writeFileAtomic } from '../core/atomicWrite.ts';

/**
 * Which bucket the next sampled verify takes: `$CBR_HOME/verify-samples.json`, one entry per store, scope and bucket
 * count. The scope is the backup's id for a fixed id, and `latest:<host>` (`latest:*` for any host) for `--latest`:
 * each night's new backup then takes the bucket after the last night's, and as a blob keeps its bucket from one
 * backup to the next (verify.ts bucketOf), `buckets` nights cover every blob that lives that long. A run that finished
 * (whatever it found) moves the cursor on; an aborted or failed run does not, so the bucket is taken again. A
 * changed --sample starts over.
 */

const MAX_ENTRIES = 10_000;

type Cursors = Record<string, { next: number; at: string }>;

function entryKey(store: string, scope: string, buckets: number): string {
  return `${store}|${scope}|${buckets}`;
}

async function load(path: string): Promise<Cursors> {
  try {
    const value = JSON.parse(await readFile(path, 'utf8')) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value) ? (value as Cursors) : {};
  } catch {
    // Absent or unreadable: start at bucket 0 (the worst case is a bucket checked twice).
    return {};
  }
}

/** The scope of a verify of the newest backup (of `host`, or of any host). */
export function latestScope(host: string | undefined): string {
  return `latest:${host ?? '*'}`;
}

export async function nextBucket(path: string, store: string, scope: string, buckets: number): Promise<number> {
  const e = (await load(path))[entryKey(store, scope, buckets)];
  const n = e && Number.isInteger(e.next) ? e.next : 0;
  return ((n % buckets) + buckets) % buckets;
}

export async function advanceBucket(path: string, store: string, scope: string, buckets: number, done: number): Promise<void> {
  const all = await load(path);
  all[entryKey(store, scope, buckets)] = { next: (done + 1) % buckets, at: new Date().toISOString() };
  const keys = Object.keys(all);
  // Oldest first out: deleted backups' cursors do not pile up forever.
  if (keys.length > MAX_ENTRIES) {
    for (const k of keys.sort((a, b) => (all[a]!.at < all[b]!.at ? -1 : 1)).slice(0, keys.length - MAX_ENTRIES)) delete all[k];
  }
  await writeFileAtomic(path, `${JSON.stringify(all, null, 1)}\n`, 0o600);
}
