import { type PruneResult, prune } from '../../catalog/prune.ts';
import { type GroupBy, parsePolicy, type RetentionPolicy } from '../../catalog/retention.ts';
import { CbrError } from '../../core/errors.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { openStorage, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';
import { formatBytes } from '../progress.ts';

const keep = (what: string) => ({ type: 'string', placeholder: '<n>', description: what }) as const;

export const command = defineCommand('backup-prune', {
  summary: 'Delete the backups a retention policy does not keep (restic-style --keep-* options), per host or instance.',
  options: {
    'keep-last': keep('keep the n newest backups'),
    'keep-hourly': keep('keep the newest backup of each of the n latest hours (UTC) that have one'),
    'keep-daily': keep('keep the newest backup of each of the n latest days (UTC) that have one'),
    'keep-weekly': keep('keep the newest backup of each of the n latest ISO weeks (UTC) that have one'),
    'keep-monthly': keep('keep the newest backup of each of the n latest months (UTC) that have one'),
    'keep-yearly': keep('keep the newest backup of each of the n latest years (UTC) that have one'),
    'keep-within': {
      type: 'string',
      placeholder: '<duration>',
      description: "keep every backup made within this long before the group's newest one: years, months, days, hours, e.g. 7d, 36h, 1y6m",
    },
    'group-by': {
      type: 'string',
      placeholder: 'host|instance',
      default: 'host',
      description: 'apply the policy to each host id, or to each source instance name',
    },
    instance: { type: 'string', placeholder: '<name>', description: 'consider only the backups of this source instance' },
    'dry-run': { type: 'boolean', default: false, description: 'list what would be deleted and the bytes it would free; delete nothing' },
    ...jsonOption,
    ...storageOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: [
    'At least one --keep-* option is required: a policy that keeps nothing is refused (CBR_ERR_PRUNE_POLICY_INVALID).',
    'Only COMPLETED backups are considered. A prune killed midway is finished by the next one.',
    "With --bus the host's agent prunes its storage.",
  ],
  async run({ values }, io) {
    const policy = parsePolicy({
      last: values['keep-last'],
      hourly: values['keep-hourly'],
      daily: values['keep-daily'],
      weekly: values['keep-weekly'],
      monthly: values['keep-monthly'],
      yearly: values['keep-yearly'],
      within: values['keep-within'],
    });
    const groupBy = values['group-by'];
    if (groupBy !== 'host' && groupBy !== 'instance') {
      throw new CbrError('CBR_ERR_PRUNE_POLICY_INVALID', `--group-by must be host or instance (got ${JSON.stringify(groupBy.slice(0, 40))})`);
    }
    if (values.bus) {
      const { result } = await runOverBus(
        io,
        values,
        {
          type: 'backup.prune',
          payload: { ...busPolicy(policy), groupBy, dryRun: values['dry-run'], ...(values.instance ? { instance: values.instance } : {}) },
        },
        values.json,
      );
      const r = (result ?? {}) as unknown as PruneResult;
      if (values.json) printJson(io, { host: values.host, ...r });
      else io.stdout(report(r));
      return 0;
    }
    const store = openStorage(values, io.env);
    const delayMs = Number(io.env['CBR_DRILL_PRUNE_DELAY_MS'] ?? 0) || 0;
    const result = await prune(store, policy, {
      groupBy: groupBy as GroupBy,
      dryRun: values['dry-run'],
      ...(values.instance ? { instance: values.instance } : {}),
      ...(delayMs ? { delayMs } : {}),
      ...(values.json ? {} : { onRemoved: (id: string, done: number, total: number) => io.stderr(`removed ${id} (${done}/${total})\n`) }),
    });
    if (values.json) printJson(io, result);
    else io.stdout(report(result));
    return 0;
  },
});

/** The policy as the bus command's payload fields. */
export function busPolicy(p: RetentionPolicy): Record<string, number | string> {
  const out: Record<string, number | string> = {};
  if (p.last !== undefined) out['keepLast'] = p.last;
  if (p.hourly !== undefined) out['keepHourly'] = p.hourly;
  if (p.daily !== undefined) out['keepDaily'] = p.daily;
  if (p.weekly !== undefined) out['keepWeekly'] = p.weekly;
  if (p.monthly !== undefined) out['keepMonthly'] = p.monthly;
  if (p.yearly !== undefined) out['keepYearly'] = p.yearly;
  if (p.within !== undefined) out['keepWithin'] = p.within.text;
  return out;
}

/** restic-like: per group what stays and why, what goes, then what it frees. */
function report(r: PruneResult): string {
  const lines: string[] = [`policy: ${r.policy} (per ${r.groupBy})`];
  const groups = [...new Set([...r.keep.map((b) => b.group), ...r.remove.map((b) => b.group)])].sort();
  for (const g of groups) {
    const kept = r.keep.filter((b) => b.group === g);
    const gone = r.remove.filter((b) => b.group === g);
    lines.push('', `${r.groupBy} ${g}: keep ${kept.length}, ${r.dryRun ? 'would remove' : 'remove'} ${gone.length}`);
    const part = (b: { cluster?: string }) => (b.cluster ? `  part of cluster backup ${b.cluster}` : '');
    for (const b of kept) lines.push(`  keep    ${b.id}  ${b.created}  ${b.name}  (${b.reasons.join(', ')})${part(b)}`);
    for (const b of gone) lines.push(`  remove  ${b.id}  ${b.created}  ${b.name}  ${b.strategy} ${formatBytes(b.size)}${part(b)}`);
  }
  lines.push('');
  if (r.protected?.length)
    lines.push(`left alone: ${r.protected.join(', ')} (parts of a cluster backup still running, or whose cluster record cannot be read)`);
  if (r.dryRun) lines.push(`dry run: would remove ${r.remove.length} backups and free ${formatBytes(r.freedBytes)} (${r.freedBytes} bytes)`);
  else {
    if (r.resumed.length) lines.push(`finished an interrupted prune: ${r.resumed.length} backups`);
    lines.push(`removed ${r.remove.length} backups, freed ${formatBytes(r.freedBytesDone)} (${r.freedBytesDone} bytes)`);
    for (const g of r.gc) {
      if (g.skipped === 'backup-running') lines.push(`host ${g.hostId}: a backup is running, its unused blobs are freed by a later prune`);
      else if (g.skipped === 'restore-running')
        lines.push(`host ${g.hostId}: a restore or drill is fetching its blobs, its unused blobs are freed by a later prune`);
      else if (g.skipped === 'failed') lines.push(`host ${g.hostId}: garbage collection failed (${g.error}); the next prune collects`);
      else lines.push(`host ${g.hostId}: ${g.deleted} blobs collected (${formatBytes(g.freedBytes)})`);
    }
  }
  return `${lines.join('\n')}\n`;
}
