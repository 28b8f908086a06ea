import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { queryStatus, watchEvents } from '../../../src/bus/client.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import type { BackupRecord } from '../../../src/catalog/catalog.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { BUS_URL, killHard, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, seedData } from '../../helpers/data.ts';
import { scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { swiftEnv, swiftToken, swiftUp } from '../../helpers/swift.ts';

/**
 * `cbr backup-verify` against backups of a real node in real stores (local and Swift): full and incremental,
 * encrypted and not. Whole backups verify shallow and deep; a deleted object is missing (16), a truncated one is
 * caught shallow (17), a flipped byte deep (17); a wrong key is CBR_ERR_DECRYPT_FAILED; --sample runs cover every
 * file; over the bus the agent verifies and its result carries the report.
 */

type Report = {
  id: string;
  ok: boolean;
  deep: boolean;
  strategy: string;
  files: number;
  bytesRead: number;
  sampledFraction: number;
  seconds: number;
  sample: { bucket: number; buckets: number } | null;
  problems: { kind: string; object: string; path?: string; expected?: unknown; found?: unknown }[];
  error?: { code: string };
};

describe('backup-verify on backups of a real node', () => {
  let source: Profile;
  let keyFile: string;
  let wrongKeyFile: string;
  let localEnv: NodeJS.ProcessEnv;
  let storageRoot: string;
  const KS = `ver${process.pid}`;

  before(async () => {
    source = await sharedNode('source');
    const cql = await cqlFor(source);
    await seedData(cql, KS, { rows: 400, blobKiB: 8 });
    await cql.close();
    const dir = scratchDir('verify');
    keyFile = join(dir, 'key.hex');
    writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    wrongKeyFile = join(dir, 'wrong.hex');
    writeFileSync(wrongKeyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
    storageRoot = join(dir, 'storage');
    localEnv = { ...testEnv, CBR_HOME: join(dir, 'home'), CBR_STORAGE_ROOT: storageRoot, CBR_STATE_DB: join(dir, 'state.db') };
  });

  async function backup(env: NodeJS.ProcessEnv, strategy: 'full' | 'incremental', encrypted: boolean): Promise<BackupRecord> {
    const args = ['backup-create', `verify-${strategy}`, '--config', profilePath('source', testEnv), '--strategy', strategy, '--json'];
    if (encrypted) args.push('--encrypt-key-file', keyFile);
    const made = await cbr(args, env);
    assert.equal(made.code, 0, made.err);
    const id = made.json()['id'] as string;
    const shown = await cbr(['backup-show', id, '--files', '--json'], env);
    return shown.json() as unknown as BackupRecord;
  }

  async function verify(env: NodeJS.ProcessEnv, id: string, ...more: string[]): Promise<{ code: number; report: Report; err: string }> {
    const r = await cbr(['backup-verify', id, '--json', ...more], env);
    return { code: r.code, report: r.json() as unknown as Report, err: r.err };
  }

  const localPath = (key: string) => join(storageRoot, 'database_backups', ...key.split('/'));
  const flipLocal = (key: string) => {
    const body = readFileSync(localPath(key));
    const at = Math.floor(body.length / 2);
    body[at] = body[at]! ^ 0x10;
    writeFileSync(localPath(key), body);
  };

  for (const [strategy, encrypted] of [
    ['full', false],
    ['full', true],
    ['incremental', false],
    ['incremental', true],
  ] as const) {
    it(`local, ${strategy}${encrypted ? ', encrypted' : ''}: whole verifies; flipped byte deep (17), truncated shallow (17), deleted (16)`, async (t) => {
      const rec = await backup(localEnv, strategy, encrypted);
      const key = encrypted ? ['--decrypt-key-file', keyFile] : [];
      const shallow = await verify(localEnv, rec.id, ...key);
      assert.equal(shallow.code, 0, shallow.err);
      assert.equal(shallow.report.ok, true);
      const deep = await verify(localEnv, rec.id, '--deep', ...key);
      assert.equal(deep.code, 0, deep.err);
      assert.deepEqual([deep.report.ok, deep.report.deep, deep.report.strategy, deep.report.bytesRead], [true, true, strategy, rec.size]);
      t.diagnostic(
        `local ${strategy}${encrypted ? ' encrypted' : ''}: ${rec.fileCount} files, ${rec.size} bytes stored; shallow ${shallow.report.seconds} s, deep ${deep.report.seconds} s`,
      );

      // An incremental backup's blobs may be shared with the other incremental backups of this node: this test
      // breaks the largest blob only this backup has, restoring its bytes afterwards.
      const target = strategy === 'full' ? rec.object : [...rec.files].filter((f) => !f.shared).sort((a, b) => (b.stored ?? 0) - (a.stored ?? 0))[0]!.blob!;
      const original = readFileSync(localPath(target));
      try {
        flipLocal(target);
        assert.equal((await verify(localEnv, rec.id, ...key)).code, 0, 'a flipped byte keeps the size: shallow passes');
        const caught = await verify(localEnv, rec.id, '--deep', ...key);
        assert.equal(caught.code, 17, caught.err);
        assert.equal(caught.report.error?.code, 'CBR_ERR_VERIFY_CORRUPT');
        assert.ok(
          caught.report.problems.some((p) => p.object === target && p.kind === 'corrupt'),
          JSON.stringify(caught.report.problems),
        );

        writeFileSync(localPath(target), original);
        truncateSync(localPath(target), original.length - 7);
        const cut = await verify(localEnv, rec.id, ...key);
        assert.equal(cut.code, 17, cut.err);
        assert.deepEqual(
          cut.report.problems.map((p) => [p.kind, p.object, p.found]),
          [['size', target, original.length - 7]],
        );

        rmSync(localPath(target));
        const gone = await verify(localEnv, rec.id, ...key);
        assert.equal(gone.code, 16, gone.err);
        assert.equal(gone.report.error?.code, 'CBR_ERR_VERIFY_MISSING');
      } finally {
        writeFileSync(localPath(target), original);
      }
      assert.equal((await verify(localEnv, rec.id, '--deep', ...key)).code, 0, 'whole again');

      if (encrypted) {
        const wrong = await cbr(['backup-verify', rec.id, '--deep', '--decrypt-key-file', wrongKeyFile, '--json'], localEnv);
        assert.equal(wrong.code, 10, wrong.err);
        assert.equal(wrong.json().error?.code, 'CBR_ERR_DECRYPT_FAILED');
        const none = await cbr(['backup-verify', rec.id, '--deep', '--json'], localEnv);
        assert.equal(none.json().error?.code, 'CBR_ERR_KEY_REQUIRED');
      }
    });
  }

  it('local, incremental: --sample 40% takes bucket 1, 2, 3 of 3 in turn, together every file once, then starts over', async () => {
    const rec = await backup(localEnv, 'incremental', false);
    const runs: Report[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await verify(localEnv, rec.id, '--deep', '--sample', '40%');
      assert.equal(r.code, 0, r.err);
      runs.push(r.report);
    }
    assert.deepEqual(
      runs.map((r) => r.sample),
      [0, 1, 2].map((bucket) => ({ bucket, buckets: 3 })),
    );
    assert.equal(
      runs.reduce((s, r) => s + r.files, 0),
      rec.fileCount,
    );
    assert.equal(
      runs.reduce((s, r) => s + r.bytesRead, 0),
      rec.size,
    );
    // A file's bucket is a hash of its blob's key: buckets hold about equal numbers of files, so only the sum is exact.
    assert.ok(runs.every((r) => r.sampledFraction > 0));
    assert.ok(Math.abs(runs.reduce((s, r) => s + r.sampledFraction, 0) - 1) < 1e-9, 'the fractions add up to the whole');
    assert.equal((await verify(localEnv, rec.id, '--sample', '40%')).report.sample?.bucket, 0);
  });

  it('local, incremental: --latest --sample 40% on a new backup each run takes the next bucket (the cursor follows the host)', async () => {
    const home = { ...localEnv, CBR_HOME: join(scratchDir('verify-latest'), 'home') };
    const seen: [string, number | undefined][] = [];
    const made: string[] = [];
    for (let night = 0; night < 3; night++) {
      made.push((await backup(home, 'incremental', false)).id);
      const r = await cbr(['backup-verify', '--latest', '--host', source.hostId, '--deep', '--sample', '40%', '--json'], home);
      assert.equal(r.code, 0, r.err);
      const report = r.json() as unknown as Report;
      seen.push([report.id, report.sample?.bucket]);
    }
    assert.deepEqual(
      seen,
      made.map((id, night) => [id, night]),
    );
  });

  it('--metrics-textfile: each run replaces the node_exporter textfile whole (rename), with the verify series', async () => {
    const rec = await backup(localEnv, 'incremental', false);
    const dir = scratchDir('verify-textfile');
    const prom = join(dir, 'cbr.prom');
    const first = await verify(localEnv, rec.id, '--metrics-textfile', prom);
    assert.equal(first.code, 0, first.err);
    const inode = statSync(prom).ino;
    const second = await verify(localEnv, rec.id, '--deep', '--metrics-textfile', prom);
    assert.equal(second.code, 0, second.err);
    assert.notEqual(statSync(prom).ino, inode, 'a new file renamed over the old one, not rewritten in place');
    assert.deepEqual(readdirSync(dir), ['cbr.prom'], 'no temporary file left beside it');
    const text = readFileSync(prom, 'utf8');
    const series = `kind="verify",host="${rec.hostId}",strategy="incremental"`;
    assert.match(text, /^# TYPE cbr_last_success_timestamp_seconds gauge$/m);
    const lastOk = new RegExp(`^cbr_last_success_timestamp_seconds\\{${series}\\} (\\S+)$`, 'm').exec(text)?.[1];
    assert.ok(lastOk && Math.abs(Number(lastOk) - Date.now() / 1000) < 120, `last verify success: ${lastOk}`);
    assert.match(text, new RegExp(`^cbr_last_run_success\\{${series}\\} 1$`, 'm'));
    assert.match(text, /^cbr_workflows_total\{kind="verify",outcome="completed",code=""\} 2$/m, 'the counts carry over');
    assert.match(text, /^cbr_read_bytes_total\{kind="verify"\} [1-9]\d*$/m, 'the deep run read bytes back');
  });

  describe('Swift', () => {
    let env: NodeJS.ProcessEnv;
    const container = `cbr-verify-${process.pid}`;
    let swift: { token: string; url: string };

    before(async () => {
      const creds = swiftUp();
      env = swiftEnv({ ...localEnv, CBR_STATE_DB: join(scratchDir('verify-swift'), 's.db') }, creds, container);
      swift = await swiftToken();
    });

    async function swiftGet(key: string): Promise<Buffer> {
      const res = await fetch(`${swift.url}/${container}/${key}`, { headers: { 'X-Auth-Token': swift.token } });
      assert.equal(res.status, 200);
      return Buffer.from(await res.arrayBuffer());
    }
    async function swiftPut(key: string, body: Buffer): Promise<void> {
      const res = await fetch(`${swift.url}/${container}/${key}`, { method: 'PUT', headers: { 'X-Auth-Token': swift.token }, body: new Uint8Array(body) });
      assert.equal(res.status, 201);
    }
    async function swiftDelete(key: string): Promise<void> {
      await fetch(`${swift.url}/${container}/${key}`, { method: 'DELETE', headers: { 'X-Auth-Token': swift.token } });
    }

    for (const [strategy, encrypted] of [
      ['full', true],
      ['incremental', false],
      ['incremental', true],
    ] as const) {
      it(`${strategy}${encrypted ? ', encrypted' : ''}: whole verifies; flipped byte deep (17), truncated shallow (17), deleted (16)`, async () => {
        const rec = await backup(env, strategy, encrypted);
        const key = encrypted ? ['--decrypt-key-file', keyFile] : [];
        assert.equal((await verify(env, rec.id, ...key)).code, 0);
        const deep = await verify(env, rec.id, '--deep', ...key);
        assert.equal(deep.code, 0, deep.err);
        assert.equal(deep.report.bytesRead, rec.size);
        const target = strategy === 'full' ? rec.object : [...rec.files].filter((f) => !f.shared).sort((a, b) => (b.stored ?? 0) - (a.stored ?? 0))[0]!.blob!;
        const original = await swiftGet(target);
        try {
          const flipped = Buffer.from(original);
          flipped[flipped.length >> 1] = flipped[flipped.length >> 1]! ^ 0x10;
          await swiftPut(target, flipped);
          assert.equal((await verify(env, rec.id, ...key)).code, 0);
          const caught = await verify(env, rec.id, '--deep', ...key);
          assert.equal(caught.code, 17, caught.err);
          assert.ok(caught.report.problems.some((p) => p.object === target && p.kind === 'corrupt'));
          await swiftPut(target, original.subarray(0, original.length - 7));
          const cut = await verify(env, rec.id, ...key);
          assert.equal(cut.code, 17);
          assert.deepEqual(
            cut.report.problems.map((p) => [p.kind, p.object]),
            [['size', target]],
          );
          await swiftDelete(target);
          const gone = await verify(env, rec.id, '--deep', ...key);
          assert.equal(gone.code, 16, gone.err);
          assert.deepEqual(
            gone.report.problems.map((p) => [p.kind, p.object]),
            [['missing', target]],
          );
        } finally {
          await swiftPut(target, original);
        }
        assert.equal((await verify(env, rec.id, '--deep', ...key)).code, 0, 'whole again');
        if (encrypted) {
          const wrong = await cbr(['backup-verify', rec.id, '--decrypt-key-file', wrongKeyFile, '--json'], env);
          assert.equal(wrong.json().error?.code, 'CBR_ERR_DECRYPT_FAILED');
        }
      });
    }
  });

  describe('over the bus', () => {
    const prefix = `verify${process.pid}`;
    const host = `verify-host-${process.pid}`;
    let agent: ReturnType<typeof spawnAgent> | null = null;

    const lostHost = `verify-lost-${process.pid}`;

    after(async () => {
      if (agent) await stopGracefully(agent);
      await removeBusTopology(prefix, [host, lostHost]);
    });

    // Seen running: the CLI asks every 300 ms and sees the verify before the kill. Never seen: its first status
    // question would come after 10 minutes; the restarted agent's own report of the lost run ends the wait.
    for (const seen of [true, false])
      it(`a CLI waiting for a verify whose agent is killed (-9) ${seen ? 'mid-run' : 'before the CLI ever saw it running'} and restarted ends with CBR_ERR_RUN_LOST, not forever`, async () => {
        const rec = await backup(localEnv, 'full', false);
        // A pause before the verify reads anything: the agent is killed inside it.
        const agentEnv = { ...localEnv, CBR_STATE_DB: join(scratchDir(`verify-lost-${seen}`), 'a.db'), CBR_DRILL_VERIFY_DELAY_MS: '120000' };
        const opts = { host: lostHost, profilePath: profilePath('source', testEnv), env: agentEnv, prefix };
        const first = spawnAgent(opts);
        let second: ReturnType<typeof spawnAgent> | null = null;
        try {
          await waitForAgentQueue(prefix, lostHost);
          const waiting = cbr(['backup-verify', rec.id, '--deep', '--json', '--bus', BUS_URL, '--host', lostHost, '--prefix', prefix], {
            ...localEnv,
            CBR_BUS_LIVENESS_MS: seen ? '300' : '600000',
          });
          let running: string | undefined;
          for (let i = 0; i < 300 && !running; i++) {
            const [reply] = await queryStatus({ url: BUS_URL, prefix, host: lostHost, timeoutMs: 2000 });
            running = reply?.workflows.find((w) => w.kind === 'backup.verify' && w.status === 'active')?.workflowId;
            if (!running) await sleep(100);
          }
          assert.ok(running, "the agent's status never showed the verify running");
          // A wide margin for a loaded machine.
          if (seen) await sleep(5000);
          await killHard(first);
          second = spawnAgent({ ...opts, env: { ...agentEnv, CBR_DRILL_VERIFY_DELAY_MS: '0' } });
          const r = await waiting;
          assert.equal(r.code, 13, r.err);
          assert.equal(r.json().error?.code, 'CBR_ERR_RUN_LOST');
          assert.match(r.json().error?.message ?? '', new RegExp(`no longer runs ${running}`));
          // The restarted agent's status knows how it ended (a CLI that reconnects later finds it there).
          const [reply] = await queryStatus({ url: BUS_URL, prefix, host: lostHost, workflowId: running, timeoutMs: 5000 });
          const w = reply?.workflows.find((x) => x.workflowId === running);
          assert.equal(w?.status, 'done');
          assert.equal(w?.error?.code, 'CBR_ERR_RUN_LOST');
        } finally {
          // Once killed, its exit code stays null (it died of a signal): kill it only if the test did not get there.
          if (first.signalCode === null) await killHard(first);
          if (second) assert.equal(await stopGracefully(second), 0);
        }
      });

    it("the agent verifies against its storage: progress, then a result carrying the report; a broken backup fails with the verdict's code", async () => {
      agent = spawnAgent({
        host,
        profilePath: profilePath('source', testEnv),
        env: { ...localEnv, CBR_STATE_DB: join(scratchDir('verify-agent'), 'a.db') },
        prefix,
      });
      await waitForAgentQueue(prefix, host);
      const rec = await backup(localEnv, 'full', true);
      const bus = ['--bus', BUS_URL, '--host', host, '--prefix', prefix];
      const events: BusEvent[] = [];
      const watch = await watchEvents({ url: BUS_URL, prefix, host, resync: false, onEvent: (e) => events.push(e) });
      let ok: Awaited<ReturnType<typeof verify>>;
      try {
        ok = await verify(localEnv, rec.id, '--deep', '--decrypt-key-file', keyFile, ...bus);
      } finally {
        await watch.close();
      }
      assert.equal(ok.code, 0, ok.err);
      assert.deepEqual([ok.report.ok, ok.report.deep, ok.report.bytesRead], [true, true, rec.size]);
      const result = events.find((e) => e.type === 'result' && e.kind === 'backup.verify');
      assert.equal(result?.state, 'completed');
      const progress = events.filter((e) => e.type === 'progress' && e.workflowId === result.workflowId);
      assert.ok(progress.length > 0, `no progress event among ${events.map((e) => e.type).join(', ')}`);
      assert.ok(
        progress.every((e) => e.kind === 'backup.verify' && e.step === 'verifying' && e.progress && e.progress.totalBytes === rec.size),
        JSON.stringify(progress),
      );
      assert.equal(progress.at(-1)?.progress?.bytes, rec.size, 'the last progress says every byte was read');
      assert.ok(events.indexOf(progress.at(-1)!) < events.indexOf(result), 'progress comes before the result');
      const original = readFileSync(localPath(rec.object));
      try {
        flipLocal(rec.object);
        const bad = await verify(localEnv, rec.id, '--deep', '--decrypt-key-file', keyFile, ...bus);
        assert.equal(bad.code, 17, bad.err);
        assert.equal(bad.report.ok, false);
        assert.equal(bad.report.error?.code, 'CBR_ERR_VERIFY_CORRUPT');
      } finally {
        writeFileSync(localPath(rec.object), original);
      }
      const wrong = await cbr(['backup-verify', rec.id, '--deep', '--decrypt-key-file', wrongKeyFile, '--json', ...bus], localEnv);
      assert.equal(wrong.code, 10, wrong.err);
      assert.equal(wrong.json().error?.code, 'CBR_ERR_DECRYPT_FAILED');
    });
  });
});
