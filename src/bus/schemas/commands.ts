import { z } from 'zod';
import { MAX_CLUSTER_BACKUP_ID } from '../../catalog/clusterRecord.ts';
import { verifySignature } from '../signing.ts';
import { CLUSTER, count, ENV, firstIssue, flag, HOST, ID, invalid, NAME, oneOf, quoted, ROLE, readJson, text } from './fields.ts';

/**
 * Commands on the bus: one JSON envelope, a payload per command type, validated by one strict schema per type
 * (unknown fields are refused, so a typo never silently drops an option; only a message's own keys count, so
 * `constructor` or `__proto__` are unknown too). The schema words every refusal: CBR_ERR_COMMAND_INVALID with
 * the field it is about. Signatures: src/bus/signing.ts.
 */

export const COMMAND_TYPES = [
  'backup.create',
  'backup.delete',
  'restore.create',
  'workflow.cancel',
  'backup.prune',
  'backup.verify',
  'backup.drill',
  'backup.release',
  'backup.hold',
  'cluster.backup',
] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];
export const MAX_COMMAND_BYTES = 64 * 1024;

const envelope = {
  version: z.literal(1, { error: 'version must be 1' }),
  /** Unique per command; a workflow started by it has this id, and a redelivery with it starts nothing. */
  id: z.string({ error: 'id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}' }).regex(ID, { error: 'id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}' }),
  type: z.enum(COMMAND_TYPES, { error: (iss) => `unknown command type ${quoted(iss.input)}` }),
  /** The host id of the agent that must run it. */
  host: z.string({ error: 'host must be a host id' }).regex(HOST, { error: 'host must be a host id' }),
  issuedAt: z.string({ error: 'issuedAt must be an ISO date' }).refine((s) => !Number.isNaN(Date.parse(s)), { error: 'issuedAt must be an ISO date' }),
  payload: z.record(z.string(), z.unknown(), { error: 'payload must be an object' }),
  /** `v2:<hex>` (see signCommand); required when the agent has a signing key. A v1 one (bare hex) parses, to be refused by name. */
  signature: z
    .string({ error: 'signature must be "v2:" followed by 64 hex characters' })
    .regex(/^(v2:)?[0-9a-f]{64}$/, { error: 'signature must be "v2:" followed by 64 hex characters' })
    .optional(),
};
const ENVELOPE_ORDER = Object.keys(envelope);

const objectError = (iss: z.core.$ZodRawIssue) => (iss.code === 'unrecognized_keys' ? `unknown field ${quoted(iss.keys[0])}` : 'command must be a JSON object');
/** The envelope alone (any payload object), to word a refusal in the order the fields are read. */
const envelopeSchema = z.strictObject(envelope, { error: objectError });

function payload<T extends CommandType, S extends z.core.$ZodLooseShape>(type: T, shape: (where: (key: string) => string) => S) {
  return z.strictObject(
    shape((key) => `${type}: payload.${key}`),
    {
      error: (iss) => (iss.code === 'unrecognized_keys' ? `${type}: unknown payload field ${quoted(iss.keys[0])}` : `${type}: payload must be an object`),
    },
  );
}

/** At most one key source: `<file>` or `<env>`, never both. */
function oneKeySource(type: CommandType, file: string, env: string) {
  return (p: Record<string, unknown>, ctx: z.core.$RefinementCtx) => {
    if (p[file] && p[env]) ctx.addIssue({ code: 'custom', message: `${type}: give ${file} or ${env}, not both` });
  };
}

/** A verify or drill names its backup: `backupId`, or `latest: true` (with `host` or not), one of them. */
function oneBackup(type: CommandType) {
  return (p: { backupId?: string | undefined; latest?: boolean | undefined; host?: string | undefined }, ctx: z.core.$RefinementCtx) => {
    if (Boolean(p.backupId) === Boolean(p.latest))
      ctx.addIssue({ code: 'custom', message: `${type}: give payload.backupId or payload.latest: true, one of them` });
    else if (p.host && !p.latest) ctx.addIssue({ code: 'custom', message: `${type}: payload.host goes with payload.latest` });
  };
}

