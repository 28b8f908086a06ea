import { createHmac, timingSafeEqual } from 'node:crypto';
import { CbrError } from '../core/errors.ts';
import type { BusEvent } from './topology.ts';

/**
 * Commands on the bus: one JSON envelope, validated field by field (unknown fields are refused, so a typo never
 * silently drops an option; only a message's own keys count, so `constructor` or `__proto__` are unknown too).
 * With a signing key configured, the signature must match: `v2:` + HMAC-SHA256 of the canonical JSON of
 * ["cbr.command.v2", bus prefix, envelope without `signature`]. Bus access alone then cannot trigger a destructive
 * restore, and a command signed for one prefix (one set of exchanges and queues) is refused under another. The
 * agent also remembers every signed command id for the signing window, so a replay is refused (src/bus/agent.ts).
 */

export const COMMAND_TYPES = ['backup.create', 'backup.delete', 'restore.create', 'workflow.cancel'] as const;
export type CommandType = (typeof COMMAND_TYPES)[number];
export const MAX_COMMAND_BYTES = 64 * 1024;
/** A signed command older (or newer) than this is refused as a replay. */
export const SIGNATURE_WINDOW_MS = 5 * 60 * 1000;
/** The signature format: `v2:<64 hex>`, over the bus prefix and the envelope. v1 (bare hex, no prefix) is refused. */
export const SIGNATURE_VERSION = 'v2';
const SIGNATURE_RE = /^v2:[0-9a-f]{64}$/;
const SIGNATURE_V1_RE = /^[0-9a-f]{64}$/;

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
  /** `v2:<hex>` (see signCommand); required when the agent has a signing key. */
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

type FieldSpec =
  | { type: 'string'; re?: RegExp; max?: number; absPath?: boolean }
  | { type: 'number'; min: number; max: number }
  | { type: 'boolean' }
  | { type: 'enum'; values: readonly string[] };

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

/** Only an object's own keys: `'constructor' in {}` is true, `Object.hasOwn({}, 'constructor')` is not. */
function own(o: object, k: string): unknown {
  return Object.hasOwn(o, k) ? (o as Record<string, unknown>)[k] : undefined;
}

const ENVELOPE_FIELDS = new Set(['version', 'id', 'type', 'host', 'issuedAt', 'payload', 'signature']);

/**
 * Parses and validates a raw message body; throws CBR_ERR_COMMAND_INVALID or CBR_ERR_COMMAND_UNAUTHORIZED. With a
 * signing key, the signature is checked against `prefix`, the bus prefix this agent consumes under (default '').
 */
export function parseCommand(body: Buffer, opts: { hostId: string; signingKey?: Buffer | null; prefix?: string; now?: number }): Command {
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
  for (const k of Object.keys(c)) if (!ENVELOPE_FIELDS.has(k)) throw invalid(`unknown field ${JSON.stringify(k.slice(0, 64))}`);
  const version = own(c, 'version');
  const id = own(c, 'id');
  const type = own(c, 'type');
  const host = own(c, 'host');
  const issuedAt = own(c, 'issuedAt');
  const payload = own(c, 'payload');
  const signature = own(c, 'signature');
  if (version !== 1) throw invalid('version must be 1');
  if (typeof id !== 'string' || !ID.test(id)) throw invalid('id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}');
  if (typeof type !== 'string' || !(COMMAND_TYPES as readonly string[]).includes(type) || !Object.hasOwn(PAYLOADS, type)) {
    throw invalid(`unknown command type ${JSON.stringify(String(type).slice(0, 64))}`);
  }
  if (typeof host !== 'string' || !HOST.test(host)) throw invalid('host must be a host id');
  if (host !== opts.hostId) throw invalid(`command is for host ${host}, this is ${opts.hostId}`);
  if (typeof issuedAt !== 'string' || Number.isNaN(Date.parse(issuedAt))) throw invalid('issuedAt must be an ISO date');
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) throw invalid('payload must be an object');
  if (signature !== undefined && (typeof signature !== 'string' || !(SIGNATURE_RE.test(signature) || SIGNATURE_V1_RE.test(signature)))) {
    throw invalid('signature must be "v2:" followed by 64 hex characters');
  }
  checkPayload(type as CommandType, payload as Record<string, unknown>);
  if (opts.signingKey) verifySignature(c, opts.signingKey, opts.prefix ?? '', opts.now ?? Date.now());
  return c as unknown as Command;
}

