import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { CbrError } from '../../core/errors.ts';
import { type CommandType, parseCommand } from '../schemas/commands.ts';
import { type CronPlan, compileCron, JOB_NAME_RE } from './plan.ts';

/**
 * A schedule file (`cbr agent --schedule <file>`, YAML or JSON): jobs, each a cron expression and the bus command
 * it feeds into the agent at each instant. The scheduler knows nothing of what a command does: a job's command is
 * validated here by the same schema as a command from the bus, so a job of a type this agent does not know, or with
 * a payload that type refuses, stops the agent at start with CBR_ERR_CONFIG.
 *
 *   timezone: UTC                  # default of every job (default UTC)
 *   jobs:
 *     - name: nightly              # [A-Za-z0-9][A-Za-z0-9_-]{0,39}, unique
 *       cron: "0 2 * * *"          # 5 fields, or 6 with seconds first
 *       timezone: Europe/Paris     # optional
 *       command: { type: backup.create, payload: { name: nightly, strategy: incremental } }
 */

const jobSchema = z.strictObject({
  name: z.string().regex(JOB_NAME_RE, { error: 'a job name must match [A-Za-z0-9][A-Za-z0-9_-]{0,39}' }),
  cron: z.string({ error: 'cron must be a string' }),
  timezone: z.string().optional(),
  command: z.strictObject({ type: z.string({ error: 'command.type must be a string' }), payload: z.record(z.string(), z.unknown()).default({}) }),
});

const fileSchema = z.strictObject({
  timezone: z.string().default('UTC'),
  jobs: z.array(jobSchema).min(1, { error: 'a schedule needs at least one job' }),
});

export interface ScheduleJob {
  name: string;
  cron: string;
  timezone: string;
  plan: CronPlan;
  /** The command fed at each instant, but for its id, host and issuedAt (set per run). */
  type: CommandType;
  payload: Record<string, unknown>;
}

/** Validates a parsed schedule for the agent of `hostId`; throws CBR_ERR_CONFIG with the first thing wrong. */
export function parseSchedule(value: unknown, hostId: string, source = 'schedule'): ScheduleJob[] {
  const parsed = fileSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const at = issue.path.length ? ` at ${issue.path.join('.')}` : '';
    throw new CbrError('CBR_ERR_CONFIG', `${source}${at}: ${issue.message}`);
  }
  const seen = new Set<string>();
  return parsed.data.jobs.map((j) => {
    if (seen.has(j.name)) throw new CbrError('CBR_ERR_CONFIG', `${source}: two jobs are named ${j.name}`);
    seen.add(j.name);
    const timezone = j.timezone ?? parsed.data.timezone;
    const plan = compileCron(j.name, j.cron, timezone);
    const command = { version: 1, id: 'validation', type: j.command.type, host: hostId, issuedAt: new Date(0).toISOString(), payload: j.command.payload };
    let type: CommandType;
    try {
      // The bus's own parser, so a job is refused in the very words a published command would be.
      type = parseCommand(Buffer.from(JSON.stringify(command)), { hostId }).type;
    } catch (err) {
      throw new CbrError('CBR_ERR_CONFIG', `${source}: job ${j.name}: ${(err as Error).message}`);
    }
    return { name: j.name, cron: j.cron, timezone, plan, type, payload: j.command.payload };
  });
}

/** Reads a schedule file (YAML, of which JSON is a subset). */
export async function loadSchedule(path: string, hostId: string): Promise<ScheduleJob[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new CbrError('CBR_ERR_CONFIG', `cannot read schedule ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = parseYaml(text);
  } catch (err) {
    throw new CbrError('CBR_ERR_CONFIG', `schedule ${path} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  return parseSchedule(value, hostId, `schedule ${path}`);
}

/** The bus command of a job's run: the envelope a publisher would send, but from the agent's own clock. */
export function toCommand(job: Pick<ScheduleJob, 'type' | 'payload'>, id: string, hostId: string, instant: Date): Record<string, unknown> {
  return { version: 1, id, type: job.type, host: hostId, issuedAt: instant.toISOString(), payload: structuredClone(job.payload) };
}
