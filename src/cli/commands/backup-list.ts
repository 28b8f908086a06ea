import { existsSync } from 'node:fs';
import { type BackupRecord, listRecords } from '../../catalog/catalog.ts';
import { type ClusterRecordScan, clusterOwning, isProtectedPart, scanClusterRecords } from '../../catalog/clusterRecord.ts';
import { StateDb } from '../../state/stateDb.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { openStorage, stateDbPath, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';
import { formatBytes } from '../progress.ts';

export const command = defineCommand('backup-list', {
  summary: "List COMPLETED backups in storage (--all adds this host's unfinished and failed workflows; --clusters lists cluster backups).",
  options: {
    all: { type: 'boolean', default: false, description: "also this host's unfinished (BUILDING) and FAILED backups, from its state database" },
    clusters: {
      type: 'boolean',
      default: false,
      description: 'list cluster backups instead: each with its hosts, its parts and their total size; RUNNING while its coordinator works',
    },
    ...jsonOption,
    ...storageOptions,
  },
  async run({ values }, io) {
    const store = openStorage(values, io.env);
    const [records, scan] = await Promise.all([listRecords(store), scanClusterRecords(store)]);
    if (values.clusters) {
      const rows = clusterRows(scan, records);
      if (values.json) printJson(io, rows);
      else io.stdout(clusterTable(rows));
      return 0;
    }
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
      /** The cluster backup this backup is a part of (a running or unreadable one too), or null. */
      clusterBackup: clusterOwning(scan.records, r.id)?.id ?? isProtectedPart(scan.protectedIds, r.id),
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
    const parts = rows.filter((r) => r.clusterBackup !== null).length;
    if (parts > 0) io.stdout(`${parts} of these are parts of cluster backups (<id>-<n>): cbr backup-list --clusters lists them.\n`);
    return 0;
  },
});

export interface ClusterRow {
  id: string;
  /** COMPLETED (its record is written), RUNNING (its coordinator's marker is there, no record yet) or UNREADABLE. */
  state: 'COMPLETED' | 'RUNNING' | 'UNREADABLE';
  name: string;
  clusterName: string;
  strategy: string;
  created: string;
  hosts: { host: string; backupId: string; address: string; datacenter: string; rack: string }[];
  /** Sum of the stored sizes of the parts found in storage. */
  size: number;
  /** Parts the record names that storage does not hold (a delete killed midway): the backup cannot be restored whole. */
  missingParts: string[];
}

/** One row per cluster backup: recorded ones first (oldest first), then those running or unreadable, by id. */
export function clusterRows(scan: ClusterRecordScan, records: readonly BackupRecord[]): ClusterRow[] {
  const clusters = scan.records;
  const byId = new Map(records.map((r) => [r.id, r]));
  const rows: ClusterRow[] = clusters.map((c) => ({
    id: c.id,
    state: 'COMPLETED',
    name: c.name,
    clusterName: c.clusterName,
    strategy: c.strategy,
    created: c.created,
    hosts: c.hosts.map(({ host, backupId, address, datacenter, rack }) => ({ host, backupId, address, datacenter, rack })),
    size: c.hosts.reduce((sum, h) => sum + (byId.get(h.backupId)?.size ?? 0), 0),
    missingParts: c.hosts.filter((h) => !byId.has(h.backupId)).map((h) => h.backupId),
  }));
  for (const id of scan.protectedIds) {
    if (clusters.some((c) => c.id === id)) continue;
    const parts = records.filter((r) => isProtectedPart([id], r.id));
    rows.push({
      id,
      state: scan.unreadable.includes(id) ? 'UNREADABLE' : 'RUNNING',
      name: parts[0]?.name ?? '',
      clusterName: parts[0]?.clusterName ?? '',
      strategy: parts[0] ? strategyOf(parts[0]).strategy : '',
      created: parts[0]?.created ?? '',
      hosts: [],
      size: parts.reduce((sum, r) => sum + r.size, 0),
      missingParts: [],
    });
  }
  return rows;
}

function clusterTable(rows: readonly ClusterRow[]): string {
  const lines = [['ID', 'NAME', 'STATE', 'CREATED', 'STRATEGY', 'HOSTS', 'SIZE', 'CLUSTER']];
  for (const r of rows) {
    const hosts = r.hosts.length > 0 ? `${r.hosts.length}${r.missingParts.length > 0 ? ` (missing ${r.missingParts.join(', ')})` : ''}` : '-';
    lines.push([r.id, r.name, r.state, r.created, r.strategy || '-', hosts, formatBytes(r.size), r.clusterName || '-']);
  }
  return table(lines);
}

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
