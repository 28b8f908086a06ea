import { z } from 'zod';
import { CbrError } from '../../core/errors.ts';
import { ID_RE, INSTANCE_NAME_RE, ROLE_RE } from '../../core/ids.ts';

/** Patterns shared by the bus messages; each one bounds its length, so a field is never an unbounded string. */
export const ID = ID_RE;
export const HOST = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;
export const NAME = INSTANCE_NAME_RE;
export const ENV = /^[A-Z_][A-Z0-9_]{0,63}$/;
export const ROLE = ROLE_RE;
/** Any one-line printable name (quoted in cassandra.yaml by the restore), as `cbr create --cluster-name` takes. */
export const CLUSTER = /^[^\u0000-\u001f\u007f-\u009f\u2028\u2029]{1,256}$/;

export function invalid(why: string): CbrError {
  return new CbrError('CBR_ERR_COMMAND_INVALID', why);
}

/** A key as a message quotes it: bounded, so a megabyte-long key does not make a megabyte-long reason. */
export function quoted(key: unknown): string {
  return JSON.stringify(String(key).slice(0, 64));
}

/**
 * The size limit before anything is decoded, then strict UTF-8 and JSON. `joined` words both decoding failures
 * as one (status queries say "not valid UTF-8 JSON").
 */
export function readJson(body: Buffer, what: string, limit: number, joined = false): unknown {
  if (body.length > limit) throw invalid(`${what} is ${body.length} bytes, the limit is ${limit}`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(body);
  } catch {
    throw invalid(`${what} is not valid ${joined ? 'UTF-8 JSON' : 'UTF-8'}`);
  }
  try {
    return JSON.parse(text);
  } catch {
    throw invalid(`${what} is not valid ${joined ? 'UTF-8 JSON' : 'JSON'}`);
  }
}

/**
 * The one issue a refusal reports, as the hand-written validators did: an unknown field first (a typo is the
 * likeliest mistake), then the first field in declaration order. Every schema words its own messages.
 */
export function firstIssue(error: z.ZodError): z.core.$ZodIssue {
  return error.issues.find((i) => i.code === 'unrecognized_keys') ?? error.issues[0]!;
}

/*
 * Payload fields. `where` is `<type>: payload.<key>`, the start of every message about the field; a required field
 * that is absent says so ("is required"), whatever else its schema checks.
 */

function required(where: string, wrong: string) {
  return (iss: { input?: unknown }) => (iss.input === undefined ? `${where} is required` : `${where} ${wrong}`);
}

/** A non-empty string, at most `max` characters, matching `re`; `absPath`: absolute, without `..` or NUL. */
export function text(where: string, o: { re?: RegExp; max?: number; absPath?: boolean }) {
  const wrong = 'must be a non-empty string';
  let s = z.string({ error: required(where, wrong) }).min(1, { error: `${where} ${wrong}` });
  if (o.max) s = s.max(o.max, { error: `${where} is longer than ${o.max} characters` });
  if (o.re) s = s.regex(o.re, { error: `${where} has characters that are not allowed` });
  if (o.absPath) {
    s = s.refine((v) => v.startsWith('/') && !v.split('/').includes('..') && !v.includes('\0'), { error: `${where} must be an absolute path without '..'` });
  }
  return s;
}

/** A finite number from min to max. */
export function count(where: string, min: number, max: number) {
  const wrong = `must be a number from ${min} to ${max}`;
  return z
    .number({ error: required(where, wrong) })
    .min(min, { error: `${where} ${wrong}` })
    .max(max, { error: `${where} ${wrong}` });
}

export function flag(where: string) {
  return z.boolean({ error: required(where, 'must be true or false') });
}

export function oneOf<const T extends readonly [string, ...string[]]>(where: string, values: T) {
  return z.enum(values, { error: required(where, `must be one of ${values.join(', ')}`) });
}
