import { createRequire } from 'node:module';
import { type DestinationStream, type Logger as PinoLogger, pino } from 'pino';

/**
 * Structured logs through pino: JSON lines on stderr (or a sink), child loggers with fixed bindings, and
 * redaction at the logger so a password or key can never be written even if a caller passes one. Humans at a
 * terminal get pino-pretty instead of JSON. The wrapper keeps our call order, `log.info(msg, fields)`.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: readonly Level[] = ['debug', 'info', 'warn', 'error'];

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Field names whose values are secrets. Paths and ids of secrets (passwordFile, keyFingerprint, objectKey) are not. */
const SECRET_KEY = /^(key|secret|token|credentials?|salted_?hash|authorization|pass(word|wd|phrase)?|(encryption|signing|api|private|secret)_?key)$/i;

/** Deeper than this a value is cut rather than walked, so neither a cycle nor a buried secret gets through. */
const MAX_DEPTH = 6;

/**
 * A copy of `value` with every secret-named key's value replaced, at any depth. pino's own `redact` takes fixed
 * paths, which cannot say "a key named password wherever it is", so this pass runs in `formatters.log` (only
 * for lines that pass the level) and on child bindings. An Error becomes a plain object with its type, message,
 * stack, cause and own properties, the properties redacted like any others (an API error may carry the request
 * it failed on, headers and all).
 */
export function redact(value: unknown, depth = 0): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (depth > MAX_DEPTH) return '[...]';
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value instanceof Error) return redactError(value, depth);
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return redact((value as { toJSON(): unknown }).toJSON(), depth);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    // Paths to key files are not secrets; their contents are.
    out[k] = SECRET_KEY.test(k) ? '[redacted]' : redact(v, depth + 1);
  }
  return out;
}

function redactError(err: Error, depth: number): Record<string, unknown> {
  const out: Record<string, unknown> = { type: err.name, message: err.message, stack: err.stack };
  for (const [k, v] of Object.entries(err)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : redact(v, depth + 1);
  if (err.cause !== undefined) out['cause'] = redact(err.cause, depth + 1);
  if (err instanceof AggregateError) out['errors'] = redact(err.errors, depth + 1);
  return out;
}

export function createLogger(opts: { level?: Level; sink?: (line: string) => void; bindings?: Record<string, unknown> } = {}): Logger {
  const wanted = opts.level ?? process.env['CBR_LOG_LEVEL'];
  const level: Level = LEVELS.includes(wanted as Level) ? (wanted as Level) : 'info';
  const root = pino(
    {
      level,
      base: null,
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }), log: (fields) => redact(fields) as Record<string, unknown> },
      // pino's `err` serializer would run after the redaction pass and rebuild what it already made of an Error.
      serializers: { err: (value: unknown) => value },
      // Above MAX_DEPTH, so the redaction pass is what cuts deep values.
      depthLimit: MAX_DEPTH + 4,
    },
    destination(opts.sink),
  );
  return wrap(opts.bindings ? root.child(redact(opts.bindings) as Record<string, unknown>) : root);
}

function wrap(p: PinoLogger): Logger {
  // pino takes (fields, msg); a line without fields skips the merge object altogether.
  const at = (level: Level) => (msg: string, fields?: Record<string, unknown>) => (fields ? p[level](fields, msg) : p[level](msg));
  return {
    debug: at('debug'),
    info: at('info'),
    warn: at('warn'),
    error: at('error'),
    // pino runs `formatters.bindings` on the root's bindings only, so a child's are redacted here.
    child: (bindings) => wrap(p.child(redact(bindings) as Record<string, unknown>)),
  };
}

/** A sink gets each line synchronously, without its newline; stderr is written synchronously too, so no line is lost at exit. */
function destination(sink: ((line: string) => void) | undefined): DestinationStream {
  if (sink) return { write: (line: string) => sink(line.endsWith('\n') ? line.slice(0, -1) : line) };
  if (process.stderr.isTTY) {
    // Loaded only here: a service or a pipe never pays for the pretty printer.
    const pretty = createRequire(import.meta.url)('pino-pretty') as typeof import('pino-pretty');
    return pretty({ destination: 2, sync: true, translateTime: 'SYS:HH:MM:ss.l' });
  }
  return pino.destination({ dest: 2, sync: true });
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
