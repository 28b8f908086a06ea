import { CbrError } from '../core/errors.ts';

/**
 * The one check of an archive entry name, run when a backup is packed and again when it is unpacked, so a
 * snapshot file that a restore would refuse stops the backup before anything is recorded.
 *
 * The shapes are those of a Cassandra 5.0 data directory: `<keyspace>/<table>-<32 hex id>/<file>` or
 * `.../.<index>/<file>` (legacy secondary indexes). File names cover every 5.0 component: BIG and BTI
 * (`nb-1-big-Data.db`, `da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-Partitions.db`), SAI with `+` separators
 * (`...-SAI+aa+GroupComplete.db`, `...-SAI+aa+idx+TermsData.db`), `manifest.json` and `schema.cql`.
 */
const ENTRY_RE = /^[A-Za-z0-9_]{1,48}\/[A-Za-z0-9_]{1,222}-[0-9a-f]{32}\/(?:\.[A-Za-z0-9_]{1,222}\/)?[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$/;

/** Why `name` may not be an archive entry, or null when it may. */
export function entryProblem(name: string): string | null {
  if (name.startsWith('/')) return 'absolute path';
  if (name.includes('\\') || name.includes('\0')) return 'backslash or NUL in path';
  if (name.split('/').some((p) => p === '..' || p === '.' || p === '')) return "'..', '.' or empty path segment";
  if (!ENTRY_RE.test(name)) return 'path does not fit the data-directory layout <keyspace>/<table>-<id>/[.<index>/]<file>';
  return null;
}

/** The key of the table directory an entry belongs to: `<keyspace>/<table>-<id>`. */
export function tableKey(name: string): string {
  const [keyspace, table] = name.split('/');
  return `${keyspace}/${table}`;
}

/** Refuses, at pack time, a list of entries of which a restore would refuse one (or a duplicate). */
export function checkPackEntries(names: Iterable<string>): void {
  const seen = new Set<string>();
  for (const name of names) {
    const problem = entryProblem(name) ?? (seen.has(name) ? 'two snapshot files map to the same archive path' : null);
    if (problem) {
      throw new CbrError(
        'CBR_ERR_BACKUP_UNRESTORABLE',
        `snapshot file ${JSON.stringify(name.slice(0, 200))} could not be restored (${problem}); nothing was recorded`,
      );
    }
    seen.add(name);
  }
}
