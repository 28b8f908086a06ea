import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { readRecord } from '../../../src/catalog/catalog.ts';
import type { CliIO } from '../../../src/cli/io.ts';
import { main } from '../../../src/cli/main.ts';
import { checkFreeSpace } from '../../../src/steps/backup/checkFreeSpace.ts';
import { clearSnapshot } from '../../../src/steps/backup/clearSnapshot.ts';
import { streamArchive } from '../../../src/steps/backup/streamArchive.ts';
import { takeSnapshot } from '../../../src/steps/backup/takeSnapshot.ts';
import { verifyNode } from '../../../src/steps/backup/verifyNode.ts';
import { writeRecord } from '../../../src/steps/backup/writeRecord.ts';
import { fakeNode, removeFakeNodes } from '../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';
import { backupDeps, backupInput, liveSignal } from '../../fixtures/stepKit.ts';
import { scratch } from '../../helpers/tmp.ts';

after(removeFakeNodes);

/** `cbr backup-verify` in-process against the local driver: exit statuses, --json report, text lines. */
async function run(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = { stdout: (t) => out.push(t), stderr: (t) => err.push(t), env, isTTY: false };
  const code = await main(args, io);
  return { code, out: out.join(''), err: err.join('') };
}

describe('cbr backup-verify (local storage)', () => {
  it('exit 0 whole, 17 corrupt with the report, 16 missing; the key comes from a file; --sample moves on', async () => {
    const key = randomBytes(32);
    const source = await fakeNode({ name: 'cli-verify', userData: true });
    const mem = new MemoryStore();
    const deps = backupDeps(source, mem, { key });
    const input = backupInput(source, { backupId: 'cv1', strategy: 'incremental', parent: null });
    const signal = liveSignal();
    const facts = await verifyNode(deps, input, signal);
    await checkFreeSpace(deps, input, signal);
    await clearSnapshot(deps, input, signal);
    await takeSnapshot(deps, input, signal);
    await writeRecord(deps, { ...input, node: facts, result: await streamArchive(deps, input, signal) }, signal);
    // The same objects, as the local driver keeps them.
    const home = scratch('cbr-cli-verify-');
    const root = join(home, 'storage');
    for (const [k, o] of mem.objects) {
      const path = join(root, 'database_backups', ...k.split('/'));
      mkdirSync(dirname(path), { recursive: true });
      writeFileSync(path, o.body);
    }
    const keyFile = join(home, 'key.hex');
    writeFileSync(keyFile, key.toString('hex'), { mode: 0o600 });
    const env = { CBR_HOME: home, CBR_STORAGE_ROOT: root };
    const rec = await readRecord(mem, 'cv1');

    const prom = join(home, 'cbr.prom');
    const whole = await run(['backup-verify', 'cv1', '--deep', '--decrypt-key-file', keyFile, '--metrics-textfile', prom], env);
    assert.equal(whole.code, 0, whole.err);
    const series = `kind="verify",host="${rec.hostId}",strategy="incremental"`;
    assert.match(readFileSync(prom, 'utf8'), new RegExp(`cbr_last_run_success\\{${series}\\} 1\n`));
    const lastOk = /cbr_last_success_timestamp_seconds\{[^}]*kind="verify"[^}]*\} (\S+)/.exec(readFileSync(prom, 'utf8'))?.[1];
    assert.ok(lastOk && Math.abs(Number(lastOk) - Date.now() / 1000) < 60, `last verify success ${lastOk}`);
    assert.match(whole.out, /^incremental backup cv1 of .*: deep check, whole, \d+ objects/);
    assert.match(whole.out, /\nOK\n$/);

    const blob = join(root, 'database_backups', ...rec.files[0]!.blob!.split('/'));
    const body = readFileSync(blob);
    body[body.length - 20] = body[body.length - 20]! ^ 1;
    writeFileSync(blob, body);
    const bad = await run(['backup-verify', 'cv1', '--deep', '--decrypt-key-file', keyFile, '--json', '--metrics-textfile', prom], env);
    assert.equal(bad.code, 17);
    const text = readFileSync(prom, 'utf8');
    assert.match(text, new RegExp(`cbr_last_run_success\\{${series}\\} 0\n`));
    assert.match(text, /cbr_workflows_total\{kind="verify",outcome="failed",code="CBR_ERR_VERIFY_CORRUPT"\} 1\n/);
    assert.match(text, new RegExp(`cbr_last_success_timestamp_seconds\\{${series}\\} ${lastOk}\n`), 'a failed verify keeps the last success');
    const report = JSON.parse(bad.out);
    assert.equal(report.ok, false);
    assert.equal(report.error.code, 'CBR_ERR_VERIFY_CORRUPT');
    assert.deepEqual(
      report.problems.map((p: { kind: string; path: string }) => [p.kind, p.path]),
      [['corrupt', rec.files[0]!.path]],
    );
    assert.ok(!bad.out.includes(key.toString('hex')));
    assert.match(bad.err, /CBR_ERR_VERIFY_CORRUPT/);

    const sampled = await run(['backup-verify', 'cv1', '--sample', '50%', '--json'], env);
    const again = await run(['backup-verify', 'cv1', '--sample', '50%', '--json'], env);
    assert.deepEqual(
      [JSON.parse(sampled.out).sample, JSON.parse(again.out).sample],
      [
        { bucket: 0, buckets: 2 },
        { bucket: 1, buckets: 2 },
      ],
    );

    const bogus = await run(['backup-verify', 'cv1', '--sample', '0%'], env);
    assert.equal(bogus.code, 2);
    const none = await run(['backup-verify', 'nope', '--json'], env);
    assert.equal(JSON.parse(none.out).error.code, 'CBR_ERR_BACKUP_NOT_FOUND');
  });
});
