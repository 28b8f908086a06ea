import { createHmac, timingSafeEqual } from 'node:crypto';
import { CbrError } from '../errors.ts';

/**
 * Commands on the bus: one JSON envelope, validated field by field (unknown fields are refused, so a typo never
 * silently drops an option). With a signing key configured, an HMAC-SHA256 over the canonical JSON of the
 * envelope (without `signature`) must match: bus access alone then cannot trigger a destructive restore.
 */

export const COMMAND_TYPES = ['backup.create', 'backup.delete', 'restore.create', 'workflow.cancel'] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];
export const MAX_COMMAND_BYTES = 64 * 1024;
/** A signed command older (or newer) than this is refused as a replay. */
export const SIGNATURE_WINDOW_MS = 5 * 60 * 1000;

export interface BackupCreatePayload {
  name: string;
  description?: string;
  compression?: 'zstd' | 'gzip' | 'none';
  encryptKeyFile?: string;
  encryptKeyEnv?: string;
  minFreePercent?: number;
  rateLimit?: number;
}
export interface BackupDeletePayload {
  backupId: string;
}
export interface RestoreCreatePayload {
  backupId: string;
  instanceName: string;
  clusterName?: string;
  passwordFile?: string;
  superuser?: string;
  decryptKeyFile?: string;
  decryptKeyEnv?: string;
  force?: boolean;
}
export interface WorkflowCancelPayload {
  workflowId: string;
}

interface Envelope<T extends CommandType, P> {
  version: 1;
  /** Unique per command; a workflow started by it has this id, and a redelivery with it starts nothing. */
  id: string;
  type: T;
  /** The host id of the agent that must run it. */
  host: string;
  issuedAt: string;
  payload: P;
  signature?: string;
}

export type Command =
  | Envelope<'backup.create', BackupCreatePayload>
  | Envelope<'backup.delete', BackupDeletePayload>
  | Envelope<'restore.create', RestoreCreatePayload>
  | Envelope<'workflow.cancel', WorkflowCancelPayload>;

const ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$/;
const HOST = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
const NAME = /^[A-Za-z][A-Za-z0-9_-]{0,47}$/;
const ENV = /^[A-Z_][A-Z0-9_]{0,63}$/;
const ROLE = /^[A-Za-z_][A-Za-z0-9_]{0,47}$/;
/** Any one-line printable name (quoted in cassandra.yaml by the restore), as `cbr create --cluster-name` takes. */
const CLUSTER = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]{1,256}$/;

type FieldSpec = { type: 'string'; re?: RegExp; max?: number; absPath?: boolean } | { type: 'number'; min: number; max: number } | { type: 'boolean' } | { type: 'enum'; values: readonly string[] };

const PAYLOADS: Record<CommandType, { required: Record<string, FieldSpec>; optional: Record<string, FieldSpec> }> = {
  'backup.create': {
    required: { name: { type: 'string', max: 128, re: /^[^\u0000-\u001f]+$/ } },
    optional: {
      description: { type: 'string', max: 1024, re: /^[^\u0000-\u0008\u000b-\u001f]*$/ },
      compression: { type: 'enum', values: ['zstd', 'gzip', 'none'] },
      encryptKeyFile: { type: 'string', absPath: true, max: 4096 },
      encryptKeyEnv: { type: 'string', re: ENV },
      minFreePercent: { type: 'number', min: 0, max: 100 },
      rateLimit: { type: 'number', min: 1024, max: 2 ** 40 },
    },
  },
  'backup.delete': { required: { backupId: { type: 'string', re: ID } }, optional: {} },
  'restore.create': {
    required: { backupId: { type: 'string', re: ID }, instanceName: { type: 'string', re: NAME } },
    optional: {
      clusterName: { type: 'string', re: CLUSTER },
      passwordFile: { type: 'string', absPath: true, max: 4096 },
      superuser: { type: 'string', re: ROLE },
      decryptKeyFile: { type: 'string', absPath: true, max: 4096 },
      decryptKeyEnv: { type: 'string', re: ENV },
      force: { type: 'boolean' },
    },
  },
  'workflow.cancel': { required: { workflowId: { type: 'string', re: ID } }, optional: {} },
};

function invalid(why: string): CbrError {
  return new CbrError('CBR_ERR_COMMAND_INVALID', why);
}

