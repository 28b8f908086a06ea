import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, unlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { listSnapshotFiles } from '../../../src/cassandra/layout.ts';
import { type FileIdentity, HashCache, livePathOf } from '../../../src/catalog/hashCache.ts';
import { storeFiles } from '../../../src/steps/backup/storeFiles.ts';
import { takeSnapshot } from '../../../src/steps/backup/takeSnapshot.ts';
import { fakeNode, removeFakeNodes } from '../../fixtures/fakeNode.ts';
import { MemoryStore } from '../../fixtures/memoryStore.ts';
import { backupDeps, backupInput, liveSignal } from '../../fixtures/stepKit.ts';

after(removeFakeNodes);

const homes: string[] = [];
after(() => {
  for (const h of homes) rmSync(h, { recursive: true, force: true });
});
function home(): string {
  const h = mkdtempSync(join(tmpdir(), 'cbr-hashcache-'));
  homes.push(h);
  return h;
}

function identity(path: string): FileIdentity {
  const st = statSync(path, { bigint: true });
  return { dev: st.dev, ino: st.ino, size: st.size, mtimeNs: st.mtimeNs };
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex');

describe('HashCache', () => {
  it('remembers a hash across runs by device, inode, size and mtime', async () => {
    const h = home();
    const file = join(h, 'nb-1-big-Data.db');
    writeFileSync(file, 'sstable bytes');
    const c1 = await HashCache.open(h, 'host-1');
    assert.equal(c1.get(identity(file), file), undefined);
    c1.set(identity(file), sha('sstable bytes'), file);
    await c1.save();
    const c2 = await HashCache.open(h, 'host-1');
    assert.equal(c2.get(identity(file), file), sha('sstable bytes'));
    assert.deepEqual(c2.stats, { hits: 1, misses: 0 });
    assert.equal(c2.get(identity(file), join(h, 'nb-2-big-Data.db')), undefined, 'the same identity remembered for another file');
    // Another host's cache is its own.
    assert.equal((await HashCache.open(h, 'host-2')).get(identity(file), file), undefined);
  });

  it('misses once the mtime, the size or the inode differs', async () => {
    const h = home();
    const file = join(h, 'nb-1-big-Statistics.db');
    writeFileSync(file, 'first');
    const c = await HashCache.open(h, 'host-1');
    c.set(identity(file), sha('first'), file);
    const before = identity(file);
    utimesSync(file, new Date('2020-01-01'), new Date('2020-01-01'));
    assert.equal(c.get(identity(file), file), undefined, 'new mtime');
    assert.equal(c.get({ ...before, size: before.size + 1n }, file), undefined, 'new size');
    // Rewritten as a new file, the way Cassandra rewrites a Statistics.db: a new inode.
    unlinkSync(file);
    writeFileSync(join(h, 'keep-inode-busy'), 'x');
    writeFileSync(file, 'first');
    const now = identity(file);
    if (now.ino !== before.ino) assert.equal(c.get(now, file), undefined, 'new inode');
    assert.equal(c.get(before, file), sha('first'), 'the exact identity still hits');
  });

  it('saves the entries it used and the earlier ones whose live file is unchanged, drops the rest', async () => {
    const h = home();
    const kept = join(h, 'kept-Data.db');
    const gone = join(h, 'gone-Data.db');
    const used = join(h, 'used-Data.db');
    for (const f of [kept, gone, used]) writeFileSync(f, f);
    const c1 = await HashCache.open(h, 'host-1');
    for (const f of [kept, gone, used]) c1.set(identity(f), sha(f), f);
    await c1.save();
    const goneId = identity(gone);
    unlinkSync(gone);
    const c2 = await HashCache.open(h, 'host-1');
    assert.equal(c2.get(identity(used), used), sha(used));
    await c2.save();
    const saved = JSON.parse(readFileSync(c2.path, 'utf8')) as { entries: { live: string }[] };
    assert.deepEqual(saved.entries.map((e) => e.live).sort(), [kept, used].sort());
    const c3 = await HashCache.open(h, 'host-1');
    assert.equal(c3.get(goneId, gone), undefined);
    assert.equal(c3.get(identity(kept), kept), sha(kept));
  });

  it('is ignored when not trusted (CBR_REHASH) and when its file is damaged', async () => {
    const h = home();
    const file = join(h, 'a-Data.db');
    writeFileSync(file, 'a');
    const c1 = await HashCache.open(h, 'host-1');
    c1.set(identity(file), sha('a'), file);
    await c1.save();
    assert.equal((await HashCache.open(h, 'host-1', { trust: false })).get(identity(file), file), undefined);
    writeFileSync(c1.path, '{"version":1,"entries":[{"id":');
    assert.equal((await HashCache.open(h, 'host-1')).get(identity(file), file), undefined);
  });

  it('maps a snapshot file to its live SSTable', () => {
    assert.equal(livePathOf('/d/ks/t-1/snapshots/b7/nb-1-big-Data.db', 'b7'), '/d/ks/t-1/nb-1-big-Data.db');
    assert.equal(livePathOf('/d/ks/t-1/snapshots/b7/.idx/nb-1-big-Data.db', 'b7'), '/d/ks/t-1/.idx/nb-1-big-Data.db');
  });
});

describe('storeFiles with the hash cache', () => {
  it('a second backup of unchanged SSTables reads none of them to hash, and records the same hashes', async () => {
    const source = await fakeNode({ name: 'hc-source', userData: true });
    const store = new MemoryStore();
    const h = home();
    const deps = backupDeps(source, store, { hashCache: { home: h, trust: true } });
    const in1 = backupInput(source, { backupId: 'h1', strategy: 'incremental', parent: null, concurrency: 2, startedAt: new Date().toISOString() });
    await takeSnapshot(deps, in1, liveSignal());
    const r1 = await storeFiles(deps, in1, liveSignal());
    const in2 = backupInput(source, { backupId: 'h2', strategy: 'incremental', parent: null, concurrency: 2, startedAt: new Date().toISOString() });
    await takeSnapshot(deps, in2, liveSignal());
    const lines = deps.log as unknown as { lines: { msg: string; fields?: Record<string, unknown> }[] };
    lines.lines.length = 0;
    const r2 = await storeFiles(deps, in2, liveSignal());
    const stats = lines.lines.find((l) => l.msg === 'file hash cache')?.fields as { hits: number; misses: number };
    // Every hard-linked file hits; each snapshot's own manifest.json and schema.cql are new files.
    const own = r2.manifest!.filter((f) => /\/(manifest\.json|schema\.cql)$/.test(f.path)).length;
    assert.equal(stats.hits, r2.files - own);
    assert.equal(stats.misses, own);
    const byPath = new Map(r1.manifest!.map((f) => [f.path, f.sha256]));
    for (const f of r2.manifest!) if (byPath.has(f.path) && !/\/(manifest\.json|schema\.cql)$/.test(f.path)) assert.equal(f.sha256, byPath.get(f.path));
    // And those hashes are the files' real ones.
    for (const f of await listSnapshotFiles(source.profile.dataDirs, 'h2')) {
      const m = r2.manifest!.find((e) => e.path === f.archivePath)!;
      assert.equal(m.sha256, createHash('sha256').update(readFileSync(f.path)).digest('hex'));
    }
  });

  it('a wrong remembered hash of a file not yet stored is found by the upload, forgotten, and the file hashed again', async () => {
    const source = await fakeNode({ name: 'hc-wrong', userData: true });
    const store = new MemoryStore();
    const h = home();
    const input = backupInput(source, { backupId: 'w1', strategy: 'incremental', parent: null, concurrency: 1, startedAt: new Date().toISOString() });
    const deps0 = backupDeps(source, store);
    await takeSnapshot(deps0, input, liveSignal());
    const files = await listSnapshotFiles(source.profile.dataDirs, 'w1');
    const victim = files.find((f) => f.archivePath.endsWith('Data.db'))!;
    const poisoned = await HashCache.open(h, source.profile.hostId);
    poisoned.set(identity(victim.path), sha('not these bytes'), livePathOf(victim.path, 'w1'));
    await poisoned.save();
    const deps = backupDeps(source, store, { hashCache: { home: h, trust: true } });
    const r = await storeFiles(deps, input, liveSignal());
    const m = r.manifest!.find((e) => e.path === victim.archivePath)!;
    assert.equal(m.sha256, createHash('sha256').update(readFileSync(victim.path)).digest('hex'));
    const again = await HashCache.open(h, source.profile.hostId);
    assert.equal(again.get(identity(victim.path), livePathOf(victim.path, 'w1')), m.sha256, 'the cache now holds the real hash');
  });
});
