import { existsSync } from 'node:fs';
import { listRecords } from '../../catalog/catalog.ts';
import { StateDb } from '../../state/stateDb.ts';
import { commonOptions, openStorage, stateDbPath } from '../context.ts';
import { type Command, parse, printJson } from '../io.ts';
import { formatBytes } from '../progress.ts';

const usage = 'cbr backup-list [--all] [--storage-root DIR] [--json]';

export const command: Command = {
  summary: "List COMPLETED backups in storage (--all adds this host's unfinished and failed workflows).",
  usage,
  async run(argv, io) {
    const { values } = parse(argv, { ...commonOptions, all: { type: 'boolean', default: false } }, usage);
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
    const lines = [['ID', 'NAME', 'STATE', 'CREATED', 'SIZE', 'CLUSTER']];
    for (const r of rows) lines.push([r.id, r.name, r.state, r.created, formatBytes(r.size), r.clusterName]);
    for (const u of unfinished) lines.push([u.id, u.name, u.state, u.created, '-', u.step]);
    io.stdout(table(lines));
    return 0;
  },
};

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
