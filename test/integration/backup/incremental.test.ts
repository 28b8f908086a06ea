import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { DecryptStream, loadKey } from '../../../src/archive/crypto.ts';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { loadProfile } from '../../../src/cassandra/profile.ts';
import { BLOBS_PREFIX, blobBinding, blobKey, blobName, dedupKey, fileNameOf, tableIdOf } from '../../../src/catalog/blobs.ts';
import { type BackupRecord, readRecord } from '../../../src/catalog/catalog.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { backupTargets, blobIdentities, blobSizes } from '../../helpers/backupTargets.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { nodetool } from '../../helpers/nodetool.ts';

/**
 * Incremental backups on a real sandbox node, through the CLI as operators run it, on local storage and on the
 * Swift all-in-one: each SSTable stored once, any backup of a chain restoring exactly its snapshot, a kill -9
 * mid-upload and mid-restore resumed without moving again what was already stored or fetched and verified, and
 * (on local storage) encryption hiding names and content. What is stored is read through the project's store.
 */

const MARKER = 'cbr-incremental-marker-7f3a';

type Made = Record<string, unknown> & { id: string; newFiles: number; sharedFiles: number; newBytes: number; newStoredBytes: number; size: number };

/**
 * What the Swift variant leaves out to spare sandbox starts (the slow part of the file), with every property still
 * exercised there: no full backup before the first incremental and no restore of the second one on its own
 * (backup #3 of the chain holds its files and more), no encryption case (blob names and sealing do not depend on
 * the store), and the kill -9 mid-restore restores backup #3 of the chain, which the chain case then does not
 * restore a second time. Local storage runs everything, its killed restore being the encrypted backup's.
 */
const variants = backupTargets('inc').map((target, n) => ({ target, n, everything: n === 0 }));

