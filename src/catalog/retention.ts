import { CbrError } from '../core/errors.ts';

/**
 * Retention policies in restic's manner (`restic forget --keep-*`), pure: which backups of each group to keep and
 * why. Backups are taken newest first (by `created`, ties by id). `last N` keeps the N newest; a bucket rule
 * (hourly, daily, weekly, monthly, yearly) keeps the newest backup of each of the N most recent buckets that hold a
 * backup; `within D` keeps every backup created after the group's newest backup minus D (relative to the newest
 * backup, not to now, as restic does: a host that stopped backing up keeps its last backups). A backup is kept
 * when any rule keeps it, and lists every rule that does. Buckets are UTC; weeks are ISO 8601 weeks.
 */

export const BUCKET_RULES = ['hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
export type BucketRule = (typeof BUCKET_RULES)[number];

export interface WithinDuration {
  years: number;
  months: number;
  days: number;
  hours: number;
  /** As given (`7d`, `1y6m`). */
  text: string;
}

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  within?: WithinDuration;
}

export type GroupBy = 'host' | 'instance';

/** What the policy needs of a backup (a COMPLETED record's fields). */
export interface RetentionCandidate {
  id: string;
  created: string;
  hostId: string;
  sourceInstance: string;
}

export interface RetentionDecision {
  id: string;
  group: string;
  created: string;
  keep: boolean;
  /** Why it is kept: `last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`, `within <D>`; empty when it goes. */
  reasons: string[];
}

const COUNT_RE = /^[1-9][0-9]{0,5}$/;
const WITHIN_RE = /^(?:(\d{1,4})y)?(?:(\d{1,5})m)?(?:(\d{1,6})d)?(?:(\d{1,7})h)?$/;

/** The policy from option texts (`--keep-daily 7`); a bad or empty policy is CBR_ERR_PRUNE_POLICY_INVALID. */
export function parsePolicy(o: {
  last?: string | undefined;
  hourly?: string | undefined;
  daily?: string | undefined;
  weekly?: string | undefined;
  monthly?: string | undefined;
  yearly?: string | undefined;
  within?: string | undefined;
}): RetentionPolicy {
  const policy: RetentionPolicy = {};
  for (const rule of ['last', ...BUCKET_RULES] as const) {
    const text = o[rule];
    if (text === undefined) continue;
    if (!COUNT_RE.test(text.trim())) throw bad(`--keep-${rule} must be a whole number from 1 to 999999 (got ${JSON.stringify(text.slice(0, 40))})`);
    policy[rule] = Number(text.trim());
  }
  if (o.within !== undefined) policy.within = parseWithin(o.within);
  if (Object.keys(policy).length === 0) {
    throw bad('no --keep-* option given: backup-prune refuses a policy that keeps nothing (delete backups one by one with backup-delete)');
  }
  return policy;
}

/** `7d`, `36h`, `1y6m`, `2m15d12h`: years, months, days, hours (restic's units), at least one, none zero in total. */
export function parseWithin(text: string): WithinDuration {
  const t = text.trim();
  const m = WITHIN_RE.exec(t);
  if (!m || t === '')
    throw bad(`--keep-within must be a duration of years, months, days, hours such as 7d, 36h or 1y6m (got ${JSON.stringify(text.slice(0, 40))})`);
  const [years, months, days, hours] = [m[1], m[2], m[3], m[4]].map((v) => Number(v ?? 0)) as [number, number, number, number];
  if (years + months + days + hours === 0) throw bad('--keep-within must be longer than 0');
  return { years, months, days, hours, text: t };
}

/** The moment `within` before `t` (calendar arithmetic in UTC, as restic's AddDate). */
export function withinCutoff(t: Date, within: WithinDuration): number {
  const d = new Date(t.getTime());
  d.setUTCFullYear(d.getUTCFullYear() - within.years, d.getUTCMonth() - within.months, d.getUTCDate() - within.days);
  return d.getTime() - within.hours * 3_600_000;
}

