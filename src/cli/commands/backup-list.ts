import { existsSync } from 'node:fs';
import { type BackupRecord, listRecords } from '../../catalog/catalog.ts';
import { StateDb } from '../../state/stateDb.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { openStorage, stateDbPath, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';
import { formatBytes } from '../progress.ts';

export const command = defineCommand('backup-list', {
  summary: "List COMPLETED backups in storage (--all adds this host's unfinished and failed workflows).",
  options: {
    all: { type: 'boolean', default: false, description: "also this host's unfinished (BUILDING) and FAILED backups, from its state database" },
    ...jsonOption,
    ...storageOptions,
  },
  async run({ values }, io) {
    const records = await listRecords(openStorage(values, io.env));
    const rows = records.map((r) => ({
      id: r.id,
      name: r.name,
      state: r.state,
      created: r.created,
      size: r.size,
      clusterName: r.clusterName,
      sourceInstance: r.sourceInstance,
      compression: r.compression,
      encrypted: r.encryption !== null,
      ...strategyOf(r),
    }));
    const unfinished: { id: string; name: string; state: string; created: string; step: string }[] = [];
    if (values.all && existsSync(stateDbPath(io.env))) {
      const db = new StateDb(stateDbPath(io.env));
      try {
        for (const w of db.list({ kind: 'backup' })) {
          if (records.some((r) => r.id === w.id)) continue;
          const failed = w.status === 'done';
          unfinished.push({
            id: w.id,
            name: String((w.input as { name?: string }).name ?? ''),
            state: failed ? 'FAILED' : 'BUILDING',
            created: w.createdAt,
            step: w.state,
          });
        }
      } finally {
        db.close();
      }
    }
    if (values.json) {
      printJson(io, values.all ? [...rows, ...unfinished] : rows);
      return 0;
    }
    const lines = [['ID', 'NAME', 'STATE', 'CREATED', 'STRATEGY', 'PARENT', 'SIZE', 'NEW', 'SHARED', 'CLUSTER']];
    for (const r of rows) {
      lines.push([
        r.id,
        r.name,
        r.state,
        r.created,
        r.strategy,
        r.parent ?? '-',
        formatBytes(r.size),
        formatBytes(r.newBytes),
        formatBytes(r.sharedBytes),
        r.clusterName,
      ]);
    }
    for (const u of unfinished) lines.push([u.id, u.name, u.state, u.created, '-', '-', '-', '-', '-', u.step]);
    io.stdout(table(lines));
    return 0;
  },
});

/**
 * How a backup stored its files, for every record alike: one written before strategies (format 1 and 2) is a
 * full backup, whose bytes are all its own (new) and shares none with earlier backups.
 */
export function strategyOf(r: BackupRecord): { strategy: 'full' | 'incremental'; parent: string | null; newBytes: number; sharedBytes: number } {
  if (r.strategy !== 'incremental') return { strategy: 'full', parent: r.parent ?? null, newBytes: r.rawBytes, sharedBytes: 0 };
  return { strategy: 'incremental', parent: r.parent ?? null, newBytes: r.newBytes ?? 0, sharedBytes: r.sharedBytes ?? 0 };
}

export function table(lines: string[][]): string {
  const widths = lines[0]!.map((_, i) => Math.max(...lines.map((l) => (l[i] ?? '').length)));
  return `${lines
    .map((l) =>
      l
        .map((c, i) => c.padEnd(widths[i]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n')}\n`;
}