export const backupCreatePayload = payload('backup.create', (at) => ({
  name: text(at('name'), { max: 128, re: /^[^\u0000-\u001f]+$/ }),
  description: text(at('description'), { max: 1024, re: /^[^\u0000-\u0008\u000b-\u001f]*$/ }).optional(),
  compression: oneOf(at('compression'), ['zstd', 'gzip', 'none']).optional(),
  encryptKeyFile: text(at('encryptKeyFile'), { absPath: true, max: 4096 }).optional(),
  encryptKeyEnv: text(at('encryptKeyEnv'), { re: ENV }).optional(),
  minFreePercent: count(at('minFreePercent'), 0, 100).optional(),
  /** Bytes per second of stored output. */
  rateLimit: count(at('rateLimit'), 1024, 2 ** 40).optional(),
  /** Absent: the agent's profile, then its CBR_BACKUP_STRATEGY, then full. */
  strategy: oneOf(at('strategy'), ['full', 'incremental']).optional(),
  /** The backup an incremental follows (a COMPLETED backup of this host); absent: the agent picks the host's latest. */
  parent: text(at('parent'), { re: ID }).optional(),
  /** Files in flight at once. */
  concurrency: count(at('concurrency'), 1, 64).int({ error: 'backup.create: payload.concurrency must be a whole number from 1 to 64' }).optional(),
  /** The cluster backup this backup is a part of (set by its coordinator; the command id is then the part id). */
  clusterBackupId: text(at('clusterBackupId'), { re: ID, max: MAX_CLUSTER_BACKUP_ID }).optional(),
  /** Hold after the snapshot (state `holding`) until `backup.release` of this backup id, a cancel, or the hold timeout. */
  hold: flag(at('hold')).optional(),
  /** How long the hold waits for its release (ms, 1 s to 7 days); default 1 h. */
  holdTimeoutMs: count(at('holdTimeoutMs'), 1000, 7 * 24 * 3600 * 1000)
    .int({ error: 'backup.create: payload.holdTimeoutMs must be a whole number of ms from 1000 to 604800000' })
    .optional(),
}))
  .superRefine(oneKeySource('backup.create', 'encryptKeyFile', 'encryptKeyEnv'))
  .superRefine((p, ctx) => {
    if (p.strategy === 'full' && p.parent) ctx.addIssue({ code: 'custom', message: 'backup.create: a parent is for strategy incremental, not full' });
    if (p.holdTimeoutMs !== undefined && !p.hold)
      ctx.addIssue({ code: 'custom', message: 'backup.create: payload.holdTimeoutMs goes with payload.hold: true' });
  });

/** A held backup (a cluster backup's part, in state `holding`) may upload now; a part already uploading or done is left as it is. */
export const backupReleasePayload = payload('backup.release', (at) => ({ backupId: text(at('backupId'), { re: ID }) }));

/** Keep a held backup holding: its hold timeout counts again from now (the coordinator's keepalive for queued parts). */
export const backupHoldPayload = payload('backup.hold', (at) => ({ backupId: text(at('backupId'), { re: ID }) }));

/**
 * A cluster backup coordinated by the agent it is sent to (a persisted workflow of its own, id = the command id =
 * the cluster backup id, at most 58 characters): every host of `cluster` (found by a status broadcast) or the named
 * `hosts` backs up its part `<id>-<n>`, snapshots held together, uploads `concurrency` hosts at a time.
 */
export const clusterBackupPayload = payload('cluster.backup', (at) => ({
  name: text(at('name'), { max: 128, re: /^[^\u0000-\u001f]+$/ }),
  description: text(at('description'), { max: 1024, re: /^[^\u0000-\u0008\u000b-\u001f]*$/ }).optional(),
  /** The Cassandra cluster_name whose agents take part. */
  cluster: text(at('cluster'), { re: CLUSTER }),
  /** The agents by host id, instead of every agent announcing `cluster`. */
  hosts: z
    .array(text(at('hosts[]'), { re: HOST }), { error: `${at('hosts')} must be a list of host ids` })
    .min(1, { error: `${at('hosts')} names at least one host` })
    .max(10_000, { error: `${at('hosts')} names at most 10000 hosts` })
    .optional(),
  /** Every part's strategy; default full. */
  strategy: oneOf(at('strategy'), ['full', 'incremental']).optional(),
  /** Hosts uploading at once, cluster-wide; default 2. */
  concurrency: count(at('concurrency'), 1, 1000).int({ error: 'cluster.backup: payload.concurrency must be a whole number from 1 to 1000' }).optional(),
  /** How long each host holds its snapshot for the release (ms); default the hosts' own (1 h). */
  holdTimeoutMs: count(at('holdTimeoutMs'), 1000, 7 * 24 * 3600 * 1000)
    .int({ error: 'cluster.backup: payload.holdTimeoutMs must be a whole number of ms from 1000 to 604800000' })
    .optional(),
}));

