import type { DatabaseSync } from 'node:sqlite';

/**
 * Restore drills of this host, kept in its state database (table `drills`): "when did a restore of this node last
 * succeed" is a query here. A row per finished drill, the whole result as JSON beside the columns queried.
 */

/** The fields of a drill result the log needs; the rest is kept as it is. */
export interface DrillRow {
  id: string;
  backupId: string;
  host: string;
  ok: boolean;
  startedAt: string;
  finishedAt: string;
  seconds: { total: number };
}

export class DrillLog {
  private readonly db: DatabaseSync;

  constructor(db: DatabaseSync) {
    this.db = db;
    db.exec(`
      CREATE TABLE IF NOT EXISTS drills (
        id TEXT PRIMARY KEY,
        backup_id TEXT NOT NULL,
        host TEXT NOT NULL,
        ok INTEGER NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT NOT NULL,
        result TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS drills_host_finished ON drills (host, finished_at);
    `);
  }

  record<T extends DrillRow>(result: T): void {
    this.db
      .prepare('INSERT OR REPLACE INTO drills (id, backup_id, host, ok, started_at, finished_at, result) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(result.id, result.backupId, result.host, result.ok ? 1 : 0, result.startedAt, result.finishedAt, JSON.stringify(result));
  }

  /** The newest drill per host (optionally one host), and the newest that passed. */
  last(host?: string): { host: string; last: DrillRow; lastOk: DrillRow | null }[] {
    const hosts = host ? [host] : (this.db.prepare('SELECT DISTINCT host FROM drills ORDER BY host').all() as { host: string }[]).map((r) => r.host);
    const out: { host: string; last: DrillRow; lastOk: DrillRow | null }[] = [];
    for (const h of hosts) {
      const last = this.db.prepare('SELECT result FROM drills WHERE host = ? ORDER BY finished_at DESC LIMIT 1').get(h) as { result: string } | undefined;
      if (!last) continue;
      const ok = this.db.prepare('SELECT result FROM drills WHERE host = ? AND ok = 1 ORDER BY finished_at DESC LIMIT 1').get(h) as
        | { result: string }
        | undefined;
      out.push({ host: h, last: JSON.parse(last.result) as DrillRow, lastOk: ok ? (JSON.parse(ok.result) as DrillRow) : null });
    }
    return out;
  }
}
