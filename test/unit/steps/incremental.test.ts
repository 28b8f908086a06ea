import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { after, describe, it } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { DecryptStream, EncryptStream } from '../../../src/archive/crypto.ts';
import { listSnapshotFiles } from '../../../src/cassandra/layout.ts';
import { blobBinding } from '../../../src/catalog/blobs.ts';
import { readRecord } from '../../../src/catalog/catalog.ts';
import { leaseKey, leasePrefix } from '../../../src/catalog/leases.ts';
import { filesDigest, sealRecord } from '../../../src/catalog/record.ts';
import { verifyBackup } from '../../../src/catalog/verify.ts';
import { CbrError } from '../../../src/core/errors.ts';
import type { BackupInput } from '../../../src/machines/backup.machine.ts';
import { checkFreeSpace } from '../../../src/steps/backup/checkFreeSpace.ts';
import { clearSnapshot } from '../../../src/steps/backup/clearSnapshot.ts';
import { deleteBackupObjects } from '../../../src/steps/backup/deleteBackupObjects.ts';
import { storeFiles } from '../../../src/steps/backup/storeFiles.ts';
import { streamArchive } from '../../../src/steps/backup/streamArchive.ts';
import { takeSnapshot } from '../../../src/steps/backup/takeSnapshot.ts';
import { verifyNode } from '../../../src/steps/backup/verifyNode.ts';
import { writeRecord } from '../../../src/steps/backup/writeRecord.ts';
import { JOURNAL } from '../../../src/steps/restore/fetchFiles.ts';
import { FetchJournal } from '../../../src/steps/restore/fetchJournal.ts';
import { restorePaths } from '../../../src/steps/restore/restoreDeps.ts';
import { unpackBackup } from '../../../src/steps/restore/unpackBackup.ts';
import { type FakeNode, fakeNode, removeFakeNodes, TABLE_IDS } from '../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';
import { backupDeps, backupInput, liveSignal, type MadeBackup, recordingLogger, rejectsCoded, restoreUntil } from '../../fixtures/stepKit.ts';

/**
 * The incremental strategy's steps on a FakeNode and a MemoryStore: storeFiles (through streamArchive) stores each
 * snapshot file once, writeRecord writes the format-3 record and drops the lease, fetchFiles (through
 * unpackBackup) restores every file checked against its SHA-256 and resumes from its journal.
 */

after(removeFakeNodes);

async function incrementalBackup(source: FakeNode, store: MemoryStore, key: Buffer | null, over: Partial<BackupInput>): Promise<MadeBackup> {
  const deps = backupDeps(source, store, { key });
  const input = backupInput(source, { strategy: 'incremental', parent: null, concurrency: 3, ...over });
  const signal = liveSignal();
  const facts = await verifyNode(deps, input, signal);
  await checkFreeSpace(deps, input, signal);
  await clearSnapshot(deps, input, signal);
  await takeSnapshot(deps, input, signal);
  const result = await streamArchive(deps, input, signal);
  await writeRecord(deps, { ...input, node: facts, result }, signal);
  await clearSnapshot(deps, input, signal);
  return { source, store, key, facts, result };
}

/** Every file under the staging directories (by path inside them) and its SHA-256; the journals' file lines apart. */
function tree(roots: string[]): { files: Record<string, string>; journals: string[][] } {
  const files: Record<string, string> = {};
  const journals: string[][] = [];
  for (const root of roots) {
    const walk = (dir: string) => {
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name !== JOURNAL || dir !== root) files[relative(root, p)] = createHash('sha256').update(readFileSync(p)).digest('hex');
      }
    };
    walk(root);
    journals.push(
      existsSync(join(root, JOURNAL))
        ? readFileSync(join(root, JOURNAL), 'utf8')
            .split('\n')
            .filter((l) => /^[0-9a-f]{64} /.test(l))
        : [],
    );
  }
  return { files, journals };
}

function stagingsOf(setup: Awaited<ReturnType<typeof restoreUntil>>): string[] {
  return restorePaths(setup.target.profile, setup.input.ctx.workflowId).stagings.map((s) => s.staging);
}

