import { createHmac, timingSafeEqual } from 'node:crypto';
import { CbrError } from '../core/errors.ts';
import type { Command } from './schemas/commands.ts';

/**
 * Command signatures. With a signing key configured, the signature must match: `v2:` + HMAC-SHA256 of the
 * canonical JSON of ["cbr.command.v2", bus prefix, envelope without `signature`]. Bus access alone then cannot
 * trigger a destructive restore, and a command signed for one prefix (one set of exchanges and queues) is refused
 * under another. The agent also remembers every signed command id for the signing window, so a replay is refused
 * (src/bus/agent.ts).
 */

/** A signed command older (or newer) than this is refused as a replay. */
export const SIGNATURE_WINDOW_MS = 5 * 60 * 1000;
/** The signature format: `v2:<64 hex>`, over the bus prefix and the envelope. v1 (bare hex, no prefix) is refused. */
export const SIGNATURE_VERSION = 'v2';
const SIGNATURE_RE = /^v2:[0-9a-f]{64}$/;

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

/**
 * Checks the signature of a command as it came off the wire (already validated: `signature`, when present, has
 * the v1 or v2 shape; `issuedAt` is a date); throws CBR_ERR_COMMAND_UNAUTHORIZED.
 */
export function verifySignature(c: Record<string, unknown>, key: Buffer, prefix: string, now: number): void {
  const sig = Object.hasOwn(c, 'signature') ? c['signature'] : undefined;
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
  const issued = Date.parse(String(c['issuedAt']));
  if (Math.abs(now - issued) > SIGNATURE_WINDOW_MS) {
    throw new CbrError('CBR_ERR_COMMAND_UNAUTHORIZED', 'signed command is outside the 5-minute window (replay or clock skew)');
  }
}