export const backupDeletePayload = payload('backup.delete', (at) => ({ backupId: text(at('backupId'), { re: ID }) }));

/** A retention policy (restic's --keep-* options, see src/catalog/retention.ts): at least one keep rule. */
export const backupPrunePayload = payload('backup.prune', (at) => {
  const keep = (k: string) =>
    count(at(k), 1, 999_999)
      .int({ error: `backup.prune: payload.${k} must be a whole number from 1 to 999999` })
      .optional();
  return {
    keepLast: keep('keepLast'),
    keepHourly: keep('keepHourly'),
    keepDaily: keep('keepDaily'),
    keepWeekly: keep('keepWeekly'),
    keepMonthly: keep('keepMonthly'),
    keepYearly: keep('keepYearly'),
    keepWithin: text(at('keepWithin'), { re: /^(?:\d{1,4}y)?(?:\d{1,5}m)?(?:\d{1,6}d)?(?:\d{1,7}h)?$/, max: 32 }).optional(),
    groupBy: oneOf(at('groupBy'), ['host', 'instance']).optional(),
    instance: text(at('instance'), { re: NAME }).optional(),
    dryRun: flag(at('dryRun')).optional(),
  };
}).superRefine((p, ctx) => {
  const rules = [p.keepLast, p.keepHourly, p.keepDaily, p.keepWeekly, p.keepMonthly, p.keepYearly, p.keepWithin];
  if (rules.every((r) => r === undefined))
    ctx.addIssue({ code: 'custom', message: 'backup.prune: give at least one keep rule (a policy that keeps nothing is refused)' });
});

export const restoreCreatePayload = payload('restore.create', (at) => ({
  backupId: text(at('backupId'), { re: ID }),
  instanceName: text(at('instanceName'), { re: NAME }),
  clusterName: text(at('clusterName'), { re: CLUSTER }).optional(),
  passwordFile: text(at('passwordFile'), { absPath: true, max: 4096 }).optional(),
  superuser: text(at('superuser'), { re: ROLE }).optional(),
  decryptKeyFile: text(at('decryptKeyFile'), { absPath: true, max: 4096 }).optional(),
  decryptKeyEnv: text(at('decryptKeyEnv'), { re: ENV }).optional(),
  force: flag(at('force')).optional(),
})).superRefine(oneKeySource('restore.create', 'decryptKeyFile', 'decryptKeyEnv'));

export const workflowCancelPayload = payload('workflow.cancel', (at) => ({ workflowId: text(at('workflowId'), { re: ID }) }));

/**
 * `cbr backup-verify` on the agent: a backup (`backupId`, or `latest` of `host` or of any host); its result event
 * carries the report (src/catalog/verify.ts VerifyResult).
 */
export const backupVerifyPayload = payload('backup.verify', (at) => ({
  backupId: text(at('backupId'), { re: ID }).optional(),
  /** The newest completed backup (of `host` when given): what a schedule verifies, as a fixed id would be pruned. */
  latest: flag(at('latest')).optional(),
  host: text(at('host'), { re: HOST }).optional(),
  deep: flag(at('deep')).optional(),
  /** A percentage, `10%` or `10`; absent: everything. */
  sample: text(at('sample'), { max: 16, re: /^\d{1,3}(\.\d{1,6})?%?$/ }).optional(),
  decryptKeyFile: text(at('decryptKeyFile'), { absPath: true, max: 4096 }).optional(),
  decryptKeyEnv: text(at('decryptKeyEnv'), { re: ENV }).optional(),
}))
  .superRefine(oneKeySource('backup.verify', 'decryptKeyFile', 'decryptKeyEnv'))
  .superRefine(oneBackup('backup.verify'));

/**
 * `cbr drill` on the agent: a backup (`backupId`, or `latest` of `host` or of any host) restored into a throwaway
 * sandbox on the agent's machine, checked, removed; its result event carries the drill result (src/workflows/drill.ts).
 */