const blobKeys = (store: MemoryStore) => store.keys().filter((k) => k.startsWith('cbr.blobs/'));

describe('incremental backups: steps', () => {
  it('stores every file once, then only what changed; the record lists each file and its blob', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const first = await incrementalBackup(source, store, null, { backupId: 'i1', startedAt: new Date().toISOString() });
    const rec1 = await readRecord(store, 'i1');
    assert.equal(rec1.format, 3);
    assert.equal(rec1.strategy, 'incremental');
    assert.equal(rec1.parent, null);
    assert.equal(rec1.newBytes, rec1.rawBytes);
    assert.equal(rec1.sharedBytes, 0);
    assert.equal(blobKeys(store).length, rec1.fileCount);
    assert.equal(first.result.newFiles, rec1.fileCount);
    assert.equal(store.keys().filter((k) => k.startsWith(leasePrefix(source.profile.hostId))).length, 0, 'lease released');

    // One new SSTable component; the rest unchanged. Blobs of the first backup are older than the second's start.
    writeFileSync(join(source.profile.dataDirs[0]!, 'shop', `orders-${TABLE_IDS.orders}`, 'nb-9-big-Data.db'), randomBytes(3000));
    for (const o of store.objects.values()) o.modified = '2020-01-01T00:00:00.000Z';
    const puts = store.calls.filter((c) => c.op === 'put').length;
    const second = await incrementalBackup(source, store, null, { backupId: 'i2', parent: 'i1', startedAt: new Date().toISOString() });
    const rec2 = await readRecord(store, 'i2');
    assert.equal(rec2.parent, 'i1');
    assert.equal(rec2.fileCount, rec1.fileCount + 1);
    // New: the SSTable, and the table's manifest.json (it lists the table's SSTables).
    const fresh = rec2.files.filter((f) => !f.shared).map((f) => f.path.split('/').pop());
    assert.deepEqual(fresh.sort(), ['manifest.json', 'nb-9-big-Data.db']);
    assert.equal(second.result.newFiles, 2);
    const manifest = rec2.files.find((f) => !f.shared && f.path.endsWith('manifest.json'))!;
    assert.equal(rec2.newBytes, 3000 + manifest.size);
    assert.equal(rec2.sharedBytes, rec2.rawBytes - rec2.newBytes!);
    assert.equal(blobKeys(store).length, rec1.fileCount + 2);
    assert.equal(store.calls.filter((c) => c.op === 'put' && c.key.startsWith('cbr.blobs/')).length, rec1.fileCount + 2, 'one put per blob over both backups');
    assert.equal(
      store.calls.filter((c) => c.op === 'put').length - puts,
      5,
      'the second backup put two blobs, its lease (again before the record) and its record',
    );
  });

  it("a backup started in the very second its parent's blobs were stored counts them as shared (the parent names them)", async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const second = new Date(Math.floor(Date.now() / 1000) * 1000);
    await incrementalBackup(source, store, null, { backupId: 'q1', startedAt: second.toISOString() });
    writeFileSync(join(source.profile.dataDirs[0]!, 'shop', `orders-${TABLE_IDS.orders}`, 'nb-9-big-Data.db'), randomBytes(3000));
    // Every blob stored 300 ms into the second the next backup starts in: the time alone cannot tell.
    for (const o of store.objects.values()) o.modified = new Date(second.getTime() + 300).toISOString();
    const next = await incrementalBackup(source, store, null, { backupId: 'q2', parent: 'q1', startedAt: new Date(second.getTime() + 600).toISOString() });
    const fresh = (await readRecord(store, 'q2')).files.filter((f) => !f.shared).map((f) => f.path.split('/').pop());
    assert.deepEqual(fresh.sort(), ['manifest.json', 'nb-9-big-Data.db']);
    assert.equal(next.result.newFiles, 2);
  });

  it('a run that died mid-upload, run again, uploads only the blobs not yet stored', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const deps = backupDeps(source, store);
    const input = backupInput(source, { backupId: 'k1', strategy: 'incremental', parent: null, concurrency: 1, startedAt: new Date().toISOString() });
    await takeSnapshot(deps, input, liveSignal());
    let left = 3;
    store.beforeCommit = (key) => {
      if (key.startsWith('cbr.blobs/') && left-- <= 0) throw new CbrError('CBR_ERR_STORAGE_FAILED', 'the uplink died');
    };
    await rejectsCoded(storeFiles(deps, input, liveSignal()), 'CBR_ERR_STORAGE_FAILED');
    const stored = blobKeys(store);
    assert.equal(stored.length, 3);
    store.beforeCommit = null;
    store.calls.length = 0;
    const result = await storeFiles(deps, input, liveSignal());
    const puts = store.calls.filter((c) => c.op === 'put' && c.key.startsWith('cbr.blobs/')).map((c) => c.key);
    assert.equal(puts.length, result.files - 3);
    assert.ok(!puts.some((k) => stored.includes(k)), 'no blob stored before is uploaded again');
    // Blobs the died run stored count as this backup's own: they are new, not shared.
    assert.equal(result.newFiles, result.files);
  });

  it('writeRecord looks at every blob again unless the lease was held without a break since storeFiles saw them', async (t) => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const deps = backupDeps(source, store);
    const base = backupInput(source, { strategy: 'incremental', parent: null, startedAt: new Date().toISOString() });
    const record = async (backupId: string, age: number | string | null, drop = false, leasePutMs = 0) => {
      const input = { ...base, ctx: { ...base.ctx, backupId } };
      const node = await verifyNode(deps, input, liveSignal());
      await takeSnapshot(deps, input, liveSignal());
      const result = await storeFiles(deps, input, liveSignal());
      assert.ok(result.leaseWrittenAt, 'storeFiles held its lease without a break');
      // The stamp is `<process>@<monotonic ms>`: the same process, `age` ms earlier.
      const [pid, at] = result.leaseWrittenAt.split('@');
      const seen = age === null ? {} : { leaseWrittenAt: typeof age === 'string' ? age : `${pid}@${Number(at) - age}` };
      const { leaseWrittenAt: _, ...rest } = result;
      if (drop) await store.delete(rest.manifest![0]!.blob!);
      store.calls.length = 0;
      if (leasePutMs > 0) {
        // This step's own lease write takes leasePutMs of a clock the test moves.
        t.mock.timers.enable({ apis: ['Date'], now: Date.now() });
        const base = performance.now() - Date.now();
        t.mock.method(performance, 'now', () => base + Date.now());
        const key = leaseKey(source.profile.hostId, 'backup', backupId);
        store.beforeCommit = (k) => {
          if (k !== key) return;
          store.beforeCommit = null;
          t.mock.timers.tick(leasePutMs);
        };
      }
      const done = writeRecord(deps, { ...input, node, result: { ...rest, ...seen } }, liveSignal());
      return { done, heads: () => store.calls.filter((c) => c.op === 'head' && c.key.startsWith('cbr.blobs/')).length, files: rest.files };
    };
    // Just seen under the lease: nothing to look at again.
    const fresh = await record('w1', 0);
    await fresh.done;
    assert.equal(fresh.heads(), 0);
    // Seen longer ago than half the lease's ttl, or by a run that did not say: every blob again, and a vanished
    // one fails the record.
    const stale = await record('w2', 6 * 60_000);
    await stale.done;
    assert.equal(stale.heads(), stale.files);
    const unsaid = await record('w3', null, true);
    await rejectsCoded(unsaid.done, 'CBR_ERR_STORAGE_FAILED', /gone: not recorded/);
    // Seen 2 minutes before this step's lease write began, which lands 4 minutes later: from start to start the gap
    // is under half the ttl (5 minutes), but this write landed 6 minutes after storeFiles' write began, past the
    // half a ttl that covers clocks that disagree, so the lease may have looked dead in between: every blob again.
    const late = await record('w4', 2 * 60_000, false, 4 * 60_000);
    await late.done;
    assert.equal(late.heads(), late.files);
    t.mock.reset();
    // A stamp of another process (a backup resumed in writeRecord after a restart), or a wall-clock time as older
    // runs left, just now by the clock: every blob again, and a vanished one fails the record.
    for (const [id, other] of [
      ['w5', '00000000-0000-4000-8000-000000000000@1'],
      ['w6', new Date().toISOString()],
    ] as const) {
      const resumed = await record(id, other, true);
      await rejectsCoded(resumed.done, 'CBR_ERR_STORAGE_FAILED', /gone: not recorded/);
    }
  });

  it("a failed backup's compensation releases its lease", async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const deps = backupDeps(source, store);
    const input = backupInput(source, { backupId: 'c1', strategy: 'incremental', parent: null, startedAt: new Date().toISOString() });
    await takeSnapshot(deps, input, liveSignal());
    store.fail('put', new CbrError('CBR_ERR_STORAGE_FAILED', 'down'), { match: (k) => k.startsWith('cbr.blobs/') });
    await rejectsCoded(storeFiles(deps, input, liveSignal()), 'CBR_ERR_STORAGE_FAILED');
    const leases = () => store.keys().filter((k) => k.startsWith(leasePrefix(source.profile.hostId)));
    assert.equal(leases().length, 1, 'the lease outlives the step (its blobs are unreferenced)');
    await deleteBackupObjects(deps, { ctx: { ...input.ctx, error: { code: 'CBR_ERR_STORAGE_FAILED' } } }, liveSignal());
    assert.deepEqual(leases(), []);
  });

  it('a lease that cannot be released once the record is written is a warning, never a failed (and undone) backup', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const deps = backupDeps(source, store);
    const input = backupInput(source, { backupId: 'r1', strategy: 'incremental', parent: null, startedAt: new Date().toISOString() });
    const node = await verifyNode(deps, input, liveSignal());
    await takeSnapshot(deps, input, liveSignal());
    const result = await storeFiles(deps, input, liveSignal());
    const key = leaseKey(source.profile.hostId, 'backup', 'r1');
    store.fail('delete', new CbrError('CBR_ERR_STORAGE_FAILED', 'proxy blip'), { match: (k) => k === key });
    await writeRecord(deps, { ...input, node, result }, liveSignal());
    assert.equal((await readRecord(store, 'r1')).state, 'COMPLETED');
    assert.ok(store.keys().includes(key), 'the lease is left to die with its ttl');
    assert.ok(deps.log.lines.some((l) => l.level === 'warn' && /lease/.test(l.msg)));
  });

  it('restores exactly the snapshot, verified; a re-run fetches only what the journal does not list', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const made = await incrementalBackup(source, store, null, { backupId: 'b1', startedAt: new Date().toISOString() });
    const setup = await restoreUntil('unpackBackup', { backup: made });
    await unpackBackup(setup.deps, setup.input, liveSignal());
    const stagings = stagingsOf(setup);
    const first = tree(stagings);
    const rec = await readRecord(store, 'b1');
    assert.equal(first.journals.flat().length, rec.fileCount);
    assert.deepEqual(Object.keys(first.files).sort(), rec.files.map((f) => f.path).sort());
    for (const f of rec.files) assert.equal(first.files[f.path], f.sha256, f.path);

    // Killed after some files: each journal keeps its first half, and the next line was cut mid-write.
    let kept = 0;
    for (const [i, lines] of first.journals.entries()) {
      const keep = lines.slice(0, Math.floor(lines.length / 2));
      kept += keep.length;
      writeFileSync(join(stagings[i]!, JOURNAL), keep.map((l) => `${l}\n`).join('') + (lines[keep.length] ?? '').slice(0, 20));
    }
    assert.ok(kept > 0);
    setup.store.calls.length = 0;
    await unpackBackup(setup.deps, setup.input, liveSignal());
    const gets = setup.store.calls.filter((c) => c.op === 'get' && c.key.startsWith('cbr.blobs/')).length;
    assert.equal(gets, rec.fileCount - kept, 'only files the journal does not list are fetched again');
    assert.deepEqual(tree(stagings).files, first.files);
  });

  for (const key of [null, randomBytes(32)])
    it(`after a cut, a file listed after the last durable mark is read back, and fetched again when it is not whole${key ? ' (encrypted: checked through the keyed blob names)' : ''}`, async () => {
      const source = await fakeNode({ name: 'source', userData: true });
      const store = new MemoryStore();
      const made = await incrementalBackup(source, store, key, { backupId: 'b1', startedAt: new Date().toISOString() });
      const setup = await restoreUntil('unpackBackup', { backup: made });
      await unpackBackup(setup.deps, setup.input, liveSignal());
      const stagings = stagingsOf(setup);
      const first = tree(stagings);
      const rec = await readRecord(store, 'b1');
      // The ending mark covers every line.
      for (const s of stagings) {
        const marks = readFileSync(join(s, JOURNAL), 'utf8')
          .split('\n')
          .filter((l) => l.startsWith('durable '));
        assert.ok(marks.length > 0, 'the step ends with a durable mark');
      }
      // As after a power cut: the last mark covers only the first line of each journal; of the unsynced lines, one
      // file lost its tail (zeros, same size) and one is missing.
      const big = rec.files.filter((f) => f.size > 100);
      const [zeroed, lost] = [big[0]!, big[1]!];
      const pathOf = (f: (typeof rec.files)[number]) => stagings.map((s) => join(s, f.path)).find((p) => existsSync(p))!;
      let listed = 0;
      for (const [i, lines] of first.journals.entries()) {
        listed += lines.length;
        const ordered = [...lines.filter((l) => !l.endsWith(` ${zeroed.path}`) && !l.endsWith(` ${lost.path}`))];
        const wanted = lines.filter((l) => l.endsWith(` ${zeroed.path}`) || l.endsWith(` ${lost.path}`));
        // The damaged files are listed after the mark.
        writeFileSync(
          join(stagings[i]!, JOURNAL),
          [ordered[0], 'durable 1', ...ordered.slice(1), ...wanted]
            .filter(Boolean)
            .map((l) => `${l}\n`)
            .join(''),
        );
      }
      const z = readFileSync(pathOf(zeroed));
      z.fill(0, Math.floor(z.length / 2));
      writeFileSync(pathOf(zeroed), z);
      rmSync(pathOf(lost));
      setup.store.calls.length = 0;
      const log = recordingLogger();
      await unpackBackup({ ...setup.deps, log }, setup.input, liveSignal());
      const gets = setup.store.calls.filter((c) => c.op === 'get' && c.key.startsWith('cbr.blobs/')).map((c) => c.key);
      assert.deepEqual(gets.sort(), [zeroed.blob!, lost.blob!].sort(), 'only the damaged files are fetched again');
      assert.deepEqual(tree(stagings).files, first.files);
      const done = log.lines.find((l) => l.msg === 'files fetched')!.fields!;
      assert.equal(done['fetched'], 2);
      // Every line after a mark was read back; the lines under a mark were not.
      assert.equal(done['readBack'], listed - stagings.length);
    });

  it('a journal line under a durable mark is trusted at its size; a line of another content, or a cut line, is not', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const made = await incrementalBackup(source, store, null, { backupId: 'b1', startedAt: new Date().toISOString() });
    const setup = await restoreUntil('unpackBackup', { backup: made });
    const rec = await readRecord(store, 'b1');
    const [a, b] = rec.files.filter((f) => f.size > 100);
    const staging = stagingsOf(setup)[0]!;
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    const other = 'f'.repeat(64);
    writeFileSync(join(staging, JOURNAL), `${a!.sha256} ${a!.path}\n${other} ${b!.path}\ndurable 7\n${b!.sha256} ${b!.path.slice(0, 3)}`);
    const j = await FetchJournal.open(staging);
    try {
      assert.equal(j.listed(a!), 'durable');
      assert.equal(j.listed(b!), null, 'listed with another SHA-256, or cut mid-line');
      assert.equal(j.marked, 2, 'a mark never covers more lines than precede it');
      j.add(b!);
      assert.equal(j.listed(b!), 'unsynced');
      await j.mark(j.count);
    } finally {
      j.close();
    }
    // The cut line was dropped, so the next one starts a line of its own.
    assert.deepEqual(readFileSync(join(staging, JOURNAL), 'utf8').split('\n'), [
      `${a!.sha256} ${a!.path}`,
      `${other} ${b!.path}`,
      'durable 7',
      `${b!.sha256} ${b!.path}`,
      'durable 3',
      '',
    ]);
    const again = await FetchJournal.open(staging);
    try {
      assert.equal(again.listed(b!), 'durable');
      assert.equal(again.marked, 3);
    } finally {
      again.close();
    }
  });

  it("a mark taken by the next run never covers an earlier run's line it has not read back", async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const made = await incrementalBackup(source, store, null, { backupId: 'b1', startedAt: new Date().toISOString() });
    const setup = await restoreUntil('unpackBackup', { backup: made });
    const rec = await readRecord(store, 'b1');
    const [a, b] = rec.files.filter((f) => f.size > 100);
    const staging = stagingsOf(setup)[0]!;
    mkdirSync(staging, { recursive: true, mode: 0o700 });
    // Run 1 listed A and was cut before any mark; run 2 fetches B, marks, and is killed before reading A back.
    writeFileSync(join(staging, JOURNAL), `${a!.sha256} ${a!.path}\n`);
    const run2 = await FetchJournal.open(staging);
    try {
      assert.equal(run2.listed(a!), 'unsynced');
      run2.add(b!);
      await run2.mark(run2.count);
    } finally {
      run2.close();
    }
    const run3 = await FetchJournal.open(staging);
    try {
      assert.notEqual(run3.listed(a!), 'durable', 'A was never read back: a mark must not vouch for it');
      assert.equal(run3.listed(b!), 'durable');
    } finally {
      run3.close();
    }
    // Closed, it writes nothing more (a mark still in flight when a failed step closes its journals must not write
    // into whatever file reuses the descriptor).
    await assert.rejects(run3.mark(9), /closed/);
    assert.throws(() => run3.add(a!), /closed/);
  });

  it('refuses a blob whose content is not the recorded file, naming the file', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const made = await incrementalBackup(source, store, null, { backupId: 'b1', compression: 'none', startedAt: new Date().toISOString() });
    const setup = await restoreUntil('unpackBackup', { backup: made });
    const rec = await readRecord(setup.store, 'b1');
    const victim = rec.files.find((f) => f.size > 100)!;
    const o = setup.store.objects.get(victim.blob!)!;
    o.body = Buffer.from(o.body);
    o.body[10] = o.body[10]! ^ 1;
    await rejectsCoded(unpackBackup(setup.deps, setup.input, liveSignal()), 'CBR_ERR_ARCHIVE_CORRUPT', new RegExp(victim.path.split('/').pop()!));
  });

  it('with encryption, blob names and bytes reveal nothing of the files; restore opens them', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const key = randomBytes(32);
    const files = new Map<string, Buffer>();
    const made = await incrementalBackup(source, store, key, { backupId: 'b1', compression: 'none', startedAt: new Date().toISOString() });
    const rec = await readRecord(store, 'b1');
    for (const f of rec.files) files.set(f.path, store.objects.get(f.blob!)!.body);
    // The plaintext of a data file never appears in its blob (compression none: only encryption hides it).
    const setup = await restoreUntil('unpackBackup', { backup: made });
    await unpackBackup(setup.deps, setup.input, liveSignal());
    const restored = tree(stagingsOf(setup));
    assert.equal(Object.keys(restored.files).length, rec.fileCount);
    for (const f of rec.files) {
      const at = stagingsOf(setup)
        .map((s) => join(s, f.path))
        .find((p) => existsSync(p))!;
      const plain = readFileSync(at);
      if (plain.length >= 64) assert.ok(!files.get(f.path)!.includes(plain.subarray(0, 64)), `${f.path} is readable in its blob`);
    }
    // A blob moved under another file's name does not open (each is bound to its own name).
    const [a, b] = rec.files.filter((f) => f.size > 100);
    const setup2 = await restoreUntil('unpackBackup', { backup: made });
    setup2.store.objects.set(a!.blob!, { ...setup2.store.objects.get(b!.blob!)! });
    await assert.rejects(unpackBackup(setup2.deps, setup2.input, liveSignal()), (e: Error) => e instanceof CbrError);
  });

  it("with encryption, no stored object names or holds a file's SHA-256: the record keeps them keyed, in the blob names", async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const key = randomBytes(32);
    const made = await incrementalBackup(source, store, key, { backupId: 'b1', startedAt: new Date().toISOString() });
    writeFileSync(join(source.profile.dataDirs[0]!, 'shop', `orders-${TABLE_IDS.orders}`, 'nb-9-big-Data.db'), randomBytes(3000));
    await incrementalBackup(source, store, key, { backupId: 'b2', parent: 'b1', startedAt: new Date().toISOString() });
    const rec = await readRecord(store, 'b1');
    assert.equal(rec.encryption?.fileHashes, 'keyed');
    assert.ok(rec.files.every((f) => f.sha256 === undefined));
    // The snapshot's files, restored (and so checked) from the encrypted blobs: their SHA-256s.
    const setup = await restoreUntil('unpackBackup', { backup: made });
    await unpackBackup(setup.deps, setup.input, liveSignal());
    const hashes = Object.values(tree(stagingsOf(setup)).files);
    assert.equal(hashes.length, rec.fileCount);
    for (const k of store.keys()) {
      const text = store.objects.get(k)!.body.toString('latin1');
      for (const h of hashes) {
        assert.ok(!k.includes(h), `${k} names a file's SHA-256`);
        if (!k.startsWith('cbr.blobs/')) assert.ok(!text.includes(h), `${k} holds a file's SHA-256`);
      }
    }
    // A manifest persisted by an earlier version (plain SHA-256s in the workflow context) is written keyed too.
    const withHashes = { ...made.result, manifest: made.result.manifest!.map((f) => ({ ...f, sha256: 'a'.repeat(64) })) };
    const again = new MemoryStore();
    const deps = backupDeps(source, again, { key });
    const input = backupInput(source, { strategy: 'incremental', parent: null, backupId: 'b3', startedAt: new Date().toISOString() });
    for (const f of made.result.manifest!) again.objects.set(f.blob, store.objects.get(f.blob)!);
    await writeRecord(deps, { ...input, node: made.facts, result: withHashes }, liveSignal());
    assert.ok(!again.objects.get('b3/backup.json')!.body.toString().includes('a'.repeat(64)));
  });

  for (const compression of ['none', 'gzip'] as const)
    it(`an encrypted record still checks every file (${compression === 'gzip' ? 'on this thread' : 'on the fetch workers'}): other bytes sealed under a blob's own name are refused by restore and deep verify`, async () => {
      const source = await fakeNode({ name: 'source', userData: true });
      const store = new MemoryStore();
      const key = randomBytes(32);
      const made = await incrementalBackup(source, store, key, { backupId: 'b1', compression, startedAt: new Date().toISOString() });
      const rec = await readRecord(store, 'b1');
      const victim = rec.files.find((f) => f.size > 100)!;
      const name = victim.blob!.slice(victim.blob!.lastIndexOf('/') + 1);
      // Decrypted, one byte changed, sealed again with the key and the blob's own binding: it opens, and is not the file.
      const sealedBytes = await buffer(Readable.from([store.objects.get(victim.blob!)!.body]).pipe(new DecryptStream(key, blobBinding(name))));
      const plain = compression === 'gzip' ? gunzipSync(sealedBytes) : sealedBytes;
      plain[10] = plain[10]! ^ 1;
      const other = await buffer(Readable.from([compression === 'gzip' ? gzipSync(plain) : plain]).pipe(new EncryptStream(key, undefined, blobBinding(name))));
      const setup = await restoreUntil('unpackBackup', { backup: made });
      setup.store.objects.set(victim.blob!, { body: other, modified: new Date().toISOString() });
      await rejectsCoded(
        unpackBackup(setup.deps, setup.input, liveSignal()),
        'CBR_ERR_ARCHIVE_CORRUPT',
        new RegExp(`${victim.path.split('/').pop()!}: its SHA-256 differs`),
      );
      const report = await verifyBackup(setup.store, 'b1', { deep: true, key });
      const corrupt = report.problems.filter((p) => p.kind === 'corrupt');
      assert.deepEqual(
        corrupt.map((p) => [p.path, p.expected]),
        [[victim.path, name]],
        'the keyed name is what is compared (and reported: no plain SHA-256)',
      );
      assert.notEqual(corrupt[0]!.found, name);
    });

  it('an encrypted record written before keyed hashes (plain SHA-256s, no fileHashes) still restores and verifies, each file checked', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    const key = randomBytes(32);
    const made = await incrementalBackup(source, store, key, { backupId: 'b1', startedAt: new Date().toISOString() });
    const setup = await restoreUntil('unpackBackup', { backup: made });
    await unpackBackup(setup.deps, setup.input, liveSignal());
    const restored = tree(stagingsOf(setup)).files;
    // The record as the previous version wrote it: each file's SHA-256, the digest and the MAC over them.
    const now = (await readRecord(store, 'b1')) as unknown as Record<string, unknown> & { files: Record<string, unknown>[]; mac?: string };
    const oldForm = (sha: (path: string) => string) => {
      const files = now.files.map((f) => ({ ...f, sha256: sha(String(f['path'])) }));
      const { mac: _m, encryption, ...rest } = now;
      const { fileHashes: _f, ...enc } = encryption as Record<string, unknown>;
      return sealRecord({ ...rest, encryption: enc, files, sha256: filesDigest(files) }, key);
    };
    const put = (s: MemoryStore, body: unknown) =>
      s.objects.set('b1/backup.json', { body: Buffer.from(JSON.stringify(body)), modified: new Date().toISOString() });
    const old = await restoreUntil('unpackBackup', { backup: made });
    put(
      old.store,
      oldForm((p) => restored[p]!),
    );
    assert.equal((await readRecord(old.store, 'b1')).files[0]!.sha256, restored[now.files[0]!['path'] as string]);
    await unpackBackup(old.deps, old.input, liveSignal());
    assert.deepEqual(tree(stagingsOf(old)).files, restored);
    assert.equal((await verifyBackup(old.store, 'b1', { deep: true, key })).ok, true);
    // Its plain SHA-256s are what is checked: a wrong one is refused.
    const victim = String(now.files.find((f) => Number(f['size']) > 100)!['path']);
    const wrong = await restoreUntil('unpackBackup', { backup: made });
    put(
      wrong.store,
      oldForm((p) => (p === victim ? 'f'.repeat(64) : restored[p]!)),
    );
    await rejectsCoded(unpackBackup(wrong.deps, wrong.input, liveSignal()), 'CBR_ERR_ARCHIVE_CORRUPT', /its SHA-256 differs/);
  });

  it('a full backup still writes one archive and a format-2 record', async () => {
    const source = await fakeNode({ name: 'source', userData: true });
    const store = new MemoryStore();
    await incrementalBackup(source, store, null, { backupId: 'f1', strategy: 'full' });
    const rec = await readRecord(store, 'f1');
    assert.equal(rec.format, 2);
    assert.equal(rec.strategy, undefined);
    assert.equal(blobKeys(store).length, 0);
    assert.ok(existsSync(source.profile.dataDirs[0]!));
    assert.ok((await listSnapshotFiles(source.profile.dataDirs, 'f1')).length === 0, 'snapshot cleared');
    assert.ok(statSync(source.root).isDirectory());
  });
});
