// npm run bench:restore — cbr's unpack beside `zstd -d | tar -x` on the same archive, and a full restore of a
// sandbox node timed from command to the restored node answering.

import { randomBytes } from 'node:crypto';
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { packArchive } from '../src/archive/pack.ts';
import { connectCql } from '../src/cassandra/cql.ts';
import { loadCredentials, loadProfile } from '../src/cassandra/profile.ts';
import type { CliIO } from '../src/cli/io.ts';
import { main } from '../src/cli/main.ts';
import { profilePath, removeSandbox, startSandbox } from '../src/sandbox/sandbox.ts';
import { BENCH_DIR, best, dataset, mibps, NODE, REPO, sh, table, timed } from './lib.ts';

const RUNS = Number(process.env['CBR_BENCH_RUNS'] ?? 2);
const sections: string[] = [];

for (const kind of ['mixed', 'small'] as const) {
  const { files, bytes } = dataset(kind);
  const archive = join(BENCH_DIR, `${kind}.tar.zst`);
  const { stream, result } = packArchive(files, { compression: 'zstd' });
  await Promise.all([result, pipeline(stream, createWriteStream(archive))]);
  const { sha256 } = await result;
  const target = join(BENCH_DIR, 'unpacked');
  const fresh = () => {
    rmSync(target, { recursive: true, force: true });
    mkdirSync(target, { recursive: true });
  };
  const cbrRun = best(RUNS, () => {
    fresh();
    return timed(NODE, [join(REPO, 'bench', 'unpack-one.ts'), archive, target, sha256, 'zstd']);
  });
  const nativeRun = best(RUNS, () => {
    fresh();
    return sh(`zstd -dc -q '${archive}' | tar -xf - -C '${target}'`);
  });
  const nativeSha = best(RUNS, () => {
    fresh();
    return sh(`tee >(sha256sum > /dev/null) < '${archive}' | zstd -dc -q | tar -xf - -C '${target}'`);
  });
  rmSync(target, { recursive: true, force: true });
  const rows = [
    ['cbr unpack (SHA-256, entry checks)', cbrRun.seconds.toFixed(2), mibps(bytes, cbrRun.seconds), cbrRun.maxRssMiB.toFixed(0)],
    ['zstd -d \\| tar -x', nativeRun.seconds.toFixed(2), mibps(bytes, nativeRun.seconds), nativeRun.maxRssMiB.toFixed(0)],
    ['sha256sum + zstd -d \\| tar -x', nativeSha.seconds.toFixed(2), mibps(bytes, nativeSha.seconds), nativeSha.maxRssMiB.toFixed(0)],
  ];
  sections.push(
    `### Unpack: ${kind === 'mixed' ? '~1 GiB mixed data' : '20,000 small files'} (${(bytes / 2 ** 20).toFixed(0)} MiB)\n\n${table(['pipeline', 'seconds', 'MiB/s', 'peak RSS MiB'], rows)}\n\ncbr vs \`zstd -d | tar -x\`: ${(nativeRun.seconds / cbrRun.seconds).toFixed(2)}x\n`,
  );
}

// End to end on real nodes: a source with ~40 MiB of rows, backed up, then restored as a new sandbox.
const env = { ...process.env, CBR_HOME: join(BENCH_DIR, 'home') };
const silent: CliIO = { stdout: () => {}, stderr: () => {}, env, isTTY: false };
let captured = '';
const capture: CliIO = {
  ...silent,
  stdout: (t) => {
    captured += t;
  },
};
for (const n of ['bench-src', 'bench-dst']) await removeSandbox(n, env).catch(() => {});
await startSandbox('bench-src', { env });
const src = await loadProfile(profilePath('bench-src', env));
const cql = await connectCql({ ...src.cql, credentials: await loadCredentials(src.cql.credentialsFile) });
await cql.execute("CREATE KEYSPACE bench WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
await cql.execute('CREATE TABLE bench.t (id int PRIMARY KEY, v blob)');
const ROWS = 20_000;
for (let i = 0; i < ROWS; i += 64) {
  await Promise.all(Array.from({ length: 64 }, (_, j) => cql.execute('INSERT INTO bench.t (id, v) VALUES (?, ?)', [i + j, randomBytes(2048)])));
}
await cql.close();
captured = '';
let t0 = Date.now();
if ((await main(['backup-create', 'bench', '--config', profilePath('bench-src', env), '--json'], capture)) !== 0) throw new Error('backup failed');
const backupSeconds = (Date.now() - t0) / 1000;
const backup = JSON.parse(captured) as { id: string; rawBytes: number; size: number };
captured = '';
t0 = Date.now();
if ((await main(['create', 'bench-dst', '--backup', backup.id, '--sandbox', '--json'], capture)) !== 0) throw new Error('restore failed');
const restoreSeconds = (Date.now() - t0) / 1000;
const restored = JSON.parse(captured) as { cassandraStarts: number };
for (const n of ['bench-src', 'bench-dst']) await removeSandbox(n, env);
sections.push(
  `### End to end on sandbox nodes (${ROWS} rows, ${(backup.rawBytes / 2 ** 20).toFixed(0)} MiB of SSTables, ${(backup.size / 2 ** 20).toFixed(0)} MiB stored)\n\n` +
    table(
      ['step', 'seconds', 'Cassandra starts'],
      [
        ['backup-create (snapshot, stream, clear)', backupSeconds.toFixed(1), '0'],
        ['create --backup --sandbox (command to restored node answering)', restoreSeconds.toFixed(1), String(restored.cassandraStarts)],
      ],
    ) +
    '\n',
);

const report = `## Restore benchmark (${new Date().toISOString().slice(0, 10)}, best of ${RUNS})\n\n${sections.join('\n')}`;
writeFileSync(join(BENCH_DIR, 'restore.md'), report);
process.stdout.write(`${report}\n`);