export const backupDrillPayload = payload('backup.drill', (at) => ({
  backupId: text(at('backupId'), { re: ID }).optional(),
  /** The newest completed backup (of `host` when given): what a schedule drills, as a fixed id would be pruned. */
  latest: flag(at('latest')).optional(),
  host: text(at('host'), { re: HOST }).optional(),
  /** `--check "<CQL>" --expect <value>` pairs: a SELECT, and the text its first column of its first row must be. */
  checks: z
    .array(
      z.strictObject(
        {
          cql: text(at('checks[].cql'), { max: 4096, re: /^\s*select\s/i }),
          expect: z
            .string({ error: `${at('checks[].expect')} must be a string` })
            .max(4096, { error: `${at('checks[].expect')} is longer than 4096 characters` }),
        },
        {
          error: (iss) =>
            iss.code === 'unrecognized_keys' ? `${at('checks[]')}: unknown field ${quoted(iss.keys[0])}` : `${at('checks[]')} must be an object`,
        },
      ),
      { error: `${at('checks')} must be a list of {cql, expect}` },
    )
    .max(32, { error: `${at('checks')} holds at most 32 checks` })
    .optional(),
  decryptKeyFile: text(at('decryptKeyFile'), { absPath: true, max: 4096 }).optional(),
  decryptKeyEnv: text(at('decryptKeyEnv'), { re: ENV }).optional(),
}))
  .superRefine(oneKeySource('backup.drill', 'decryptKeyFile', 'decryptKeyEnv'))
  .superRefine(oneBackup('backup.drill'));

function command<T extends CommandType, P extends z.ZodType<Record<string, unknown>>>(type: T, payloadSchema: P) {
  return z.strictObject({ ...envelope, type: z.literal(type), payload: payloadSchema }, { error: objectError });
}

export const commandSchema = z.discriminatedUnion('type', [
  command('backup.create', backupCreatePayload),
  command('backup.delete', backupDeletePayload),
  command('restore.create', restoreCreatePayload),
  command('workflow.cancel', workflowCancelPayload),
  command('backup.prune', backupPrunePayload),
  command('backup.verify', backupVerifyPayload),
  command('backup.drill', backupDrillPayload),
  command('backup.release', backupReleasePayload),
  command('backup.hold', backupHoldPayload),
  command('cluster.backup', clusterBackupPayload),
]);

export type Command = z.infer<typeof commandSchema>;
export type BackupCreatePayload = z.infer<typeof backupCreatePayload>;
export type BackupDeletePayload = z.infer<typeof backupDeletePayload>;
export type RestoreCreatePayload = z.infer<typeof restoreCreatePayload>;
export type WorkflowCancelPayload = z.infer<typeof workflowCancelPayload>;
export type BackupPrunePayload = z.infer<typeof backupPrunePayload>;
export type BackupVerifyPayload = z.infer<typeof backupVerifyPayload>;
export type BackupDrillPayload = z.infer<typeof backupDrillPayload>;
export type BackupReleasePayload = z.infer<typeof backupReleasePayload>;
export type ClusterBackupPayload = z.infer<typeof clusterBackupPayload>;

/**
 * Parses and validates a raw message body; throws CBR_ERR_COMMAND_INVALID or CBR_ERR_COMMAND_UNAUTHORIZED. With a
 * signing key, the signature is checked against `prefix`, the bus prefix this agent consumes under (default '').
 */
export function parseCommand(body: Buffer, opts: { hostId: string; signingKey?: Buffer | null; prefix?: string; now?: number }): Command {
  const value = readJson(body, 'command', MAX_COMMAND_BYTES);
  const parsed = commandSchema.safeParse(value);
  if (!parsed.success) throw invalid(refusal(value, parsed.error, opts.hostId));
  if (parsed.data.host !== opts.hostId) throw invalid(`command is for host ${parsed.data.host}, this is ${opts.hostId}`);
  if (opts.signingKey) verifySignature(value as Record<string, unknown>, opts.signingKey, opts.prefix ?? '', opts.now ?? Date.now());
  return parsed.data;
}

/**
 * The reason for a refused command, in the order the fields are read: the envelope (unknown fields first, then
 * version, id, type, host, whether the host is this one, issuedAt, payload, signature), then the payload.
 */
function refusal(value: unknown, error: z.ZodError, hostId: string): string {
  const env = envelopeSchema.safeParse(value);
  const host = (value as { host?: unknown } | null)?.host;
  const otherHost = typeof host === 'string' && HOST.test(host) && host !== hostId ? `command is for host ${host}, this is ${hostId}` : null;
  if (env.success) return otherHost ?? firstIssue(error).message;
  const first = firstIssue(env.error);
  const field = first.code === 'unrecognized_keys' ? -1 : ENVELOPE_ORDER.indexOf(String(first.path[0]));
  return otherHost && field > ENVELOPE_ORDER.indexOf('host') ? otherHost : first.message;
}