for (const { target, n, everything } of variants) {
  describe(`incremental backups on a real node (${target.name})`, () => {
    const KS = `inc${process.pid}_${n}`;
    let source: Profile;
    let cql: CqlSession;
    let env: NodeJS.ProcessEnv;
    let store: ObjectStore;
    let nextId = 0;
    const record = (id: string) => readRecord(store, id);

    before(async () => {
      ({ env, store } = target.setUp({ CBR_LOG_LEVEL: 'info' }));
      source = await sharedNode('source');
      cql = await cqlFor(source);
      await cql.execute(`CREATE KEYSPACE IF NOT EXISTS ${KS} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
      await cql.execute(`CREATE TABLE IF NOT EXISTS ${KS}.t (id int PRIMARY KEY, v text, payload blob)`);
      await addRows(300);
    });

    after(async () => {
      await cql?.execute(`DROP KEYSPACE IF EXISTS ${KS}`).catch(() => {});
      await cql?.close();
    });

    /** `n` rows with 8 KiB of incompressible payload each, so stored sizes say something. */
    async function addRows(count: number): Promise<void> {
      for (let i = 0; i < count; i++) {
        const id = nextId++;
        await cql.execute(`INSERT INTO ${KS}.t (id, v, payload) VALUES (?, ?, ?)`, [id, `${MARKER}-${id}`, randomBytes(8192)]);
      }
    }

    async function backup(args: string[]): Promise<Made> {
      const res = await cbr(['backup-create', 'inc', '--config', profilePath('source', testEnv), '--json', ...args], env);
      assert.equal(res.code, 0, res.err);
      return res.json() as unknown as Made;
    }

    /** Restores `id` into a new sandbox and returns its rows (the sandbox is removed). */
    async function restoredRows(id: string, instance: string): Promise<string> {
      const res = await cbr(['create', instance, '--backup', id, '--sandbox', '--json'], env);
      assert.equal(res.code, 0, res.err);
      return rowsOf(instance, String(res.json()['profilePath']));
    }

    async function rowsOf(instance: string, path: string): Promise<string> {
      const c = await cqlFor(await loadProfile(path));
      try {
        return await dumpKeyspaces(c, [KS]);
      } finally {
        await c.close();
        await cbr(['sandbox', 'rm', instance], env);
      }
    }

    /** The SSTable a file belongs to (`nb-12-big`, `da-3gxk_...-bti`): its name without the component. */
    const sstableOf = (path: string) =>
      path
        .split('/')
        .pop()!
        .replace(/-[^-]+$/, '');
    const sstables = (rec: BackupRecord) =>
      new Set(rec.files.filter((f) => f.path.startsWith(`${KS}/`) && /-Data\.db$/.test(f.path)).map((f) => sstableOf(f.path)));

    let second: Made;

    it(`${everything ? 'after a full backup: ' : ''}an incremental stores everything once, the next one only the new SSTables${everything ? ', and restores the rows' : ''}`, async (t) => {
      const full = everything ? await backup(['--strategy', 'full']) : null;
      const first = await backup(['--incremental']);
      const r1 = await record(first.id);
      assert.equal(r1.strategy, 'incremental');
      if (full) assert.equal(r1.parent, full.id, '--incremental follows the latest backup of the node');
      assert.equal(first.sharedFiles, 0, full ? 'a full backup stores no blobs to share' : 'a new container holds no blobs yet');

      await addRows(30);
      const before = await dumpKeyspaces(cql, [KS]);
      second = await backup(['--incremental']);
      const r2 = await record(second.id);
      assert.equal(r2.parent, first.id);
      // In the user table only the new SSTable and the table's manifest.json are new; every older file is shared.
      const old = sstables(r1);
      const mine = r2.files.filter((f) => f.path.startsWith(`${KS}/`));
      for (const f of mine) if (old.has(sstableOf(f.path))) assert.equal(f.shared, true, `${f.path} was stored by the first incremental`);
      const fresh = mine.filter((f) => !f.shared && /-Data\.db$/.test(f.path));
      assert.ok(fresh.length >= 1, 'the flushed rows are a new SSTable');
      assert.ok(second.sharedFiles > second.newFiles, `shared ${second.sharedFiles}, new ${second.newFiles}`);
      assert.ok(second.newStoredBytes * 4 < (full?.size ?? first.newStoredBytes), JSON.stringify(second));
      assert.equal((await blobSizes(store)).size, first.newFiles + second.newFiles, 'one blob per stored file');
      t.diagnostic(
        `${full ? `full ${full.size} B stored; ` : ''}first incremental ${first.newStoredBytes} B (${first.newFiles} files); ` +
          `second ${second.newStoredBytes} B new (${second.newFiles} new files, ${second.sharedFiles} shared, ${second.sharedBytes} raw B shared)`,
      );
      if (everything) assert.equal(await restoredRows(second.id, `incr1-${n}`), before, 'the rows at the time of the backup');
    });

    const chain: { id: string; dump: string }[] = [];

    it(`a chain of 10 incrementals (rows added, deleted, a compaction between): backups ${everything ? '#3, #5 (after a compaction) and #10 restore their' : '#10 restores its (#3: below)'} own rows`, async (t) => {
      for (let k = 1; k <= 10; k++) {
        await addRows(10);
        if (k % 3 === 0) for (let d = 0; d < 5; d++) await cql.execute(`DELETE FROM ${KS}.t WHERE id = ?`, [k * 7 + d]);
        if (k === 5) await nodetool(source, 'compact', KS);
        const dump = await dumpKeyspaces(cql, [KS]);
        const made = await backup(['--incremental']);
        assert.equal((await record(made.id)).parent, chain.at(-1)?.id ?? second.id);
        chain.push({ id: made.id, dump });
        t.diagnostic(`#${k}: ${made.newFiles} new files (${made.newStoredBytes} B stored), ${made.sharedFiles} shared`);
      }
      assert.notEqual(chain[2]!.dump, chain[9]!.dump);
      if (everything) assert.equal(await restoredRows(chain[2]!.id, `chain3-${n}`), chain[2]!.dump, 'backup #3');
      // #5 was taken right after a major compaction: every SSTable it names replaced the ones before.
      if (everything) assert.equal(await restoredRows(chain[4]!.id, `chain5-${n}`), chain[4]!.dump, 'backup #5');
      assert.equal(await restoredRows(chain[9]!.id, `chain10-${n}`), chain[9]!.dump, 'backup #10');
    });

    it('killed with -9 mid-upload, `cbr resume` completes and uploads only the blobs not yet stored', async () => {
      await addRows(40);
      const dump = await dumpKeyspaces(cql, [KS]);
      const id = `inc-kill-${process.pid}-${n}`;
      const child = spawnCbr(
        ['backup-create', 'killed', '--config', profilePath('source', testEnv), '--id', id, '--incremental', '--concurrency', '2', '--json'],
        { ...env, CBR_DRILL_FILE_DELAY_MS: '150' },
      );
      await waitFor(env, id, (w) => w.state === 'streaming' && (progressOf(w)?.files ?? 0) >= 6, child);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const stored = await blobIdentities(store);

      const resumed = await cbr(['resume', '--json'], env);
      assert.equal(resumed.code, 0, resumed.err);
      const outcome = (resumed.json() as unknown as { id: string; state: string }[]).find((o) => o.id === id);
      assert.equal(outcome?.state, 'completed');
      const after = await blobIdentities(store);
      for (const [key, identity] of stored) assert.equal(after.get(key), identity, `${key} was stored again`);
      const rec = await record(id);
      const referenced = new Set(rec.files.map((f) => f.blob!));
      const uploadedByResume = [...after.keys()].filter((k) => !stored.has(k));
      assert.ok(uploadedByResume.every((k) => referenced.has(k)));
      assert.ok(uploadedByResume.length > 0 && uploadedByResume.length < rec.files.filter((f) => !f.shared).length, 'the resume uploaded only the rest');
      // Recorded COMPLETED after the kill and the resume: it restores the rows its snapshot held.
      assert.equal(await restoredRows(id, `killed-${n}`), dump, 'the resumed backup restores its rows');
    });

    let sealed: { id: string; key: string; dump: string } | null = null;

    if (everything)
      it('with encryption, no blob name or content reveals the files', async () => {
        await addRows(5);
        const keyFile = join(scratchDir('inc-key'), 'key');
        writeFileSync(keyFile, randomBytes(32).toString('hex'), { mode: 0o600 });
        const plain = await backup(['--incremental', '--compression', 'none']);
        const made = await backup(['--incremental', '--compression', 'none', '--encrypt-key-file', keyFile]);
        sealed = { id: made.id, key: keyFile, dump: await dumpKeyspaces(cql, [KS]) };
        const rec = await record(made.id);
        assert.ok(rec.encryption && rec.mac, 'sealed with the MAC');
        assert.equal(made.sharedFiles, 0, 'encrypted blobs have names of their own: nothing shared with plain ones');
        const blobBytes = (r: BackupRecord) =>
          Promise.all(r.files.filter((f) => f.path.startsWith(`${KS}/`)).map(async (f) => buffer(await store.get(f.blob!))));
        // The marker is in the plain blobs (compression none), so looking for it finds it where it is readable.
        assert.ok(
          (await blobBytes(await record(plain.id))).some((b) => b.includes(MARKER)),
          'the marker is readable in unencrypted blobs',
        );
        assert.ok(!(await blobBytes(rec)).some((b) => b.includes(MARKER)), 'no encrypted blob holds a row value');
        // The snapshot files' SHA-256s, from the blobs' plaintext (compression none: the files themselves).
        const key = await loadKey({ file: keyFile });
        assert.equal(rec.encryption.fileHashes, 'keyed', 'the record keeps file hashes keyed');
        const hashes = new Set<string>();
        for (const f of rec.files) {
          assert.equal(f.sha256, undefined, `${f.path}: no plain SHA-256 in the record`);
          const name = f.blob!.slice(f.blob!.lastIndexOf('/') + 1);
          const bytes = await buffer((await store.get(f.blob!)).pipe(new DecryptStream(key, blobBinding(name))));
          assert.equal(bytes.length, f.size);
          const sha256 = createHash('sha256').update(bytes).digest('hex');
          hashes.add(sha256);
          const identity = { hostId: rec.hostId, tableId: tableIdOf(f.path), fileName: fileNameOf(f.path), size: f.size, sha256, compression: rec.compression };
          assert.notEqual(f.blob, blobKey(rec.hostId, blobName(identity, null)), 'the name is not the plain digest of the file');
          assert.equal(f.blob, blobKey(rec.hostId, blobName(identity, dedupKey(key))), 'the keyed name stands for the SHA-256');
        }
        // Every object in the store: no key holds one of them, nor any object the encrypted backup wrote or shares
        // (leases, records of encrypted backups, anything else); only unencrypted backups' records list them.
        let read = 0;
        for await (const o of store.list('')) {
          for (const h of hashes) assert.ok(!o.key.includes(h), `${o.key} names a file's SHA-256`);
          if (o.key.startsWith(BLOBS_PREFIX)) continue;
          const text = (await buffer(await store.get(o.key))).toString('latin1');
          if (o.key.endsWith('/backup.json') && (JSON.parse(text) as BackupRecord).encryption === null) continue;
          read++;
          for (const h of hashes) assert.ok(!text.includes(h), `${o.key} holds the SHA-256 of a snapshot file`);
        }
        assert.ok(read >= 1, 'the encrypted record was read');
      });

    it(`killed with -9 mid-restore (fetching ${everything ? 'the encrypted backup' : 'backup #3 of the chain'}), \`cbr resume\` completes, fetching only what the journal did not list; rows identical`, async () => {
      const restoring = sealed ?? { ...chain[2]!, key: null };
      const instance = `inckill-${n}`;
      const child = spawnCbr(
        ['create', instance, '--backup', restoring.id, '--sandbox', '--json', ...(restoring.key ? ['--decrypt-key-file', restoring.key] : [])],
        {
          ...env,
          CBR_DRILL_FILE_DELAY_MS: '100',
        },
      );
      const sandbox = join(String(testEnv['CBR_HOME']), 'sandboxes', instance);
      const journal = () => {
        if (!existsSync(sandbox)) return null;
        const at = (readdirSync(sandbox, { recursive: true }) as string[]).find((p) => p.endsWith('.cbr-fetched'));
        return at ? join(sandbox, at) : null;
      };
      const deadline = Date.now() + 300_000;
      for (;;) {
        const j = journal();
        if (j && readFileSync(j, 'utf8').split('\n').length > 6) break;
        assert.ok(child.exitCode === null && Date.now() < deadline, 'the restore did not reach fetching');
        await sleep(50);
      }
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const listed = readFileSync(journal()!, 'utf8')
        .split('\n')
        .filter((l) => /^[0-9a-f]{64} /.test(l)).length;
      const total = (await record(restoring.id)).fileCount;
      assert.ok(listed > 0 && listed < total, `${listed} of ${total} fetched before the kill`);

      const resumed = await cbr(['resume', '--json'], env);
      assert.equal(resumed.code, 0, resumed.err);
      const line = resumed.err.split('\n').find((l) => l.includes('files fetched'));
      assert.ok(line, resumed.err.slice(-2000));
      const logged = JSON.parse(line) as { fetched: number; alreadyThere: number };
      assert.deepEqual({ fetched: logged.fetched, alreadyThere: logged.alreadyThere }, { fetched: total - listed, alreadyThere: listed });
      const status = await cbr(['sandbox', 'status', instance, '--json'], env);
      assert.equal(await rowsOf(instance, String(status.json()['profilePath'])), restoring.dump);
    });
  });
}

function spawnCbr(args: string[], env: NodeJS.ProcessEnv): ChildProcess {
  return spawn(join(REPO, 'node_modules', '.bin', 'node'), [join(REPO, 'bin', 'cbr.js'), ...args], { env, stdio: 'ignore' });
}

type Row = { state: string; snapshot: unknown };
const progressOf = (w: Row) => (w.snapshot as { context?: { progress?: { files: number } | null } }).context?.progress ?? null;

async function waitFor(env: NodeJS.ProcessEnv, id: string, ok: (w: Row) => boolean, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    if (existsSync(String(env['CBR_STATE_DB']))) {
      const db = new StateDb(String(env['CBR_STATE_DB']), { readOnly: true });
      try {
        const w = db.get(id);
        if (w && ok(w as Row)) return;
      } finally {
        db.close();
      }
    }
    assert.ok(child.exitCode === null && Date.now() < deadline, `workflow ${id} did not get there`);
    await sleep(50);
  }
}