/** Parses and validates a raw message body; throws CBR_ERR_COMMAND_INVALID or CBR_ERR_COMMAND_UNAUTHORIZED. */
export function parseCommand(body: Buffer, opts: { hostId: string; signingKey?: Buffer | null; now?: number }): Command {
  if (body.length > MAX_COMMAND_BYTES) throw invalid(`command is ${body.length} bytes, the limit is ${MAX_COMMAND_BYTES}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw invalid('command is not valid UTF-8');
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw invalid('command is not valid JSON');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw invalid('command must be a JSON object');
  const c = value as Record<string, unknown>;
  const allowed = new Set(['version', 'id', 'type', 'host', 'issuedAt', 'payload', 'signature']);
  for (const k of Object.keys(c)) if (!allowed.has(k)) throw invalid(`unknown field ${JSON.stringify(k.slice(0, 64))}`);
  if (c['version'] !== 1) throw invalid('version must be 1');
  if (typeof c['id'] !== 'string' || !ID.test(c['id'])) throw invalid('id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}');
  if (typeof c['type'] !== 'string' || !(COMMAND_TYPES as readonly string[]).includes(c['type'])) {
    throw invalid(`unknown command type ${JSON.stringify(String(c['type']).slice(0, 64))}`);
  }
  if (typeof c['host'] !== 'string' || !HOST.test(c['host'])) throw invalid('host must be a host id');
  if (c['host'] !== opts.hostId) throw invalid(`command is for host ${c['host']}, this is ${opts.hostId}`);
  if (typeof c['issuedAt'] !== 'string' || Number.isNaN(Date.parse(c['issuedAt']))) throw invalid('issuedAt must be an ISO date');
  if (!c['payload'] || typeof c['payload'] !== 'object' || Array.isArray(c['payload'])) throw invalid('payload must be an object');
  if (c['signature'] !== undefined && (typeof c['signature'] !== 'string' || !/^[0-9a-f]{64}$/.test(c['signature']))) {
    throw invalid('signature must be 64 hex characters');
  }
  checkPayload(c['type'] as CommandType, c['payload'] as Record<string, unknown>);
  if (opts.signingKey) verifySignature(c, opts.signingKey, opts.now ?? Date.now());
  return c as unknown as Command;
}

function checkPayload(type: CommandType, p: Record<string, unknown>): void {
  const spec = PAYLOADS[type];
  for (const k of Object.keys(p)) {
    if (!(k in spec.required) && !(k in spec.optional)) throw invalid(`${type}: unknown payload field ${JSON.stringify(k.slice(0, 64))}`);
  }
  for (const [k, f] of Object.entries(spec.required)) {
    if (p[k] === undefined) throw invalid(`${type}: payload.${k} is required`);
    checkField(type, k, f, p[k]);
  }
  for (const [k, f] of Object.entries(spec.optional)) if (p[k] !== undefined) checkField(type, k, f, p[k]);
  if (p['encryptKeyFile'] && p['encryptKeyEnv']) throw invalid(`${type}: give encryptKeyFile or encryptKeyEnv, not both`);
  if (p['decryptKeyFile'] && p['decryptKeyEnv']) throw invalid(`${type}: give decryptKeyFile or decryptKeyEnv, not both`);
}

function checkField(type: string, key: string, f: FieldSpec, v: unknown): void {
  const where = `${type}: payload.${key}`;
  switch (f.type) {
    case 'string':
      if (typeof v !== 'string' || v.length === 0) throw invalid(`${where} must be a non-empty string`);
      if (f.max && v.length > f.max) throw invalid(`${where} is longer than ${f.max} characters`);
      if (f.re && !f.re.test(v)) throw invalid(`${where} has characters that are not allowed`);
      if (f.absPath && (!v.startsWith('/') || v.split('/').includes('..') || v.includes('\0'))) throw invalid(`${where} must be an absolute path without '..'`);
      return;
    case 'number':
      if (typeof v !== 'number' || !Number.isFinite(v) || v < f.min || v > f.max) throw invalid(`${where} must be a number from ${f.min} to ${f.max}`);
      return;
    case 'boolean':
      if (typeof v !== 'boolean') throw invalid(`${where} must be true or false`);
      return;
    case 'enum':
      if (typeof v !== 'string' || !f.values.includes(v)) throw invalid(`${where} must be one of ${f.values.join(', ')}`);
      return;
  }
}

/** JSON with object keys sorted at every level: the bytes that are signed. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>)
    .filter(([, v]) => v !== undefined)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
}

export function signCommand<C extends Omit<Command, 'signature'>>(command: C, key: Buffer): C & { signature: string } {
  const { signature: _drop, ...rest } = command as C & { signature?: string };
  return { ...(rest as C), signature: createHmac('sha256', key).update(canonicalJson(rest)).digest('hex') };
}

function verifySignature(c: Record<string, unknown>, key: Buffer, now: number): void {
  const sig = c['signature'];
  if (typeof sig !== 'string') throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'command is not signed and this agent requires signed commands');
  const { signature: _drop, ...rest } = c;
  const want = createHmac('sha256', key).update(canonicalJson(rest)).digest();
  const got = Buffer.from(sig, 'hex');
  if (got.length !== want.length || !timingSafeEqual(got, want)) throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'command signature does not match');
  const issued = Date.parse(String(c['issuedAt']));
  if (Math.abs(now - issued) > SIGNATURE_WINDOW_MS) {
    throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'signed command is outside the 5-minute window (replay or clock skew)');
  }
}
