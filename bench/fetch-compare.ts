// node bench/fetch-compare.ts [runs] — cbr's fetch step alone (bench/fetch-one.ts) beside `zstd -d | tar -x` of the
// equivalent archive, interleaved run by run, on what the last `npm run bench:incremental` left in BENCH_DIR (its
// storage and incremental-equivalent.tar.zst): the quick loop for work on the fetch without loading a node again.
// Prints each run and the best of each (wall, user and system CPU, peak RSS) and the load average.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { BENCH_DIR, NODE, REPO } from './lib.ts';

const RUNS = Number(process.argv[2] ?? 3);
const storageRoot = join(BENCH_DIR, 'home-incremental', 'storage');
const equiv = join(BENCH_DIR, 'incremental-equivalent.tar.zst');
const backupId = process.env['CBR_BENCH_BACKUP'] ?? 'bench-inc-1';
const concurrency = process.env['CBR_BENCH_CONCURRENCY'];
const target = join(BENCH_DIR, 'fetch-compare-unpacked');
const rec = JSON.parse(readFileSync(join(storageRoot, 'database_backups', backupId, 'backup.json'), 'utf8')) as { rawBytes: number };

interface Run {
  seconds: number;
  user: number;
  sys: number;
  rssMiB: number;
}

// As the CLI (bin/cbr.js) runs: sources type-stripped and compiled once, kept in a compile cache.
const env = { ...process.env, NODE_COMPILE_CACHE: join(BENCH_DIR, 'node-compile') };

function run(cmd: string, args: string[]): Run {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %U %S %M', cmd, ...args], { env, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  const [s, u, y, kb] = (r.stderr.trim().split('\n').pop() ?? '').split(' ').map(Number) as [number, number, number, number];
  return { seconds: s, user: u, sys: y, rssMiB: kb / 1024 };
}

// Each run starts with nothing dirty in the page cache: the previous run's writes are not flushed on its time.
const fresh = () => {
  rmSync(target, { recursive: true, force: true });
  mkdirSync(target, { recursive: true });
  execFileSync('sync');
};
// CBR_BENCH_BASE=<another checkout> adds its fetch-one.ts, the code before a change, to the same loop.
const base = process.env['CBR_BENCH_BASE'];
const fetchOne = (repo: string) => () =>
  run(NODE, [join(repo, 'bench', 'fetch-one.ts'), storageRoot, 'database_backups', backupId, join(target, 'data'), ...(concurrency ? [concurrency] : [])]);
const kinds: Record<string, () => Run> = {
  cbr: fetchOne(REPO),
  ...(base ? { base: fetchOne(base) } : {}),
  native: () => run('bash', ['-c', `zstd -dc -q '${equiv}' | tar -xf - -C '${target}'`]),
  nativeSync: () => run('bash', ['-c', `zstd -dc -q '${equiv}' | tar -xf - -C '${target}' && sync -f '${target}'`]),
};
const runs: Record<string, Run[]> = Object.fromEntries(Object.keys(kinds).map((k) => [k, []]));
const loads: number[] = [];
for (let i = 0; i < RUNS; i++) {
  for (const k of Object.keys(kinds)) {
    fresh();
    loads.push(loadavg()[0]!);
    const r = kinds[k]!();
    runs[k]!.push(r);
    process.stdout.write(`${i} ${k}: ${r.seconds.toFixed(2)} s, user ${r.user.toFixed(2)} s, sys ${r.sys.toFixed(2)} s, ${r.rssMiB.toFixed(0)} MiB\n`);
  }
}
// The staging directory fetch-one leaves beside its target goes too.
for (const e of readdirSync(BENCH_DIR)) if (e.startsWith('fetch-compare-unpacked')) rmSync(join(BENCH_DIR, e), { recursive: true, force: true });
const mib = rec.rawBytes / 2 ** 20;
const bestOf = (rs: Run[]) => rs.reduce((a, b) => (b.seconds < a.seconds ? b : a));
const c = bestOf(runs['cbr']!);
for (const k of Object.keys(kinds)) {
  const b = bestOf(runs[k]!);
  process.stdout.write(
    `best ${k}: ${b.seconds.toFixed(2)} s, ${(mib / b.seconds).toFixed(0)} MiB/s, user ${b.user.toFixed(2)} s, sys ${b.sys.toFixed(2)} s, ` +
      `peak RSS ${Math.max(...runs[k]!.map((r) => r.rssMiB)).toFixed(0)} MiB; cbr / this: ${(b.seconds / c.seconds).toFixed(2)}x\n`,
  );
}
process.stdout.write(`load average (1 min) at the runs' starts: ${Math.min(...loads).toFixed(1)}-${Math.max(...loads).toFixed(1)}\n`);
