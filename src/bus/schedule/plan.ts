import { Cron } from 'croner';
import { CbrError } from '../../core/errors.ts';

/**
 * The pure part of schedules: when a job is due, how many instants were missed, whether a due instant runs, and the
 * id its run gets. No timers, no clock: every function takes `now`. Cron expressions are croner's (5 fields, or 6
 * with seconds first), in an explicit IANA time zone. Around DST croner follows Vixie cron: a fixed-time job
 * (`30 2 * * *`) whose time is skipped runs at the first valid time after the gap, and one whose time occurs
 * twice runs once; an interval job (`*\/15 * * * *`) runs in real time through both.
 */

export type CronPlan = Cron;

/** At most this many missed instants are counted (a per-second job down for an hour would be 3,600; the log says "1000" then). */
export const MISSED_COUNT_CAP = 1000;

/** A schedule job's name: it is part of every run's command id (see commandIdFor), so short and id-safe. */
export const JOB_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$/;

/** Compiles a cron expression in a time zone; a bad one is CBR_ERR_CONFIG naming the job. */
export function compileCron(job: string, expr: string, timezone: string): CronPlan {
  try {
    // Intl refuses an unknown zone up front (croner only finds out when it first computes a date).
    new Intl.DateTimeFormat('en', { timeZone: timezone });
  } catch {
    throw new CbrError('CBR_ERR_CONFIG', `schedule job ${job}: unknown time zone ${JSON.stringify(timezone)}`);
  }
  try {
    const cron = new Cron(expr, { timezone, mode: '5-or-6-parts' });
    if (!cron.nextRun(new Date(0))) throw new Error('it never runs');
    return cron;
  } catch (err) {
    const why = (err as Error).message.replace(/^CronPattern: /, '');
    throw new CbrError('CBR_ERR_CONFIG', `schedule job ${job}: bad cron expression ${JSON.stringify(expr)}: ${why}`);
  }
}

/** The first instant strictly after `after`, or null when the expression has no more. */
export function nextInstant(cron: CronPlan, after: Date): Date | null {
  return cron.nextRun(after);
}

/**
 * The instants in (since, now]: the latest one (the one to run) and how many there were (capped at
 * MISSED_COUNT_CAP). Null when none is due. More than one means some were missed (the agent was down or busy):
 * the job runs once, for the latest, not once per missed instant.
 */
export function dueInstant(cron: CronPlan, since: Date, now: Date): { instant: Date; count: number } | null {
  if (now.getTime() <= since.getTime()) return null;
  // previousRuns(1, ref) is the latest instant strictly before ref: one millisecond past now includes now.
  const latest = cron.previousRuns(1, new Date(now.getTime() + 1))[0];
  if (!latest || latest.getTime() <= since.getTime()) return null;
  let count = 0;
  for (let t = cron.nextRun(since); t && t.getTime() <= latest.getTime() && count < MISSED_COUNT_CAP; t = cron.nextRun(t)) count++;
  return { instant: latest, count: Math.max(count, 1) };
}

export type Decision = { run: true } | { run: false; reason: string };

/**
 * Whether a due instant runs. Two runs of one job never overlap: while the job's previous run is still active, the
 * instant is skipped (not queued), with the reason; the next instant after that run ends runs as usual.
 */
export function decide(due: Date, previous: { commandId: string; active: boolean } | null): Decision {
  if (previous?.active) {
    return { run: false, reason: `the previous run ${previous.commandId} is still active at ${due.toISOString()}; this instant is skipped` };
  }
  return { run: true };
}

/**
 * The command (and workflow) id of a job's run at an instant: `<job>-<yyyymmddThhmmssZ>`, at most 57 characters.
 * Deterministic, so a restart that feeds the same instant again is a duplicate the agent ignores.
 */
export function commandIdFor(job: string, instant: Date): string {
  const stamp = instant
    .toISOString()
    .replace(/\.\d{3}Z$/, 'Z')
    .replace(/[-:]/g, '');
  return `${job}-${stamp}`;
}
