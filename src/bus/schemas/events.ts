import { z } from 'zod';
import type { Progress } from '../../machines/common.ts';

/**
 * What travels on the events exchange (routing key `<host>.<workflow id>.<type>`, src/bus/topology.ts): one
 * schema per event type, the union discriminated by `type`. A subscriber parses every event with it and drops
 * what does not match; fields it does not know are dropped too (a newer agent may add some).
 *
 *   state     a workflow's machine changed state (its status, and its error once it has one)
 *   progress  bytes and files of the step that moves data (streaming, unpacking), about once a second
 *   result    a workflow or a command ended: its final state and the summary (warnings included), or its error
 *   rejected  a command was refused before it started anything (malformed, unauthorised, a replay)
 */

export const errorInfoSchema = z.object({ code: z.string(), message: z.string(), retryable: z.boolean() });

/** The machines' progress (they import no schema library): the schema must keep to their type. */
export const progressSchema = z.object({
  /** Bytes of file content read (backup) or written (restore) so far. */
  bytes: z.number(),
  files: z.number(),
  totalBytes: z.number(),
  totalFiles: z.number(),
  /** Bytes of the stored object so far (after compression and encryption). */
  storedBytes: z.number(),
}) satisfies z.ZodType<Progress>;

const common = {
  /** `<host>:<outbox seq>` — unique, and ordered per host. */
  eventId: z.string().optional(),
  host: z.string(),
  workflowId: z.string(),
  /** 'backup' | 'restore' for workflows; the command type otherwise ('command' for a rejected one). */
  kind: z.string(),
  at: z.string(),
  /**
   * Not from the outbox: made by a subscriber from an agent's status answer after it (re)connected, to replay what
   * it may have missed (the present state, and the result of a finished workflow). Has no eventId.
   */
  resync: z.literal(true).optional(),
};

export const busEventSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('state'), ...common, state: z.string(), status: z.string(), error: errorInfoSchema.nullable() }),
  /** `step`: the state whose work it measures (streaming, unpacking). */
  z.object({ type: z.literal('progress'), ...common, step: z.string(), progress: progressSchema }),
  z.object({
    type: z.literal('result'),
    ...common,
    state: z.string(),
    status: z.string(),
    error: errorInfoSchema.nullable(),
    /** What the workflow or command came to; absent when a command failed to start. */
    result: z.record(z.string(), z.unknown()).optional(),
  }),
  z.object({ type: z.literal('rejected'), ...common, error: errorInfoSchema.nullable() }),
]);

type KeysOfUnion<T> = T extends unknown ? keyof T : never;
/**
 * Each variant also declares the other variants' fields as absent, so that code reading a mixed stream may read
 * any field (undefined where the variant has none) and still narrows on `type`.
 */
type Exclusive<T, K extends PropertyKey = KeysOfUnion<T>> = T extends unknown ? T & { [P in Exclude<K, keyof T>]?: undefined } : never;

export type BusEvent = Exclusive<z.infer<typeof busEventSchema>>;
export type BusEventType = BusEvent['type'];

/** An event as a subscriber receives it, or null when the body is not one. */
export function parseEvent(body: Buffer): BusEvent | null {
  let value: unknown;
  try {
    value = JSON.parse(body.toString('utf8'));
  } catch {
    return null;
  }
  const e = busEventSchema.safeParse(value);
  return e.success ? e.data : null;
}
