import { ReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import type { ContentCheck } from '../../catalog/blobs.ts';
import { CbrError, type ErrorCode } from '../../core/errors.ts';
import { bufferReleaser } from '../../core/memory.ts';

/** Messages to a fetch worker (fetchWorker.ts). */
export type ToWorker =
  | ({ t: 'open'; id: number; binding: Uint8Array | null } & Omit<FetchJob, 'binding'>)
  | { t: 'data'; id: number; chunk: Uint8Array }
  | { t: 'end'; id: number }
  | { t: 'abort'; id: number }
  | { t: 'crash' }
  | { t: 'stall'; flag: SharedArrayBuffer };

/** Messages from a fetch worker: each file gets acks, then exactly one of done, fail or aborted. */
export type FromWorker =
  | { t: 'ack'; id: number; raw: number; stored: number }
  | { t: 'done'; id: number; raw: number }
  | { t: 'fail'; id: number; error: { code?: string; errno?: string; message: string } }
  | { t: 'aborted'; id: number };

/** What one file asks of a worker: its blob's stored bytes become `part`, checked against `size` and `check`. */
export interface FetchJob {
  path: string;
  part: string;
  size: number;
  check: ContentCheck;
  compression: 'zstd' | 'none';
  encrypted: boolean;
  binding: Buffer | null;
  /** The part file's owner (fchown before it is synced), or null to leave it this process' user's. */
  owner: { uid: number; gid: number } | null;
}

/**
 * Stored bytes sent to a worker and not yet taken by it, per file: the main thread reads on only while a file has
 * less than this in flight, so memory stays bounded whatever the store's speed against the worker's.
 */
export const IN_FLIGHT = 2 << 20;

/**
 * A worker's young generation (V8's default lets it grow to 32 MiB and more). A worker's garbage is small objects
 * (messages, hash and stream state): its buffers' memory lies outside the heap and is released by a minor
 * collection every 4 MiB (fetchWorker.ts). 4 MB keeps those collections cheap and the restore's peak RSS lower
 * (bench/fetch-one.ts: 147-165 MiB against 162-190 MiB with the default).
 */
export const WORKER_LIMITS = { maxYoungGenerationSizeMb: 4 } as const;

interface Pending {
  inFlight: number;
  wake: (() => void) | null;
  settled: boolean;
  /** Why the worker gave up on the file (its own error, or its death). */
  error: unknown;
  /** Ends the read of the file's source: the worker failed, or the signal aborted. */
  stop: (err: Error) => void;
  resolve: () => void;
  reject: (err: unknown) => void;
  onBytes: (raw: number, stored: number) => void;
}

interface Slot {
  worker: Worker;
  jobs: Map<number, Pending>;
  dead: CbrError | null;
}

/**
 * Worker threads that do the CPU work of the restore's fetch (decrypt, decompress, SHA-256, write), so it spreads
 * over the cores instead of queueing on the main thread, which only reads the blobs and hands their bytes on.
 * A worker that crashes or exits fails every file it holds, and every later one, with CBR_ERR_WORKER_FAILED (the
 * restore can be resumed); `close` ends them all.
 */
export class FetchWorkers {
  readonly #slots: Slot[];
  #next = 1;
  #closing = false;
  /** The blobs' chunks, dead once copied for a worker, are collected as they die (see bufferReleaser). */
  readonly #release = bufferReleaser();

  /**
   * `opts.cutFrames` (tests): decompress frame by frame, the way taken where Node's zstd handle is not as expected;
   * `opts.failSyncForTest`: every fsync fails with EIO.
   */
  constructor(count: number, key: Buffer | null, opts: { cutFrames?: boolean; failSyncForTest?: boolean } = {}) {
    this.#slots = Array.from({ length: Math.max(1, count) }, () => {
      const worker = new Worker(new URL('./fetchWorker.ts', import.meta.url), {
        workerData: { key: key ? new Uint8Array(key) : null, cutFrames: opts.cutFrames === true, failSyncForTest: opts.failSyncForTest === true },
        resourceLimits: WORKER_LIMITS,
      });
      const slot: Slot = { worker, jobs: new Map(), dead: null };
      worker.on('message', (m: FromWorker) => this.#onMessage(slot, m));
      worker.on('error', (err) => this.#lost(slot, `a fetch worker failed: ${err.message}`));
      worker.on('exit', (code) => this.#lost(slot, `a fetch worker exited (code ${code})`));
      return slot;
    });
  }

  /**
   * Streams `source` (a blob's stored bytes) to a worker that writes `job.part`; resolves once the part file holds
   * the recorded bytes, is synced to disk (fsync) and closed. On failure or abort it rejects only after the worker closed the part file.
   */
  async run(job: FetchJob, source: Readable, signal: AbortSignal, onBytes: (raw: number, stored: number) => void): Promise<void> {
    signal.throwIfAborted();
    const slot = this.#pick();
    if (slot.dead) throw slot.dead;
    const id = this.#next++;
    let pending!: Pending;
    const outcome = new Promise<void>((resolve, reject) => {
      pending = { inFlight: 0, wake: null, settled: false, error: null, stop: (err) => source.destroy(err), resolve, reject, onBytes };
    });
    // Whatever happens, the outcome is awaited (below) or its rejection handled here: never unhandled.
    outcome.catch(() => {});
    slot.jobs.set(id, pending);
    // An abort ends the read at once, whatever the source does with its signal.
    const onAbort = () => {
      pending.stop(signal.reason as Error);
      pending.wake?.();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const post = (m: ToWorker, transfer?: ArrayBuffer[]) => slot.worker.postMessage(m, transfer);
    try {
      post({ t: 'open', id, ...job, binding: job.binding ? new Uint8Array(job.binding) : null });
      // A file's read stream (the local store) reads each chunk into a buffer of its own, handed over for good: it
      // goes to the worker as it is. Another source's chunk may share its memory: the worker gets a copy.
      const owned = source instanceof ReadStream;
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (pending.settled) break;
        // Read before the post: a transferred buffer reads length 0 afterwards.
        const n = chunk.length;
        let own = chunk;
        if (!owned || chunk.byteOffset !== 0 || chunk.byteLength !== chunk.buffer.byteLength) {
          own = Buffer.allocUnsafeSlow(chunk.length);
          chunk.copy(own);
          this.#release(chunk.length);
        }
        // Transferred, not copied again.
        post({ t: 'data', id, chunk: own }, [own.buffer as ArrayBuffer]);
        pending.inFlight += n;
        while (pending.inFlight > IN_FLIGHT && !pending.settled && !signal.aborted) {
          await new Promise<void>((r) => {
            pending.wake = r;
          });
          pending.wake = null;
        }
        signal.throwIfAborted();
      }
      if (!pending.settled) post({ t: 'end', id });
    } catch (err) {
      // The part file is closed before the caller removes it: wait for the worker's answer (or its death).
      if (!pending.settled) post({ t: 'abort', id });
      await outcome.catch(() => {});
      // The worker's failure (which ended the read) is the cause; otherwise the source's error or the abort.
      throw signal.aborted ? signal.reason : (pending.error ?? err);
    } finally {
      signal.removeEventListener('abort', onAbort);
    }
    await outcome;
  }

  /** Ends every worker; a file still in flight fails with CBR_ERR_WORKER_FAILED. */
  async close(): Promise<void> {
    this.#closing = true;
    await Promise.all(this.#slots.map((s) => s.worker.terminate()));
  }

  /** Tests only: blocks worker `i` (it takes no message) until the returned function is called. */
  stallForTest(i = 0): () => void {
    const flag = new SharedArrayBuffer(4);
    this.#slots[i]?.worker.postMessage({ t: 'stall', flag } satisfies ToWorker);
    return () => {
      const f = new Int32Array(flag);
      Atomics.store(f, 0, 1);
      Atomics.notify(f, 0);
    };
  }

  /** Tests only: the resource limits worker `i` runs under. */
  limitsForTest(i = 0): Worker['resourceLimits'] {
    return this.#slots[i]?.worker.resourceLimits;
  }

  /** Tests only: makes worker `i` throw an uncaught error, as a bug would. */
  crashForTest(i = 0): void {
    this.#slots[i]?.worker.postMessage({ t: 'crash' } satisfies ToWorker);
  }

  /** The live worker with the fewest files in flight. */
  #pick(): Slot {
    let best = this.#slots[0]!;
    for (const s of this.#slots) if (!s.dead && (best.dead || s.jobs.size < best.jobs.size)) best = s;
    return best;
  }

  #onMessage(slot: Slot, m: FromWorker): void {
    const p = slot.jobs.get(m.id);
    if (!p) return;
    switch (m.t) {
      case 'ack':
        p.inFlight -= m.stored;
        p.onBytes(m.raw, m.stored);
        p.wake?.();
        return;
      case 'done':
        p.onBytes(m.raw, 0);
        this.#settle(slot, m.id, p, null);
        return;
      case 'fail':
        this.#settle(slot, m.id, p, fromWorker(m.error));
        return;
      case 'aborted':
        this.#settle(slot, m.id, p, new CbrError('CBR_ERR_ABORTED', 'the fetch was aborted'));
        return;
    }
  }

  #settle(slot: Slot, id: number, p: Pending, err: unknown): void {
    slot.jobs.delete(id);
    p.settled = true;
    if (err) {
      p.error = err;
      p.reject(err);
      // No need to read on: a source that is slow to give its next chunk does not hold the failure back.
      p.stop(err as Error);
    } else {
      p.resolve();
    }
    p.wake?.();
  }

  #lost(slot: Slot, why: string): void {
    if (slot.dead) return;
    slot.dead = new CbrError('CBR_ERR_WORKER_FAILED', this.#closing ? 'the fetch workers were closed while a file was in flight' : why);
    for (const [id, p] of slot.jobs) this.#settle(slot, id, p, slot.dead);
  }
}

/** A worker's error as the main thread's: a cbr code kept, a system error by its errno (classified by the caller). */
function fromWorker(e: { code?: string; errno?: string; message: string }): Error {
  if (e.code) return new CbrError(e.code as ErrorCode, e.message);
  return Object.assign(new Error(e.message), e.errno ? { code: e.errno } : {});
}