/** The UTC bucket a moment falls in for a rule. */
export function bucketOf(rule: BucketRule, t: Date): string {
  const iso = t.toISOString();
  switch (rule) {
    case 'hourly':
      return iso.slice(0, 13);
    case 'daily':
      return iso.slice(0, 10);
    case 'weekly': {
      const { year, week } = isoWeek(t);
      return `${year}-W${String(week).padStart(2, '0')}`;
    }
    case 'monthly':
      return iso.slice(0, 7);
    case 'yearly':
      return iso.slice(0, 4);
  }
}

/** ISO 8601 week of a UTC date: weeks start on Monday, week 1 holds the year's first Thursday. */
export function isoWeek(t: Date): { year: number; week: number } {
  const d = new Date(Date.UTC(t.getUTCFullYear(), t.getUTCMonth(), t.getUTCDate()));
  const weekday = d.getUTCDay() || 7;
  d.setUTCDate(d.getUTCDate() + 4 - weekday);
  const yearStart = Date.UTC(d.getUTCFullYear(), 0, 1);
  return { year: d.getUTCFullYear(), week: Math.ceil(((d.getTime() - yearStart) / 86_400_000 + 1) / 7) };
}

export function groupOf(c: RetentionCandidate, by: GroupBy): string {
  return by === 'host' ? c.hostId : c.sourceInstance;
}

/** Decides every candidate: per group, newest first, kept by any rule or removed. Returned newest first per group. */
export function applyPolicy(candidates: readonly RetentionCandidate[], policy: RetentionPolicy, groupBy: GroupBy): RetentionDecision[] {
  if (Object.keys(policy).length === 0) throw bad('an empty retention policy keeps nothing');
  const groups = new Map<string, RetentionCandidate[]>();
  for (const c of candidates) {
    if (Number.isNaN(Date.parse(c.created))) throw new CbrError('CBR_ERR_INTERNAL', `backup ${c.id} has no valid created time`);
    const g = groupOf(c, groupBy);
    groups.set(g, [...(groups.get(g) ?? []), c]);
  }
  const out: RetentionDecision[] = [];
  for (const group of [...groups.keys()].sort()) {
    const list = [...(groups.get(group) ?? [])].sort((a, b) => Date.parse(b.created) - Date.parse(a.created) || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
    const left: Partial<Record<'last' | BucketRule, number>> = {};
    for (const rule of ['last', ...BUCKET_RULES] as const) if (policy[rule] !== undefined) left[rule] = policy[rule];
    const lastBucket: Partial<Record<BucketRule, string>> = {};
    const newest = list[0];
    const cutoff = policy.within && newest ? withinCutoff(new Date(newest.created), policy.within) : null;
    for (const c of list) {
      const t = new Date(c.created);
      const reasons: string[] = [];
      if ((left.last ?? 0) > 0) {
        left.last = (left.last ?? 0) - 1;
        reasons.push('last');
      }
      for (const rule of BUCKET_RULES) {
        if ((left[rule] ?? 0) <= 0) continue;
        const bucket = bucketOf(rule, t);
        if (bucket === lastBucket[rule]) continue;
        lastBucket[rule] = bucket;
        left[rule] = (left[rule] ?? 0) - 1;
        reasons.push(rule);
      }
      if (cutoff !== null && policy.within && t.getTime() > cutoff) reasons.push(`within ${policy.within.text}`);
      out.push({ id: c.id, group, created: c.created, keep: reasons.length > 0, reasons });
    }
  }
  return out;
}

/** The policy as it is written on the command line, for reports. */
export function describePolicy(policy: RetentionPolicy): string {
  const parts: string[] = [];
  for (const rule of ['last', ...BUCKET_RULES] as const) if (policy[rule] !== undefined) parts.push(`--keep-${rule} ${policy[rule]}`);
  if (policy.within) parts.push(`--keep-within ${policy.within.text}`);
  return parts.join(' ');
}

function bad(message: string): CbrError {
  return new CbrError('CBR_ERR_PRUNE_POLICY_INVALID', message);
}
