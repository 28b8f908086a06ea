import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { maintenanceEndpoint } from '../../cassandra/configFiles.ts';
import { CbrError } from '../../core/errors.ts';
import { removeTree } from '../../core/removeTree.ts';
import type { PartsStepInput } from '../../machines/restore.machine.ts';
import { type RestoreDeps, restorePaths } from './restoreDeps.ts';

const TABLE_DIR = /^([A-Za-z0-9_]{1,48})-[0-9a-f]{32}$/;

/**
 * On the maintenance start (no client can reach the node): `nodetool import` of every other part's tables, one call
 * per table naming that table's folder in every part. Cassandra moves each SSTable into the live table under a new
 * id from the table's own generator (ColumnFamilyStore.getUniqueDescriptorFor), so the ids the hosts share (every
 * node's first SSTable is `nb-1-big` with sequential ids) never collide; it verifies each SSTable and that this
 * node owns its tokens (it owns the whole ring: the first part's peers were dropped). Re-run after a crash, the
 * SSTables already moved in are gone from the staging folders and only those left are imported. Then the staging
 * folders go.
 */
export async function importParts(deps: RestoreDeps, { ctx, parts }: PartsStepInput, signal: AbortSignal): Promise<{ tables: number; dirs: number }> {
  const paths = restorePaths(deps.profile, ctx.workflowId);
  // Up on its maintenance configuration (also when this re-runs after a crash or a reboot): start() waits for CQL.
  await deps.service.start(signal, maintenanceEndpoint(await readFile(paths.yaml, 'utf8')));
  const byTable = new Map<string, { keyspace: string; table: string; dirs: string[] }>();
  for (const [i, part] of parts.parts.entries()) {
    const partRoot = join(paths.parts, String(i + 2));
    for (const keyspace of part.keyspaces) {
      for (const name of await listDir(join(partRoot, keyspace))) {
        const m = TABLE_DIR.exec(name);
        if (!m) continue;
        const dir = join(partRoot, keyspace, name);
        const files = await listDir(dir);
        // Secondary-index SSTables (`.<index>/` folders) are not imported: the import builds the indexes of what it
        // loads, from the rows themselves.
        for (const f of files.filter((n) => n.startsWith('.'))) await removeTree(join(dir, f));
        // Nothing (left) to import: an empty table, or one a killed run imported already.
        if (!files.some((f) => f.endsWith('-Data.db'))) continue;
        const key = `${keyspace}.${m[1]}`;
        const entry = byTable.get(key) ?? { keyspace, table: m[1]!, dirs: [] };
        entry.dirs.push(dir);
        byTable.set(key, entry);
      }
    }
  }
  let dirs = 0;
  for (const { keyspace, table, dirs: from } of byTable.values()) {
    signal.throwIfAborted();
    let failed: string[];
    try {
      failed = await deps.nodetool.importSSTables(keyspace, table, from, signal);
    } catch (err) {
      if (err instanceof CbrError && err.code === 'CBR_ERR_ABORTED') throw err;
      throw new CbrError('CBR_ERR_IMPORT_FAILED', `nodetool import of ${keyspace}.${table} failed: ${(err as Error).message}`);
    }
    if (failed.length) throw new CbrError('CBR_ERR_IMPORT_FAILED', `nodetool import of ${keyspace}.${table} refused ${failed.join(', ')}`);
    const left = [];
    for (const dir of from) if ((await listDir(dir)).some((f) => f.endsWith('-Data.db'))) left.push(dir);
    if (left.length) throw new CbrError('CBR_ERR_IMPORT_FAILED', `nodetool import of ${keyspace}.${table} left SSTables in ${left.join(', ')}`);
    dirs += from.length;
    deps.log.info('imported', { keyspace, table, dirs: from.length });
  }
  await removeTree(paths.parts);
  return { tables: byTable.size, dirs };
}

async function listDir(dir: string): Promise<string[]> {
  return readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return [] as string[];
    throw err;
  });
}
