import { z } from 'zod';
import { errorInfoSchema, progressSchema } from './events.ts';
import { count, firstIssue, HOST, ID, invalid, quoted, readJson, text } from './fields.ts';

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

const query = {
  version: z.literal(1, { error: 'status query: version must be 1' }),
  id: z
    .string({ error: 'status query: id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}' })
    .regex(ID, { error: 'status query: id must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}' }),
  type: z.literal(STATUS_QUERY_TYPE, { error: `status query: type must be ${STATUS_QUERY_TYPE}` }),
  /** The host id of the agent asked, or '*' for every agent (published with routing key ''). */
  host: z
    .string({ error: 'status query: host must be a host id or "*"' })
    .refine((h) => h === '*' || HOST.test(h), { error: 'status query: host must be a host id or "*"' }),
  issuedAt: z
    .string({ error: 'status query: issuedAt must be an ISO date' })
    .refine((s) => !Number.isNaN(Date.parse(s)), { error: 'status query: issuedAt must be an ISO date' }),
  /** One workflow (or command) id, or up to `limit` recent workflows (default and maximum STATUS_MAX_WORKFLOWS). */
  payload: z.strictObject(
    {
      workflowId: text(`${STATUS_QUERY_TYPE}: payload.workflowId`, { re: ID }).optional(),
      limit: count(`${STATUS_QUERY_TYPE}: payload.limit`, 1, STATUS_MAX_WORKFLOWS).optional(),
    },
    {
      error: (iss) =>
        iss.code === 'unrecognized_keys' ? `${STATUS_QUERY_TYPE}: unknown payload field ${quoted(iss.keys[0])}` : 'status query: payload must be an object',
    },
  ),
};
const QUERY_ORDER = Object.keys(query);

export const statusQuerySchema = z.strictObject(query, {
  error: (iss) => (iss.code === 'unrecognized_keys' ? `status query: unknown field ${quoted(iss.keys[0])}` : 'status query must be a JSON object'),
});
export type StatusQuery = z.infer<typeof statusQuerySchema>;

/** One workflow as an agent knows it now: what its events would have told, folded into one record. */
export const workflowStatusSchema = z.object({
  workflowId: z.string().regex(ID),
  /** 'backup' | 'restore'; for a command that starts no workflow (or could not start one), its command type. */
  kind: z.string(),
  /** The machine state, as in state events ('streaming', 'compensating.clearingSnapshot', 'completed', 'failed'). */
  state: z.string(),
  /** 'active' | 'done' (| 'error' | 'stopped'). */
  status: z.string(),
  error: errorInfoSchema.nullable(),
  /** The latest progress of an active workflow, and the state whose work it measures. */
  step: z.string().optional(),
  progress: progressSchema.optional(),
  /** When done: the summary the final `result` event carries. */
  result: z.record(z.string(), z.unknown()).optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
});
export type WorkflowStatus = z.infer<typeof workflowStatusSchema>;

export const statusReplySchema = z.object({
  version: z.literal(1),
  type: z.literal('status.reply'),
  queryId: z.string(),
  host: z.string().regex(HOST),
  /** The Cassandra cluster_name of the agent's node, once the agent has read it (a cluster backup finds its hosts by it). */
  cluster: z.string().max(255).optional(),
  /** The broadcast address of the agent's node, read with its cluster name. */
  address: z.string().max(255).optional(),
  at: z.string(),
  workflows: z.array(workflowStatusSchema),
  /** More workflows matched than the reply lists. */
  truncated: z.boolean(),
  /** Set when the query was refused (then `workflows` is empty). */
  error: errorInfoSchema.optional(),
});
export type StatusReply = z.infer<typeof statusReplySchema>;

/** The replyTo of a status query when the agent may answer to it (a server-named queue), else null. */
export function statusReplyTo(value: unknown): string | null {
  return typeof value === 'string' && REPLY_TO.test(value) ? value : null;
}

/** Parses and validates a status query body; throws CBR_ERR_COMMAND_INVALID. */
export function parseStatusQuery(body: Buffer, opts: { hostId: string }): StatusQuery {
  const value = readJson(body, 'status query', MAX_STATUS_QUERY_BYTES, true);
  const parsed = statusQuerySchema.safeParse(value);
  const host = (value as { host?: unknown } | null)?.host;
  const otherHost = typeof host === 'string' && HOST.test(host) && host !== opts.hostId ? `status query is for host ${host}, this is ${opts.hostId}` : null;
  if (parsed.success) {
    if (otherHost) throw invalid(otherHost);
    return parsed.data;
  }
  // In the order the fields are read: unknown fields, version, id, type, host, whether the host is this one, the rest.
  const first = firstIssue(parsed.error);
  const field = first.code === 'unrecognized_keys' && first.path.length === 0 ? -1 : QUERY_ORDER.indexOf(String(first.path[0]));
  throw invalid(otherHost && field > QUERY_ORDER.indexOf('host') ? otherHost : first.message);
}

/**
 * What a subscriber reads of an entry: the fields it lists workflows by; the others are checked when present. An
 * agent always sends `error` and `createdAt`; an entry without them reads as no error, created when last changed.
 */
const listedWorkflowSchema = workflowStatusSchema
  .partial()
  .required({ workflowId: true, kind: true, state: true, status: true, updatedAt: true })
  .transform((w): WorkflowStatus => ({ ...w, error: w.error ?? null, createdAt: w.createdAt ?? w.updatedAt }));

/** A reply's own fields, checked for shape only (an agent wrote it); its entries are read one by one. */
const receivedReplySchema = statusReplySchema.extend({
  at: z.string().catch(''),
  cluster: z.string().max(255).optional().catch(undefined),
  address: z.string().max(255).optional().catch(undefined),
  workflows: z.array(z.unknown()),
  truncated: z.boolean().catch(false),
  error: errorInfoSchema.optional().catch(undefined),
});

/**
 * A status reply as a subscriber receives it, or null when the body is not one. Entries that are not well-formed
 * are dropped.
 */
export function parseStatusReply(body: Buffer): StatusReply | null {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  const r = receivedReplySchema.safeParse(value);
  if (!r.success) return null;
  const workflows: WorkflowStatus[] = [];
  for (const w of r.data.workflows) {
    const entry = listedWorkflowSchema.safeParse(w);
    if (entry.success) workflows.push(entry.data);
  }
  return { ...r.data, workflows };
}
