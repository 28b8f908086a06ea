/**
 * A small structured logger: JSON lines on stderr (or a sink), child loggers with fixed bindings, and
 * redaction at the logger so a password or key can never be written even if a caller passes one.
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
const LEVELS: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(bindings: Record<string, unknown>): Logger;
}

/** Field names whose values are secrets. Paths and ids of secrets (passwordFile, keyFingerprint, objectKey) are not. */
const SECRET_KEY = /^(key|secret|token|credentials?|salted_?hash|authorization|pass(word|wd|phrase)?|(encryption|signing|api|private|secret)_?key)$/i;

export function redact(value: unknown, depth = 0): unknown {
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    // Paths to key files are not secrets; their contents are.
    out[k] = SECRET_KEY.test(k) ? '[redacted]' : redact(v, depth + 1);
  }
  return out;
}

export function createLogger(opts: { level?: Level; sink?: (line: string) => void; bindings?: Record<string, unknown> } = {}): Logger {
  const min = LEVELS[opts.level ?? ((process.env['CBR_LOG_LEVEL'] as Level) || 'info')] ?? LEVELS.info;
  const sink = opts.sink ?? ((line: string) => process.stderr.write(`${line}\n`));
  const bindings = opts.bindings ?? {};
  const write = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (LEVELS[level] < min) return;
    sink(JSON.stringify(redact({ time: new Date().toISOString(), level, ...bindings, msg, ...fields })));
  };
  return {
    debug: (m, f) => write('debug', m, f),
    info: (m, f) => write('info', m, f),
    warn: (m, f) => write('warn', m, f),
    error: (m, f) => write('error', m, f),
    child: (b) => createLogger({ ...opts, bindings: { ...bindings, ...b } }),
  };
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};
