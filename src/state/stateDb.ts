import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';

/**
 * The host's workflow database (node:sqlite, WAL): every transition of every machine is written here before
 * anything else happens, so a crash at any point resumes (or compensates) from the last persisted state.
 */

/** `clusterBackup`: a cluster backup's coordinator (src/machines/clusterBackup.machine.ts). */
export type WorkflowKind = 'backup' | 'restore' | 'clusterBackup';
export type WorkflowStatus = 'active' | 'done' | 'error' | 'stopped';

export interface WorkflowRow {
  id: string;
  kind: WorkflowKind;
  machineVersion: number;
  status: WorkflowStatus;
  /** The machine's state value as JSON, e.g. "streaming" or {"compensating":"clearingSnapshot"}. */
  state: string;
  snapshot: unknown;
  input: unknown;
  commandId: string | null;
  ownerPid: number | null;
  /** `<boot id>:<pid>:<start time>` of the owning process (see src/runtime/owner.ts); null in rows of older versions. */
  ownerToken?: string | null;
  createdAt: string;
  updatedAt: string;
}

/** A signed command id the agent has taken (see recordCommand). */
export type CommandOutcome = 'pending' | 'accepted' | 'failed';
export interface SeenCommand {
  id: string;
  type: string;
  outcome: CommandOutcome;
  seenAt: string;
  keepUntil: number;
}

/** 'pending': taken, its command not yet handled (a crash there feeds it again at the next start). */
export type ScheduleOutcome = 'pending' | 'started' | 'failed' | 'skipped';
export interface ScheduleRun {
  job: string;
  armedAt: string;
  lastInstant: string | null;
  lastOutcome: ScheduleOutcome | null;
  /** The command id of the job's latest run (the one an overlap check looks at). */
  runCommandId: string | null;
}

export interface TransitionRow {
  workflowId: string;
  seq: number;
  state: string;
  at: string;
}

export class StateDb {
  readonly db: DatabaseSync;

  /** `readOnly` opens an existing database for watching (tests, tools) without taking any write lock. */
  constructor(path: string, opts: { readOnly?: boolean } = {}) {
    if (opts.readOnly) {
      this.db = new DatabaseSync(path, { readOnly: true, timeout: 5000 });
      return;
    }
    if (path !== ':memory:') mkdirSync(dirname(path), { recursive: true });
    // The busy timeout comes first: switching to WAL (and creating tables) may wait for another process.
    this.db = new DatabaseSync(path, { timeout: 5000 });
    this.db.exec(`
      PRAGMA busy_timeout = 5000;
      PRAGMA journal_mode = WAL;
      PRAGMA synchronous = NORMAL;
      CREATE TABLE IF NOT EXISTS workflows (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        machine_version INTEGER NOT NULL,
        status TEXT NOT NULL,
        state TEXT NOT NULL,
        snapshot TEXT NOT NULL,
        input TEXT NOT NULL,
        command_id TEXT UNIQUE,
        owner_pid INTEGER,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
      );
      CREATE TABLE IF NOT EXISTS outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        routing_key TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at TEXT NOT NULL
      );
      CREATE TABLE IF NOT EXISTS transitions (
        workflow_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        state TEXT NOT NULL,
        at TEXT NOT NULL,
        PRIMARY KEY (workflow_id, seq)
      );
      CREATE TABLE IF NOT EXISTS command_ids (
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        outcome TEXT NOT NULL,
        seen_at TEXT NOT NULL,
        keep_until INTEGER NOT NULL
      );
      CREATE INDEX IF NOT EXISTS command_ids_keep_until ON command_ids (keep_until);
      CREATE TABLE IF NOT EXISTS side_runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        started_at TEXT NOT NULL
      );
      CREATE TABLE IF NOT EXISTS schedule_runs (
        job TEXT PRIMARY KEY,
        armed_at TEXT NOT NULL,
        last_instant TEXT,
        last_outcome TEXT,
        run_command_id TEXT,
        updated_at TEXT NOT NULL
      );
    `);
    this.migrate();
  }

  /** Adds columns that later versions introduced to a database an older version created. */
  private migrate(): void {
    const columns = new Set((this.db.prepare('PRAGMA table_info(workflows)').all() as { name: string }[]).map((c) => c.name));
    if (!columns.has('owner_token')) this.db.exec('ALTER TABLE workflows ADD COLUMN owner_token TEXT');
  }

