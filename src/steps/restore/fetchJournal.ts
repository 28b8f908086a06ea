import { createHash } from 'node:crypto';
import { closeSync, createReadStream, fdatasync, openSync, writeSync } from 'node:fs';
import { mkdir, open, readFile, rename, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { type ContentCheck, sameContent } from '../../catalog/blobs.ts';
import type { RecordFile } from '../../catalog/catalog.ts';

export const JOURNAL = '.cbr-fetched';
const fdatasyncAsync = promisify(fdatasync);
const LINE = /^[0-9a-f]{64} \S/;
const MARK = /^durable (\d+)$/;

/** What the journal says of a file: listed before its last durable mark, listed after it, or not listed. */
export type Listed = 'durable' | 'unsynced' | null;

/**
 * A staging directory's record of the files fetched and verified there (`.cbr-fetched`):
 *
 * - `<sha256> <path>` is appended as soon as a file is verified and renamed into place, without a sync: it survives
 *   a kill -9 (it is in the page cache) but perhaps not a power cut, and so may the file it names;
 * - `durable <n>` is appended (and the journal synced) once the filesystem holding the first `n` listed files was
 *   flushed after they were renamed into place (syncfs): those files and their directories are on disk.
 *
 * On a re-run a file listed before the last mark is trusted at its recorded size; a file listed after it only once
 * it is read again and holds its recorded size and SHA-256 (fast after a kill: the page cache still has it);
 * anything else is fetched again. So a resumed restore fetches only what is not yet there and verified, and the
 * final mark (the whole journal, written before the step ends) is what makes every fetched file durable before
 * the swap puts it into the node.
 */
export class FetchJournal {
  readonly #listed: Map<string, 'durable' | 'unsynced'>;
  #fd: number;
  /** Lines listed in the file (its own and the ones read at open), in order. */
  #count: number;
  #marked: number;

  private constructor(listed: Map<string, 'durable' | 'unsynced'>, fd: number, count: number, marked: number) {
    this.#listed = listed;
    this.#fd = fd;
    this.#count = count;
    this.#marked = marked;
  }

  static async open(staging: string): Promise<FetchJournal> {
    // Staging directories are the caller's (root's) and 0700 until the swap; a fresh one is made here, an existing
    // one (a re-run) is kept with what it holds.
    await mkdir(staging, { mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    const path = join(staging, JOURNAL);
    const text = await readFile(path, 'latin1').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return '';
      throw err;
    });
    // Only whole lines count: a kill mid-write leaves at most one partial last line, cut off here so the next line
    // starts on a line of its own.
    const whole = text.slice(0, text.lastIndexOf('\n') + 1);
    if (whole.length !== text.length) await truncate(path, whole.length);
    const lines: string[] = [];
    let marked = 0;
    for (const l of whole.split('\n')) {
      if (LINE.test(l)) lines.push(l);
      else {
        const m = MARK.exec(l);
        // A mark counts lines written before it, never more than are there.
        if (m) marked = Math.max(marked, Math.min(Number(m[1]), lines.length));
      }
    }
    const listed = new Map<string, 'durable' | 'unsynced'>();
    for (const [i, l] of lines.entries()) if (listed.get(l) !== 'durable') listed.set(l, i < marked ? 'durable' : 'unsynced');
    if (lines.length > marked) {
      // Lines after the last mark are not proven: were they kept in the file, the next mark (which counts lines)
      // would cover them unread. The journal is rewritten with the marked lines only; the caller reads each
      // unproven file back and lists it again (add) when it is whole.
      const tmp = `${path}.tmp`;
      await writeFile(
        tmp,
        lines
          .slice(0, marked)
          .map((l) => `${l}\n`)
          .join('') + (marked > 0 ? `durable ${marked}\n` : ''),
        { encoding: 'latin1', mode: 0o600 },
      );
      await syncPath(tmp);
      await rename(tmp, path);
      await syncPath(staging);
    }
    return new FetchJournal(listed, openSync(path, 'a', 0o600), marked, marked);
  }

  /** How the journal lists this file. */
  listed(f: RecordFile): Listed {
    return this.#listed.get(lineOf(f)) ?? null;
  }

  /** Lists a file that is verified and in place; no sync (a mark makes it durable). */
  add(f: RecordFile): void {
    if (this.#fd < 0) throw new Error('fetch journal is closed');
    const line = lineOf(f);
    // One small write into the page cache, in order: a line is never split between two writers.
    writeSync(this.#fd, `${line}\n`);
    this.#count++;
    if (!this.#listed.has(line)) this.#listed.set(line, 'unsynced');
  }

  /** Lines listed so far: what a mark taken now may cover once the files are flushed. */
  get count(): number {
    return this.#count;
  }

  /** Lines covered by the last mark. */
  get marked(): number {
    return this.#marked;
  }

  /** Records that the first `n` listed files are on disk (the caller flushed them), and syncs the journal. */
  async mark(n: number): Promise<void> {
    if (n <= this.#marked) return;
    if (this.#fd < 0) throw new Error('fetch journal is closed');
    writeSync(this.#fd, `durable ${n}\n`);
    await fdatasyncAsync(this.#fd);
    this.#marked = n;
  }

  close(): void {
    if (this.#fd < 0) return;
    closeSync(this.#fd);
    this.#fd = -1;
  }
}

/** fsync of a file or directory. */
async function syncPath(path: string): Promise<void> {
  const fh = await open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** A file's line: its SHA-256, or where the record keeps none (encrypted) its blob's keyed name, and its path. */
function lineOf(f: RecordFile): string {
  return `${f.sha256 ?? f.blob!.slice(f.blob!.lastIndexOf('/') + 1)} ${f.path}`;
}

/** True when the file at `path` is the recorded one: its size, then its SHA-256 (read back, not trusted). */
export async function holds(path: string, f: RecordFile, check: ContentCheck): Promise<boolean> {
  const st = await stat(path).catch(() => null);
  if (!st?.isFile() || st.size !== f.size) return false;
  const hash = createHash('sha256');
  try {
    await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), async (source: AsyncIterable<Buffer>) => {
      for await (const chunk of source) hash.update(chunk);
    });
  } catch {
    return false;
  }
  return sameContent(check, hash.digest('hex'));
}