function checkPayload(type: CommandType, p: Record<string, unknown>): void {
  const spec = PAYLOADS[type];
  for (const k of Object.keys(p)) {
    if (!Object.hasOwn(spec.required, k) && !Object.hasOwn(spec.optional, k)) {
      throw invalid(`${type}: unknown payload field ${JSON.stringify(k.slice(0, 64))}`);
    }
  }
  for (const [k, f] of Object.entries(spec.required)) {
    const v = own(p, k);
    if (v === undefined) throw invalid(`${type}: payload.${k} is required`);
    checkField(type, k, f, v);
  }
  for (const [k, f] of Object.entries(spec.optional)) {
    const v = own(p, k);
    if (v !== undefined) checkField(type, k, f, v);
  }
  if (own(p, 'encryptKeyFile') && own(p, 'encryptKeyEnv')) throw invalid(`${type}: give encryptKeyFile or encryptKeyEnv, not both`);
  if (own(p, 'decryptKeyFile') && own(p, 'decryptKeyEnv')) throw invalid(`${type}: give decryptKeyFile or decryptKeyEnv, not both`);
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

/** The HMAC of an envelope (without its signature) for one bus prefix: what `v2:` signatures carry. */
function mac(key: Buffer, prefix: string, rest: Record<string, unknown>): Buffer {
  return createHmac('sha256', key)
    .update(canonicalJson(['cbr.command.v2', prefix, rest]))
    .digest();
}

/**
 * Signs a command for the bus prefix it will be published under (the exchange `<prefix>cbr.commands`): an agent
 * consuming under another prefix computes another HMAC and refuses it.
 */
export function signCommand<C extends Omit<Command, 'signature'>>(command: C, key: Buffer, prefix: string): C & { signature: string } {
  const { signature: _drop, ...rest } = command as C & { signature?: string };
  return { ...(rest as C), signature: `${SIGNATURE_VERSION}:${mac(key, prefix, rest).toString('hex')}` };
}

function verifySignature(c: Record<string, unknown>, key: Buffer, prefix: string, now: number): void {
  const sig = own(c, 'signature');
  if (typeof sig !== 'string') throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'command is not signed and this agent requires signed commands');
  if (!SIGNATURE_RE.test(sig)) {
    throw new CbrError(
      'CBR_ERR_COMMAND_UNAUTHORIZED',
      'command carries a v1 signature (not bound to the bus prefix); this agent takes v2 only: upgrade the client that sent it',
    );
  }
  const { signature: _drop, ...rest } = c;
  const want = mac(key, prefix, rest);
  const got = Buffer.from(sig.slice(SIGNATURE_VERSION.length + 1), 'hex');
  if (got.length !== want.length || !timingSafeEqual(got, want)) {
    throw new CbrError(
      'CBR_ERR_COMMAND_UNAUTHORIZED',
      `command signature does not match (another key, an altered command, or signed for another bus prefix than ${JSON.stringify(prefix)})`,
    );
  }
  const issued = Date.parse(String(own(c, 'issuedAt')));
  if (Math.abs(now - issued) > SIGNATURE_WINDOW_MS) {
    throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'signed command is outside the 5-minute window (replay or clock skew)');
  }
}

/*
 * Status queries: a read-only RPC beside the commands. A subscriber that was away (a broker outage, a restart)
 * asks the agents what it missed instead of trusting that it saw every event.
 *
 *   query  → exchange <p>cbr.status, routing key = host id (or '' for every agent), AMQP properties
 *            replyTo = the asker's server-named queue (amq.gen-…), correlationId = query id, body:
 *            {version: 1, id, type: 'status.query', host: <host id> | '*', issuedAt, payload: {workflowId?, limit?}}
 *   reply  → default exchange to replyTo, type 'cbr.status.reply', correlationId = query id, body: StatusReply
 *
 * The query is parsed as strictly as a command (size, UTF-8, own keys only, unknown fields refused, patterns).
 * It is never signed, even where commands must be: it changes nothing, and what it reveals (states, progress,
 * results and coded errors of the host's recent workflows, the same summary the final events carry; never a key
 * or a password) already goes out on the events exchange to anyone allowed to bind a queue there. The agent
 * answers only into a server-named queue, so a query cannot make it write into a command queue, and an answer
 * is bounded (STATUS_MAX_WORKFLOWS, the last STATUS_RECENT_MS plus whatever is still active).
 */

export const STATUS_QUERY_TYPE = 'status.query';
/** The AMQP `type` property of replies (events carry none), so a subscriber tells them apart on its queue. */
export const STATUS_REPLY_TYPE = 'cbr.status.reply';
export const MAX_STATUS_QUERY_BYTES = 4096;
/** The most workflows one reply lists. */
export const STATUS_MAX_WORKFLOWS = 200;
/** A reply for "all recent workflows" lists the active ones and those that changed within this window. */
export const STATUS_RECENT_MS = 24 * 60 * 60 * 1000;
/** Server-named queues only (`amq.` names cannot be declared by clients). */
const REPLY_TO = /^amq\.gen-[A-Za-z0-9_+/=-]{1,200}$/;

export interface StatusQuery {
  version: 1;
  id: string;
  type: typeof STATUS_QUERY_TYPE;
  /** The host id of the agent asked, or '*' for every agent (published with routing key ''). */
  host: string;
  issuedAt: string;
  /** One workflow (or command) id, or up to `limit` recent workflows (default and maximum STATUS_MAX_WORKFLOWS). */
  payload: { workflowId?: string; limit?: number };
}