  /**
   * Creates the workflow row; returns false when a workflow with this id or command id already exists.
   * `admit` sees every active workflow inside the same write transaction (BEGIN IMMEDIATE holds the database's
   * write lock, across processes too) and throws to refuse: a check and an insert nothing can come between.
   */
  create(row: Omit<WorkflowRow, 'createdAt' | 'updatedAt'>, admit?: (active: WorkflowRow[]) => void): boolean {
    const now = new Date().toISOString();
    this.db.exec('BEGIN IMMEDIATE');
    try {
      if (this.get(row.id) || (row.commandId !== null && this.byCommandId(row.commandId))) {
        this.db.exec('ROLLBACK');
        return false;
      }
      admit?.(this.list({ status: 'active' }));
      this.db
        .prepare(
          `INSERT INTO workflows (id, kind, machine_version, status, state, snapshot, input, command_id, owner_pid, owner_token, created_at, updated_at)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
        )
        .run(
          row.id,
          row.kind,
          row.machineVersion,
          row.status,
          row.state,
          JSON.stringify(row.snapshot),
          JSON.stringify(row.input),
          row.commandId,
          row.ownerPid,
          row.ownerToken ?? null,
          now,
          now,
        );
      this.addTransition(row.id, row.state, now);
      this.db.exec('COMMIT');
      return true;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** Persists a new snapshot; records a transition when the state value changed (and says so). */
  save(id: string, status: WorkflowStatus, state: string, snapshot: unknown): boolean {
    const now = new Date().toISOString();
    const prev = this.db.prepare('SELECT state FROM workflows WHERE id = ?').get(id) as { state: string } | undefined;
    this.db.exec('BEGIN IMMEDIATE');
    try {
      this.db
        .prepare('UPDATE workflows SET status = ?, state = ?, snapshot = ?, updated_at = ? WHERE id = ?')
        .run(status, state, JSON.stringify(snapshot), now, id);
      const transitioned = !prev || prev.state !== state;
      if (transitioned) this.addTransition(id, state, now);
      this.db.exec('COMMIT');
      return transitioned;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** The event outbox: events are written here in the same database, and deleted once the broker confirmed them. */
  /** Into the outbox; `endsRun` (a result's) leaves the side runs in the same transaction, so a crash keeps one or the other. */
  addEvent(routingKey: string, body: string, endsRun?: string): void {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      this.db.prepare('INSERT INTO outbox (routing_key, body, created_at) VALUES (?, ?, ?)').run(routingKey, body, new Date().toISOString());
      if (endsRun !== undefined) this.db.prepare('DELETE FROM side_runs WHERE id = ?').run(endsRun);
      this.db.exec('COMMIT');
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /**
   * A command that starts no persisted workflow (verify, prune, drill) runs: kept until its result is in the outbox
   * (addEvent's `endsRun`). One still here when the agent starts was cut short by the agent's death.
   */
  startSideRun(id: string, kind: string): void {
    this.db.prepare('INSERT INTO side_runs (id, kind, started_at) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING').run(id, kind, new Date().toISOString());
  }

  sideRuns(): { id: string; kind: string; startedAt: string }[] {
    const rows = this.db.prepare('SELECT * FROM side_runs ORDER BY started_at').all() as Record<string, unknown>[];
    return rows.map((r) => ({ id: String(r['id']), kind: String(r['kind']), startedAt: String(r['started_at']) }));
  }

  pendingEvents(limit = 200): { seq: number; routingKey: string; body: string }[] {
    const rows = this.db.prepare('SELECT seq, routing_key, body FROM outbox ORDER BY seq LIMIT ?').all(limit) as Record<string, unknown>[];
    return rows.map((r) => ({ seq: Number(r['seq']), routingKey: String(r['routing_key']), body: String(r['body']) }));
  }

  deleteEvents(seqs: number[]): void {
    if (seqs.length === 0) return;
    this.db.prepare(`DELETE FROM outbox WHERE seq IN (${seqs.map(() => '?').join(',')})`).run(...seqs);
  }

  countEvents(): number {
    return Number((this.db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n);
  }

  /** When the oldest event still in the outbox was written (ISO time), null when it is empty (metrics). */
  oldestEventAt(): string | null {
    const r = this.db.prepare('SELECT MIN(created_at) AS at FROM outbox').get() as { at: string | null } | undefined;
    return r?.at ?? null;
  }

  /** Active workflows counted by kind and state (metrics: one cheap query per scrape, no snapshot parsed). */
  activeByState(): { kind: string; state: string; count: number }[] {
    const rows = this.db.prepare("SELECT kind, state, COUNT(*) AS n FROM workflows WHERE status = 'active' GROUP BY kind, state").all() as {
      kind: string;
      state: string;
      n: number;
    }[];
    return rows.map((r) => ({ kind: r.kind, state: r.state, count: Number(r.n) }));
  }

  /**
   * For each kind, strategy (its input's, null when it has none) and final state, when the last such workflow ended:
   * the last successes and failures an agent starts its metrics from.
   */
  lastEnded(): { kind: string; strategy: string | null; state: string; at: string }[] {
    const rows = this.db
      .prepare(
        "SELECT kind, json_extract(input, '$.strategy') AS strategy, state, MAX(updated_at) AS at FROM workflows WHERE status = 'done' GROUP BY kind, json_extract(input, '$.strategy'), state",
      )
      .all() as { kind: string; strategy: unknown; state: string; at: string }[];
    return rows.map((r) => ({ kind: r.kind, strategy: typeof r.strategy === 'string' ? r.strategy : null, state: r.state, at: r.at }));
  }

  claim(id: string, pid: number, token: string | null = null): void {
    this.db.prepare('UPDATE workflows SET owner_pid = ?, owner_token = ? WHERE id = ?').run(pid, token, id);
  }

  get(id: string): WorkflowRow | undefined {
    const r = this.db.prepare('SELECT * FROM workflows WHERE id = ?').get(id) as Record<string, unknown> | undefined;
    return r ? toRow(r) : undefined;
  }

  byCommandId(commandId: string): WorkflowRow | undefined {
    const r = this.db.prepare('SELECT * FROM workflows WHERE command_id = ?').get(commandId) as Record<string, unknown> | undefined;
    return r ? toRow(r) : undefined;
  }

  list(filter: { kind?: WorkflowKind; status?: WorkflowStatus } = {}): WorkflowRow[] {
    const rows = this.db.prepare('SELECT * FROM workflows ORDER BY created_at').all() as Record<string, unknown>[];
    return rows.map(toRow).filter((r) => (!filter.kind || r.kind === filter.kind) && (!filter.status || r.status === filter.status));
  }

  /**
   * The workflows still active or changed since `since` (ISO time), most recently changed first, at most `limit`;
   * `more` says whether others matched (status queries on the bus answer with this).
   */
  recent(limit: number, since: string): { rows: WorkflowRow[]; more: boolean } {
    const rows = this.db
      .prepare("SELECT * FROM workflows WHERE status = 'active' OR updated_at >= ? ORDER BY updated_at DESC, id LIMIT ?")
      .all(since, limit + 1) as Record<string, unknown>[];
    return { rows: rows.slice(0, limit).map(toRow), more: rows.length > limit };
  }

  transitions(id: string): TransitionRow[] {
    const rows = this.db.prepare('SELECT * FROM transitions WHERE workflow_id = ? ORDER BY seq').all(id) as Record<string, unknown>[];
    return rows.map((r) => ({ workflowId: String(r['workflow_id']), seq: Number(r['seq']), state: String(r['state']), at: String(r['at']) }));
  }

  /**
   * Replay protection of signed bus commands: remembers a command id until `keepUntil` (epoch ms), in the same
   * database as the workflows, so it survives an agent restart. Ids whose time has passed are pruned here. Returns
   * null when the id is new (it is now recorded, outcome 'pending'), or the earlier record when it was seen before.
   */
  recordCommand(id: string, type: string, keepUntil: number, now = Date.now()): SeenCommand | null {
    this.db.exec('BEGIN IMMEDIATE');
    try {
      this.db.prepare('DELETE FROM command_ids WHERE keep_until < ?').run(now);
      const inserted = this.db
        .prepare(`INSERT INTO command_ids (id, type, outcome, seen_at, keep_until) VALUES (?, ?, 'pending', ?, ?) ON CONFLICT (id) DO NOTHING`)
        .run(id, type, new Date(now).toISOString(), keepUntil);
      const seen = Number(inserted.changes) === 1 ? null : this.seenCommand(id);
      this.db.exec('COMMIT');
      return seen;
    } catch (err) {
      this.db.exec('ROLLBACK');
      throw err;
    }
  }

  /** How a recorded command ended: 'accepted' (handled) or 'failed' (answered with a failed result). */
  settleCommand(id: string, outcome: Exclude<CommandOutcome, 'pending'>): void {
    this.db.prepare('UPDATE command_ids SET outcome = ? WHERE id = ?').run(outcome, id);
  }

  seenCommand(id: string): SeenCommand | null {
    const r = this.db.prepare('SELECT * FROM command_ids WHERE id = ?').get(id) as Record<string, unknown> | undefined;
    if (!r) return null;
    return {
      id: String(r['id']),
      type: String(r['type']),
      outcome: r['outcome'] as CommandOutcome,
      seenAt: String(r['seen_at']),
      keepUntil: Number(r['keep_until']),
    };
  }

  /**
   * Schedules (src/bus/schedule): per job, when it was first armed and the last instant taken (started, or skipped
   * because its previous run was still active). Arming is idempotent: the first time counts.
   */
  armSchedule(job: string, at: string): ScheduleRun {
    this.db
      .prepare('INSERT INTO schedule_runs (job, armed_at, updated_at) VALUES (?, ?, ?) ON CONFLICT (job) DO NOTHING')
      .run(job, at, new Date().toISOString());
    return this.scheduleRun(job)!;
  }

  scheduleRun(job: string): ScheduleRun | undefined {
    const r = this.db.prepare('SELECT * FROM schedule_runs WHERE job = ?').get(job) as Record<string, unknown> | undefined;
    if (!r) return undefined;
    const opt = (v: unknown) => (v === null || v === undefined ? null : String(v));
    return {
      job: String(r['job']),
      armedAt: String(r['armed_at']),
      lastInstant: opt(r['last_instant']),
      lastOutcome: opt(r['last_outcome']) as ScheduleOutcome | null,
      runCommandId: opt(r['run_command_id']),
    };
  }

  /**
   * Takes a job's instant (ISO, UTC): true only for the first taker of an instant later than the last one taken, so
   * one instant is never started twice, whatever restarts in between. 'pending' takes it for a run (settled by
   * settleScheduled), 'skipped' passes over it and keeps the run the job is still busy with.
   */
  takeInstant(job: string, instant: string, outcome: 'pending' | 'skipped', commandId: string | null): boolean {
    const r = this.db
      .prepare(
        `UPDATE schedule_runs SET last_instant = ?, last_outcome = ?, run_command_id = COALESCE(?, run_command_id), updated_at = ?
         WHERE job = ? AND (last_instant IS NULL OR last_instant < ?)`,
      )
      .run(instant, outcome, commandId, new Date().toISOString(), job, instant);
    return Number(r.changes) === 1;
  }

  /** How the handling of a taken instant ended (see takeInstant). */
  settleScheduled(job: string, instant: string, outcome: 'started' | 'failed'): void {
    this.db
      .prepare('UPDATE schedule_runs SET last_outcome = ?, updated_at = ? WHERE job = ? AND last_instant = ?')
      .run(outcome, new Date().toISOString(), job, instant);
  }

  close(): void {
    this.db.close();
  }

  private addTransition(id: string, state: string, at: string): void {
    const next = this.db.prepare('SELECT COALESCE(MAX(seq), 0) + 1 AS n FROM transitions WHERE workflow_id = ?').get(id) as { n: number };
    this.db.prepare('INSERT INTO transitions (workflow_id, seq, state, at) VALUES (?, ?, ?, ?)').run(id, next.n, state, at);
  }
}

function toRow(r: Record<string, unknown>): WorkflowRow {
  return {
    id: String(r['id']),
    kind: r['kind'] as WorkflowKind,
    machineVersion: Number(r['machine_version']),
    status: r['status'] as WorkflowStatus,
    state: String(r['state']),
    snapshot: JSON.parse(String(r['snapshot'])),
    input: JSON.parse(String(r['input'])),
    commandId: r['command_id'] === null ? null : String(r['command_id']),
    ownerPid: r['owner_pid'] === null ? null : Number(r['owner_pid']),
    ownerToken: r['owner_token'] === null || r['owner_token'] === undefined ? null : String(r['owner_token']),
    createdAt: String(r['created_at']),
    updatedAt: String(r['updated_at']),
  };
}
