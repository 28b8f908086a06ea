// npm run bench:backup — cbr's archive pipeline beside the native tools, on the same files, in one run.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, best, dataset, mibps, NODE, REPO, sh, table, timed, warm } from './lib.ts';

const RUNS = Number(process.env['CBR_BENCH_RUNS'] ?? 2);
const sections: string[] = [];
for (const kind of ['mixed', 'small'] as const) {
  const { dir, files, bytes } = dataset(kind);
  warm(dir);
  const rows: (string | number)[][] = [];
  const add = (name: string, t: { seconds: number; maxRssMiB: number }) =>
    rows.push([name.replaceAll('|', '\\|'), t.seconds.toFixed(2), mibps(bytes, t.seconds), t.maxRssMiB.toFixed(0)]);
  const cbr = (compression: string, enc = '') => best(RUNS, () => timed(NODE, [join(REPO, 'bench', 'pack-one.ts'), kind, compression, enc]));
  const tarZstd = best(RUNS, () => sh(`cd '${dir}' && tar -cf - ks* | zstd -1 -T0 -q > /dev/null`));
  const tarGzip = best(1, () => sh(`cd '${dir}' && tar -cf - ks* | gzip > /dev/null`));
  const tarRaw = best(RUNS, () => sh(`cd '${dir}' && tar -cf - ks* | cat > /dev/null`));
  // Like for like: cbr also takes the SHA-256 of what it stores (openssl: the fastest native hasher here).
  const tarZstdSha = best(RUNS, () => sh(`cd '${dir}' && tar -cf - ks* | zstd -1 -T0 -q | openssl dgst -sha256 > /dev/null`));
  const tarSha = best(RUNS, () => sh(`cd '${dir}' && tar -cf - ks* | openssl dgst -sha256 > /dev/null`));
  const zstd = cbr('zstd');
  add('cbr zstd (default)', zstd);
  add('cbr zstd + AES-256-GCM', cbr('zstd', 'enc'));
  add('cbr gzip', cbr('gzip'));
  const none = cbr('none');
  add('cbr none', none);
  add('tar -cf - | zstd -1 -T0', tarZstd);
  add('tar -cf - | gzip (Trove)', tarGzip);
  add('tar -cf -', tarRaw);
  add('tar -cf - | zstd -1 -T0 | openssl sha256', tarZstdSha);
  add('tar -cf - | openssl sha256', tarSha);
  sections.push(
    `### ${kind === 'mixed' ? `~1 GiB mixed data, ${files.length} files` : `${files.length} small files`} (${(bytes / 2 ** 20).toFixed(0)} MiB)\n\n` +
      table(['pipeline', 'seconds', 'MiB/s', 'peak RSS MiB'], rows) +
      `\n\ncbr zstd vs \`tar | zstd -1 -T0\`: ${(tarZstd.seconds / zstd.seconds).toFixed(2)}x; vs \`tar | gzip\`: ${(tarGzip.seconds / zstd.seconds).toFixed(1)}x; ` +
      `cbr none vs \`tar\`: ${(tarRaw.seconds / none.seconds).toFixed(2)}x. ` +
      `With the checksum on both sides: cbr zstd vs \`tar | zstd -1 -T0 | openssl sha256\`: ${(tarZstdSha.seconds / zstd.seconds).toFixed(2)}x; ` +
      `cbr none vs \`tar | openssl sha256\`: ${(tarSha.seconds / none.seconds).toFixed(2)}x\n`,
  );
}
const report = `## Backup benchmark (${new Date().toISOString().slice(0, 10)}, 2 cores, best of ${RUNS})\n\nThroughput is file bytes in per second of wall time, output to a pipe into /dev/null (GNU tar skips reading when it writes to /dev/null itself); every run reads from a warm page cache. cbr's runs include the SHA-256 of the output.\n\n${sections.join('\n')}`;
mkdirSync(BENCH_DIR, { recursive: true });
writeFileSync(join(BENCH_DIR, 'backup.md'), report);
process.stdout.write(`${report}\n`);
