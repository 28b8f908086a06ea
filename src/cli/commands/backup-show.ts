import { existsSync } from 'node:fs';
import { describeDataSettings } from '../../cassandra/dataSettings.ts';
import { checkId, listRecords, readRecord } from '../../catalog/catalog.ts';
import { findClusterRecord, scanClusterRecords } from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import { StateDb } from '../../state/stateDb.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { openStorage, stateDbPath, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';
import { formatBytes } from '../progress.ts';
import { clusterRows, strategyOf } from './backup-list.ts';

export const command = defineCommand('backup-show', {
  summary: 'Show one backup: strategy, size, new and shared bytes, checksum, source, keyspaces; a cluster backup with its parts; or an unfinished one.',
  args: '<id>',
  options: {
    files: { type: 'boolean', default: false, description: 'also list every file of the archive with its size' },
    ...jsonOption,
    ...storageOptions,
  },
  async run({ values, positionals }, io) {
    const id = checkId(positionals[0] ?? '');
    try {
      const rec = await readRecord(openStorage(values, io.env), id);
      const how = strategyOf(rec);
      if (values.json) {
        printJson(io, { ...rec, ...how, ...(values.files ? {} : { files: undefined }) });
        return 0;
      }
      const newFiles = rec.files.filter((f) => !f.shared).length;
      const files = (n: number) => `${n} file${n === 1 ? '' : 's'}`;
      const fields: [string, string][] = [
        ['id', rec.id],
        ['name', rec.name],
        ['description', rec.description],
        ['state', rec.state],
        ['created', rec.created],
        ['source', `${rec.sourceInstance} (cluster ${rec.clusterName}, Cassandra ${rec.cassandraVersion})`],
        ['strategy', how.strategy === 'incremental' ? `incremental (${how.parent ? `parent ${how.parent}` : 'no parent: the first of this node'})` : 'full'],
        ['size', `${formatBytes(rec.size)} (${rec.size} bytes; ${formatBytes(rec.rawBytes)} before compression)`],
        ['new', `${formatBytes(how.newBytes)} in ${files(newFiles)}${rec.newStoredBytes === undefined ? '' : ` (${formatBytes(rec.newStoredBytes)} stored)`}`],
        ['shared', `${formatBytes(how.sharedBytes)} in ${files(rec.fileCount - newFiles)} already stored by earlier backups`],
        ['checksum', `sha256:${rec.sha256}`],
        ['compression', rec.compression],
        ['encryption', rec.encryption ? `${rec.encryption.algorithm} (key ${rec.encryption.keyFingerprint})` : 'none'],
        ['files', String(rec.fileCount)],
        ['keyspaces', rec.keyspaces.join(', ') || '(none)'],
        ['object', rec.object],
        ['settings', rec.settings ? describeDataSettings(rec.settings).join(', ') : '(not recorded: an older backup)'],
      ];
      io.stdout(`${fields.map(([k, v]) => `${k.padEnd(12)} ${v}`).join('\n')}\n`);
      if (values.files) io.stdout(`${rec.files.map((f) => `  ${f.path} ${f.size}`).join('\n')}\n`);
      return 0;
    } catch (err) {
      if (!(err instanceof CbrError && err.code === 'CBR_ERR_BACKUP_NOT_FOUND')) throw err;
      const store = openStorage(values, io.env);
      if (await findClusterRecord(store, id)) {
        const [records, scan] = await Promise.all([listRecords(store), scanClusterRecords(store)]);
        const row = clusterRows(scan, records).find((r) => r.id === id);
        if (row) {
          if (values.json) printJson(io, row);
          else {
            const hosts = row.hosts.map(
              (h) => `  ${h.backupId}  ${h.host} ${h.address} (${h.datacenter}/${h.rack})${row.missingParts.includes(h.backupId) ? '  MISSING' : ''}`,
            );
            io.stdout(
              `id          ${row.id}\nname        ${row.name}\nkind        cluster backup of ${row.clusterName}, ${row.hosts.length} hosts\n` +
                `state       ${row.state}\ncreated     ${row.created}\nstrategy    ${row.strategy}\nsize        ${formatBytes(row.size)} (${row.size} bytes)\n` +
                `parts\n${hosts.join('\n')}\n`,
            );
          }
          return row.missingParts.length > 0 ? 1 : 0;
        }
      }
      // Not in storage: maybe this host knows it as an unfinished or failed workflow.
      if (!existsSync(stateDbPath(io.env))) throw err;
      const db = new StateDb(stateDbPath(io.env));
      const w = db.get(id);
      db.close();
      if (w?.kind !== 'backup' || w.state === 'completed') throw err;
      const ctx = (w.snapshot as { context?: { error?: unknown; warnings?: string[] } }).context ?? {};
      const out = { id, state: w.status === 'done' ? 'FAILED' : 'BUILDING', step: w.state, error: ctx.error ?? null, updated: w.updatedAt };
      if (values.json) printJson(io, out);
      else io.stdout(`id          ${id}\nstate       ${out.state} (${out.step})\nerror       ${JSON.stringify(out.error)}\nupdated     ${out.updated}\n`);
      return out.state === 'FAILED' ? 1 : 0;
    }
  },
});
