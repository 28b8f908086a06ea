import type { Logger } from '../../core/log.ts';
import type { StateDb } from '../../state/stateDb.ts';
import { type ScheduleJob, toCommand } from './config.ts';
import { commandIdFor, decide, dueInstant, nextInstant } from './plan.ts';

export interface SchedulerOptions {
  jobs: ScheduleJob[];
  hostId: string;
  /** Where each job's last taken instant is kept (the agent's state database). */
  store: StateDb;
  log: Logger;
  /**
   * Hands a run's command to the agent, down the same path as a command from the bus (validation, dedupe by id).
   * Resolves true once handled (a workflow persisted and started, or a short command done), false if refused.
   */
  feed: (command: Record<string, unknown>) => Promise<boolean>;
  /** Whether the workflow a run started is still active (in the state database). */
  isActive: (commandId: string) => boolean;
  /** Default: the system clock. */
  now?: () => Date;
}

/** Node's longest timer is ~24.8 days; a far instant is reached in hops of at most an hour, which also follows clock steps. */
const MAX_WAIT_MS = 3_600_000;

/**
 * Runs schedule jobs inside the agent. At each instant a job's command goes to `feed`; the scheduler knows nothing
 * of what it does. Per job, the state database keeps the last instant taken, so:
 * - an instant is taken once (its command id is derived from the job and the instant, and taking it is one
 *   conditional write), whatever crashes and restarts happen around it;
 * - at start, instants missed while the agent was down give one catch-up run, for the latest of them;
 * - while a job's previous run is active, a due instant is skipped (logged with the reason), never queued.
 */
export class Scheduler {
  readonly #o: SchedulerOptions;
  readonly #timers = new Map<string, NodeJS.Timeout>();
  /** Runs whose command is being handled now, by job. */
  readonly #handling = new Map<string, Promise<boolean>>();
  #stopped = false;

  constructor(opts: SchedulerOptions) {
    this.#o = opts;
  }

  #now(): Date {
    return this.#o.now?.() ?? new Date();
  }

  /** Arms every job: first a run cut short by a crash is handed over again, then the catch-up, then the timer. */
  start(): void {
    for (const job of this.#o.jobs) {
      const run = this.#o.store.armSchedule(job.name, this.#now().toISOString());
      if (run.lastOutcome === 'pending' && run.lastInstant && run.runCommandId) {
        // Taken but never handled to the end (the agent died in between): the same id again, which the agent
        // ignores if the workflow was persisted before the crash.
        this.#o.log.info('scheduled run cut short by a restart, handled again', { job: job.name, commandId: run.runCommandId, instant: run.lastInstant });
        this.#handle(job, run.runCommandId, new Date(run.lastInstant));
      }
      this.tick(job, true);
      this.#arm(job);
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const t of this.#timers.values()) clearTimeout(t);
    this.#timers.clear();
  }

  /** Settles when every command handed over so far has been handled (tests). */
  async settled(): Promise<void> {
    while (this.#handling.size) await Promise.allSettled([...this.#handling.values()]);
  }

  /** Runs the job's latest due instant if there is one; `atStart` labels it a catch-up. Returns what it did. */
  tick(job: ScheduleJob, atStart = false): { instant: string; ran: boolean; missed: number } | null {
    const now = this.#now();
    const run = this.#o.store.scheduleRun(job.name);
    if (!run) return null;
    const due = dueInstant(job.plan, new Date(run.lastInstant ?? run.armedAt), now);
    if (!due) return null;
    const instant = due.instant.toISOString();
    const previous = run.runCommandId ? { commandId: run.runCommandId, active: this.#handling.has(job.name) || this.#o.isActive(run.runCommandId) } : null;
    const decision = decide(due.instant, previous);
    const missed = due.count - 1;
    if (!decision.run) {
      if (this.#o.store.takeInstant(job.name, instant, 'skipped', null)) {
        this.#o.log.warn('scheduled run skipped', { job: job.name, instant, reason: decision.reason, catchUp: atStart, missed });
      }
      return { instant, ran: false, missed };
    }
    const commandId = commandIdFor(job.name, due.instant);
    if (!this.#o.store.takeInstant(job.name, instant, 'pending', commandId)) return null;
    if (atStart) {
      this.#o.log.info('catch-up run of a schedule: instants were missed while the agent was down', {
        job: job.name,
        commandId,
        instant,
        missedInstants: due.count,
      });
    } else {
      this.#o.log.info('scheduled run', { job: job.name, commandId, instant, ...(missed ? { missed } : {}) });
    }
    this.#handle(job, commandId, due.instant);
    return { instant, ran: true, missed };
  }

  #handle(job: ScheduleJob, commandId: string, instant: Date): void {
    const handling = this.#o
      .feed(toCommand(job, commandId, this.#o.hostId, instant))
      .catch(() => false)
      .then((ok) => {
        try {
          this.#o.store.settleScheduled(job.name, instant.toISOString(), ok ? 'started' : 'failed');
        } catch (err) {
          // The agent stopped (its database closed) while the command was handled: the instant stays 'pending' and
          // is handed over again, with the same id, at the next start.
          this.#o.log.debug('scheduled run not settled', { job: job.name, error: (err as Error).message });
        }
        return ok;
      })
      .finally(() => {
        if (this.#handling.get(job.name) === handling) this.#handling.delete(job.name);
      });
    this.#handling.set(job.name, handling);
  }

  #arm(job: ScheduleJob): void {
    if (this.#stopped) return;
    const now = this.#now();
    const next = nextInstant(job.plan, now);
    if (!next) {
      this.#o.log.info('schedule job has no more instants', { job: job.name });
      return;
    }
    // A timer may wake a little early: tick() then finds nothing due and the job is armed again for the same instant.
    const wait = Math.min(Math.max(next.getTime() - now.getTime(), 0) + 5, MAX_WAIT_MS);
    this.#timers.set(
      job.name,
      setTimeout(() => {
        if (this.#stopped) return;
        try {
          this.tick(job);
        } catch (err) {
          this.#o.log.error('schedule tick failed', { job: job.name, error: (err as Error).message });
        }
        this.#arm(job);
      }, wait),
    );
  }
}
