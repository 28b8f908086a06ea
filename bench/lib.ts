import { execFileSync, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SnapshotFile } from '../src/cassandra/layout.ts';

export const REPO = join(import.meta.dirname, '..');
export const NODE = join(REPO, 'node_modules', '.bin', 'node');
export const BENCH_DIR = process.env['CBR_BENCH_DIR'] ?? join(REPO, '.cache', 'bench');

/**
 * Synthetic snapshot data in the data-directory layout (`<ks>/<table>-<id>/<file>`), made once and reused.
 * "mixed": ~1 GiB in 5 MiB files; 40% random bytes (like LZ4-compressed SSTables), 60% repetitive text.
 * "small": 20,000 files of 2-6 KiB (many tiny tables and components).
 */
export function dataset(kind: 'mixed' | 'small'): { dir: string; files: SnapshotFile[]; bytes: number } {
  const dir = join(BENCH_DIR, `data-${kind}`);
  const marker = join(dir, '.complete');
  if (!existsSync(marker)) {
    mkdirSync(dir, { recursive: true });
    const seed = 'cassandra row key=value; '.repeat(4096);
    if (kind === 'mixed') {
      for (let i = 0; i < 205; i++) {
        const t = join(dir, `ks${i % 4}`, `table${i % 16}-${hex(i % 16)}`);
        mkdirSync(t, { recursive: true });
        const size = 5 << 20;
        const data = i % 5 < 2 ? randomBytes(size) : Buffer.from(seed.repeat(Math.ceil(size / seed.length)).slice(0, size) + String(i));
        writeFileSync(join(t, `nb-${i}-big-Data.db`), data);
      }
    } else {
      for (let i = 0; i < 20_000; i++) {
        const t = join(dir, `ks${i % 10}`, `table${i % 200}-${hex(i % 200)}`);
        if (i < 200) mkdirSync(t, { recursive: true });
        const size = 2048 + ((i * 7919) % 4096);
        const data = i % 3 === 0 ? randomBytes(size) : Buffer.from(seed.slice(0, size));
        writeFileSync(join(t, `nb-${i}-big-${['Data.db', 'Index.db', 'Statistics.db', 'Filter.db'][i % 4]}`), data);
      }
    }
    writeFileSync(marker, 'ok');
  }
  const files: SnapshotFile[] = [];
  for (const ks of readdirSync(dir)
    .filter((d) => d.startsWith('ks'))
    .sort()) {
    for (const t of readdirSync(join(dir, ks)).sort()) {
      for (const f of readdirSync(join(dir, ks, t)).sort()) {
        const path = join(dir, ks, t, f);
        files.push({ path, archivePath: `${ks}/${t}/${f}`, size: statSync(path).size, keyspace: ks, table: t });
      }
    }
  }
  return { dir, files, bytes: files.reduce((s, f) => s + f.size, 0) };
}

function hex(i: number): string {
  return createHash('md5').update(String(i)).digest('hex');
}

export interface Timing {
  seconds: number;
  maxRssMiB: number;
}

/** Runs a command under GNU time; returns wall seconds and peak RSS (of the largest process in it). */
export function timed(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): Timing {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const last = r.stderr.trim().split('\n').pop() ?? '';
  const [secs, kb] = last.split(' ');
  return { seconds: Number(secs), maxRssMiB: Number(kb) / 1024 };
}

export function sh(script: string): Timing {
  return timed('bash', ['-c', script]);
}

/** Reads every file once so every run starts from a warm page cache. */
export function warm(dir: string): void {
  execFileSync('bash', ['-c', `tar -cf - -C '${dir}' . > /dev/null`]);
}

export function mibps(bytes: number, seconds: number): string {
  return (bytes / 2 ** 20 / seconds).toFixed(0);
}

export function table(headers: string[], rows: (string | number)[][]): string {
  return [`| ${headers.join(' | ')} |`, `| ${headers.map(() => '---').join(' | ')} |`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export function best(runs: number, fn: () => Timing): Timing {
  const all: Timing[] = [];
  for (let i = 0; i < runs; i++) all.push(fn());
  return { seconds: Math.min(...all.map((t) => t.seconds)), maxRssMiB: Math.max(...all.map((t) => t.maxRssMiB)) };
}
