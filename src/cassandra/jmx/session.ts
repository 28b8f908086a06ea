import { type ChildProcessWithoutNullStreams, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';

/** How to start the child: a command and its arguments (never a secret), and the first line it reads (secrets go here). */
export interface ChildSpec {
  command: string;
  args: string[];
  /** The connection line written to the child's stdin before any request: host, port, user, password. */
  hello: Record<string, unknown>;
}

/** A failure the child reported (`ok: false`), or the child's own end; `aborted` when the caller's signal fired. */
export class JmxSessionError extends Error {
  readonly aborted: boolean;
  constructor(message: string, aborted = false) {
    super(message);
    this.name = 'JmxSessionError';
    this.aborted = aborted;
  }
}

interface Pending {
  id: number;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Live {
  proc: ChildProcessWithoutNullStreams;
  pending: Pending | null;
  stderr: string;
  ended: boolean;
}

/** Every child any session started, so a dying process takes them along. */
const children = new Set<ChildProcessWithoutNullStreams>();
let exitHook = false;

/**
 * One long-lived child (cbr's JMX client) serving JSON-line requests one at a time, started at the first request.
 * While idle it neither keeps the process alive (its handles are unref'd) nor lingers (ended after `idleMs`); an
 * aborted request kills it (a JMX call cannot be taken back) and the next request starts a new one.
 */
export class JmxSession {
  private live: Live | null = null;
  private queue: Promise<void> = Promise.resolve();
  private nextId = 1;
  private idleTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly spec: () => Promise<ChildSpec>;
  private readonly idleMs: number;

  constructor(spec: () => Promise<ChildSpec>, idleMs = 30_000) {
    this.spec = spec;
    this.idleMs = idleMs;
  }

  /** Sends `{ id, op, ...params }` and resolves with the child's `result`. */
  request(op: string, params: Record<string, unknown> = {}, signal?: AbortSignal): Promise<unknown> {
    if (signal?.aborted) return Promise.reject(new JmxSessionError(`${op} aborted`, true));
    if (this.closed) return Promise.reject(new JmxSessionError(`${op}: the JMX session is closed`));
    return new Promise<unknown>((resolve, reject) => {
      let settled = false;
      const settle = (fn: () => void) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        fn();
      };
      let inFlight: Live | null = null;
      const onAbort = () => {
        // In flight: the child is busy with a call nobody can cancel, so it goes. Queued: it is simply never sent.
        if (inFlight) this.kill(inFlight);
        settle(() => reject(new JmxSessionError(`${op} aborted`, true)));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      const turn = async () => {
        if (settled) return;
        try {
          const live = await this.ensure();
          if (settled) return;
          inFlight = live;
          const result = await this.send(live, op, params);
          settle(() => resolve(result));
        } catch (err) {
          settle(() => reject(err instanceof Error ? err : new Error(String(err))));
        } finally {
          inFlight = null;
        }
      };
      this.queue = this.queue.then(turn, turn);
    });
  }

  /** Ends the child (stdin closed; killed if it does not go) and refuses further requests. */
  close(): void {
    this.closed = true;
    if (this.live) this.end(this.live);
  }

  /** The running child's pid, for tests and diagnostics. */
  get pid(): number | undefined {
    return this.live?.proc.pid;
  }

  private async ensure(): Promise<Live> {
    if (this.live && !this.live.ended) return this.live;
    const spec = await this.spec();
    const proc = spawn(spec.command, spec.args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const live: Live = { proc, pending: null, stderr: '', ended: false };
    children.add(proc);
    if (!exitHook) {
      exitHook = true;
      process.once('exit', () => {
        for (const c of children) c.kill('SIGKILL');
      });
    }
    proc.stderr.setEncoding('utf8');
    proc.stderr.on('data', (d: string) => {
      live.stderr = (live.stderr + d).slice(-4096);
    });
    const lines = createInterface({ input: proc.stdout });
    lines.on('line', (line) => this.answer(live, line));
    const gone = (why: string) => {
      if (live.ended && !live.pending) return;
      live.ended = true;
      children.delete(proc);
      if (this.live === live) this.live = null;
      const p = live.pending;
      live.pending = null;
      p?.reject(new JmxSessionError(`the JMX client ${why}${live.stderr.trim() ? `: ${lastLines(live.stderr)}` : ''}`));
    };
    proc.on('error', (err) => gone(`could not run (${err.message})`));
    proc.on('exit', (code, sig) => gone(`exited (${sig ?? `status ${code}`})`));
    proc.stdin.on('error', () => {}); // EPIPE when it died: reported by 'exit'.
    proc.stdin.write(`${JSON.stringify(spec.hello)}\n`);
    this.live = live;
    this.idle(live);
    return live;
  }

  private send(live: Live, op: string, params: Record<string, unknown>): Promise<unknown> {
    if (live.ended) return Promise.reject(new JmxSessionError(`the JMX client exited${live.stderr.trim() ? `: ${lastLines(live.stderr)}` : ''}`));
    const id = this.nextId++;
    this.busy(live);
    return new Promise<unknown>((resolve, reject) => {
      live.pending = { id, resolve, reject };
      live.proc.stdin.write(`${JSON.stringify({ ...params, id, op })}\n`);
    }).finally(() => {
      if (!live.ended) this.idle(live);
    });
  }

  private answer(live: Live, line: string): void {
    let msg: { id?: unknown; ok?: unknown; result?: unknown; error?: unknown };
    try {
      msg = JSON.parse(line);
    } catch {
      live.stderr = `${live.stderr}\n${line}`.slice(-4096); // Not ours (a JVM warning on stdout): keep it for the error.
      return;
    }
    const p = live.pending;
    if (!p || msg.id !== p.id) return;
    live.pending = null;
    if (msg.ok === true) p.resolve(msg.result ?? null);
    else p.reject(new JmxSessionError(typeof msg.error === 'string' && msg.error ? msg.error : 'the JMX client reported a failure'));
  }

  /** A request is in flight: the child and its pipes keep the process alive until it answers. */
  private busy(live: Live): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    live.proc.ref();
    for (const s of [live.proc.stdin, live.proc.stdout, live.proc.stderr]) (s as unknown as { ref?: () => void }).ref?.();
  }

  /** Nothing in flight: the child must not keep the process alive, and ends after idleMs. */
  private idle(live: Live): void {
    live.proc.unref();
    for (const s of [live.proc.stdin, live.proc.stdout, live.proc.stderr]) (s as unknown as { unref?: () => void }).unref?.();
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = setTimeout(() => {
      if (this.live === live && !live.pending) this.end(live);
    }, this.idleMs);
    this.idleTimer.unref();
  }

  private end(live: Live): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = null;
    if (this.live === live) this.live = null;
    live.proc.stdin.end();
    const t = setTimeout(() => live.proc.kill('SIGKILL'), 2000);
    t.unref();
    live.proc.once('exit', () => clearTimeout(t));
    if (live.pending) this.kill(live);
  }

  private kill(live: Live): void {
    if (this.live === live) this.live = null;
    live.proc.kill('SIGKILL');
  }
}

function lastLines(text: string): string {
  return text
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('at '))
    .slice(-3)
    .join(' | ');
}