/** One workflow as an agent knows it now: what its events would have told, folded into one record. */
export interface WorkflowStatus {
  workflowId: string;
  /** 'backup' | 'restore'; for a command that starts no workflow (or could not start one), its command type. */
  kind: string;
  /** The machine state, as in state events ('streaming', 'compensating.clearingSnapshot', 'completed', 'failed'). */
  state: string;
  /** 'active' | 'done' (| 'error' | 'stopped'). */
  status: string;
  error: { code: string; message: string; retryable: boolean } | null;
  /** The latest progress of an active workflow, and the state whose work it measures. */
  step?: string;
  progress?: NonNullable<BusEvent['progress']>;
  /** When done: the summary the final `result` event carries. */
  result?: Record<string, unknown>;
  createdAt: string;
  updatedAt: string;
}

export interface StatusReply {
  version: 1;
  type: 'status.reply';
  queryId: string;
  host: string;
  at: string;
  workflows: WorkflowStatus[];
  /** More workflows matched than the reply lists. */
  truncated: boolean;
  /** Set when the query was refused (then `workflows` is empty). */
  error?: { code: string; message: string; retryable: boolean };
}

const STATUS_PAYLOAD: Record<string, FieldSpec> = {
  workflowId: { type: 'string', re: ID },
  limit: { type: 'number', min: 1, max: STATUS_MAX_WORKFLOWS },
};
const STATUS_FIELDS = new Set(['version', 'id', 'type', 'host', 'issuedAt', 'payload']);

/** The replyTo of a status query when the agent may answer to it (a server-named queue), else null. */
export function statusReplyTo(value: unknown): string | null {
  return typeof value === 'string' && REPLY_TO.test(value) ? value : null;
}

/** Parses and validates a status query body; throws CBR_ERR_COMMAND_INVALID. */
export function parseStatusQuery(body: Buffer, opts: { hostId: string }): StatusQuery {
  if (body.length > MAX_STATUS_QUERY_BYTES) throw invalid(`status query is ${body.length} bytes, the limit is ${MAX_STATUS_QUERY_BYTES}`);
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw invalid('status query is not valid UTF-8 JSON');
  }
  if (!value || typeof value !== 'object' || Array.isArray(value)) throw invalid('status query must be a JSON object');
  const q = value as Record<string, unknown>;
  const get = (k: string): unknown => (Object.hasOwn(q, k) ? q[k] : undefined);
  for (const k of Object.keys(q)) if (!STATUS_FIELDS.has(k)) throw invalid(`status query: unknown field ${JSON.stringify(k.slice(0, 64))}`);
  if (get('version') !== 1) throw invalid('status query: version must be 1');
  const id = get('id');
  if (typeof id !== 'string' || !ID.test(id)) throw invalid('status query: id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}');
  if (get('type') !== STATUS_QUERY_TYPE) throw invalid(`status query: type must be ${STATUS_QUERY_TYPE}`);
  const host = get('host');
  if (host !== '*' && (typeof host !== 'string' || !HOST.test(host))) throw invalid('status query: host must be a host id or "*"');
  if (host !== '*' && host !== opts.hostId) throw invalid(`status query is for host ${host}, this is ${opts.hostId}`);
  const issuedAt = get('issuedAt');
  if (typeof issuedAt !== 'string' || Number.isNaN(Date.parse(issuedAt))) throw invalid('status query: issuedAt must be an ISO date');
  const payload = get('payload');
  if (!payload || typeof payload !== 'object' || Array.isArray(payload)) throw invalid('status query: payload must be an object');
  const p = payload as Record<string, unknown>;
  for (const k of Object.keys(p)) {
    if (!Object.hasOwn(STATUS_PAYLOAD, k)) throw invalid(`${STATUS_QUERY_TYPE}: unknown payload field ${JSON.stringify(k.slice(0, 64))}`);
    const v = p[k];
    if (v !== undefined) checkField(STATUS_QUERY_TYPE, k, STATUS_PAYLOAD[k]!, v);
  }
  return q as unknown as StatusQuery;
}

/**
 * A status reply as a subscriber receives it, or null when the body is not one. Checked for shape only (an
 * agent wrote it); entries that are not well-formed are dropped.
 */
export function parseStatusReply(body: Buffer): StatusReply | null {
  let v: unknown;
  try {
    v = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || Array.isArray(v)) return null;
  const r = v as Record<string, unknown>;
  if (r['type'] !== 'status.reply' || r['version'] !== 1 || typeof r['queryId'] !== 'string' || typeof r['host'] !== 'string' || !HOST.test(r['host']))
    return null;
  if (!Array.isArray(r['workflows'])) return null;
  const str = (x: unknown) => typeof x === 'string';
  const workflows = (r['workflows'] as unknown[]).filter((w): w is WorkflowStatus => {
    if (!w || typeof w !== 'object') return false;
    const e = w as Record<string, unknown>;
    return str(e['workflowId']) && ID.test(String(e['workflowId'])) && str(e['kind']) && str(e['state']) && str(e['status']) && str(e['updatedAt']);
  });
  return { ...(r as unknown as StatusReply), workflows, truncated: r['truncated'] === true };
}
