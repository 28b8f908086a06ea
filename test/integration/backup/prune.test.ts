import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from '../../../src/bus/agent.ts';
import { publishCommand, watchEvents } from '../../../src/bus/client.ts';
import type { BusEvent } from '../../../src/bus/schemas/events.ts';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { loadProfile, type Profile } from '../../../src/cassandra/profile.ts';
import { BLOBS_PREFIX } from '../../../src/catalog/blobs.ts';
import { type BackupRecord, listRecords, readRecord, recordKey } from '../../../src/catalog/catalog.ts';
import { leaseKey } from '../../../src/catalog/leases.ts';
import { PRUNE_PREFIX } from '../../../src/catalog/prune.ts';
import { silentLogger } from '../../../src/core/log.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { openStore } from '../../../src/storage/open.ts';
import type { ObjectStore } from '../../../src/storage/port.ts';
import { BUS_URL, publishRaw, removeBusTopology } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { cqlFor, dumpKeyspaces } from '../../helpers/data.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { SWIFT_AUTH_URL, swiftEnv, swiftUp } from '../../helpers/swift.ts';

/**
 * backup-prune on a real node, on local storage and on the Swift all-in-one: a dry run names what a policy removes
 * and the bytes that frees, the real run frees exactly that, and a backup whose parent was pruned restores; a prune
 * killed (kill -9) between a record and its objects is finished by the next run, which leaves a consistent store
 * (every remaining record's objects there, no blob it names missing, no unreferenced blob, no journal); a backup
 * running during a prune completes and restores, and the next prune collects what that one could not.
 */

interface Target {
  name: string;
  setUp(): { env: NodeJS.ProcessEnv; store: ObjectStore };
}

const targets: Target[] = [
  {
    name: 'local storage',
    setUp() {
      const root = scratchDir('prune-storage');
      const env = { ...testEnv, CBR_STORAGE_ROOT: root, CBR_STATE_DB: join(scratchDir('prune-state'), 'state.db') };
      return { env, store: openStore({ driver: 'local', root, container: 'database_backups' }) };
    },
  },
  {
    name: 'Swift all-in-one',
    setUp() {
      const creds = swiftUp();
      const container = `cbr-prune-${process.pid}`;
      const env = swiftEnv({ ...testEnv, CBR_STATE_DB: join(scratchDir('prune-swift-state'), 'state.db') }, creds, container);
      return { env, store: openStore({ driver: 'swift', authUrl: SWIFT_AUTH_URL, authVersion: 1, credentialsFile: creds, container }) };
    },
  },
];

async function keysUnder(store: ObjectStore, prefix: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for await (const o of store.list(prefix)) out.set(o.key, o.size);
  return out;
}

const blobsOf = (...records: BackupRecord[]) => new Set(records.flatMap((r) => r.files.flatMap((f) => (f.blob ? [f.blob] : []))));

/**
 * The store is consistent: each remaining record's archive or blobs are there, the blobs are exactly those the
 * records name, no object lies under an id without a record, and no prune journal is left.
 */
async function assertConsistent(store: ObjectStore, expectedIds: string[]): Promise<void> {
  const records = await listRecords(store);
  assert.deepEqual(records.map((r) => r.id).sort(), [...expectedIds].sort(), 'the backups left');
  const all = await keysUnder(store, '');
  for (const r of records) {
    if (r.strategy === 'incremental') for (const b of blobsOf(r)) assert.ok(all.has(b), `${b} of ${r.id} is there`);
    else assert.equal(all.get(r.object), r.size, `the archive of ${r.id} is there, whole`);
  }
  const blobs = [...all.keys()].filter((k) => k.startsWith(BLOBS_PREFIX)).sort();
  assert.deepEqual(blobs, [...blobsOf(...records)].sort(), 'the blobs are exactly those the remaining records name');
  const ids = new Set(records.map((r) => r.id));
  const strays = [...all.keys()].filter((k) => !k.startsWith('cbr.') && !ids.has(k.split('/')[0]!));
  assert.deepEqual(strays, [], 'no object of a removed backup is left');
  assert.deepEqual([...(await keysUnder(store, PRUNE_PREFIX)).keys()], [], 'no prune journal is left');
}

for (const [n, target] of targets.entries()) {
  describe(`backup-prune (${target.name})`, () => {
    const ks = `prune${process.pid}_${n}`;
    let source: Profile;
    let cql: CqlSession;
    let env: NodeJS.ProcessEnv;
    let store: ObjectStore;
    const ids: Record<string, string> = {};

    before(async () => {
      ({ env, store } = target.setUp());
      source = await sharedNode('source');
      cql = await cqlFor(source);
      await cql.execute(`CREATE KEYSPACE IF NOT EXISTS ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
      for (const t of ['kept', 'only_b2', 'only_b3']) await cql.execute(`CREATE TABLE IF NOT EXISTS ${ks}.${t} (id int PRIMARY KEY, payload blob)`);
    });

    after(async () => {
      await cql?.execute(`DROP KEYSPACE IF EXISTS ${ks}`).catch(() => {});
      await cql?.close();
    });

    const insert = async (table: string, from: number, count: number, kib: number) => {
      for (let i = from; i < from + count; i++) await cql.execute(`INSERT INTO ${ks}.${table} (id, payload) VALUES (?, ?)`, [i, randomBytes(kib * 1024)]);
    };

    const backup = async (name: string, strategy: 'full' | 'incremental') => {
      const res = await cbr(['backup-create', name, '--config', profilePath('source', testEnv), '--strategy', strategy, '--json'], env);
      assert.equal(res.code, 0, res.err);
      return String(res.json()['id']);
    };

    const restoredRows = async (id: string, instance: string) => {
      const res = await cbr(['create', instance, '--backup', id, '--sandbox', '--json'], env);
      assert.equal(res.code, 0, res.err);
      const restored = await cqlFor(await loadProfile(String(res.json()['profilePath'])));
      try {
        return await dumpKeyspaces(restored, [ks]);
      } finally {
        await restored.close();
        await cbr(['sandbox', 'rm', instance], env);
      }
    };

    it('refuses a policy that keeps nothing, and deletes nothing', async () => {
      const res = await cbr(['backup-prune', '--json'], env);
      assert.equal(res.code, 2);
      assert.equal(res.json().error?.code, 'CBR_ERR_PRUNE_POLICY_INVALID');
      const bad = await cbr(['backup-prune', '--keep-within', '7x', '--json'], env);
      assert.equal(bad.json().error?.code, 'CBR_ERR_PRUNE_POLICY_INVALID');
    });

    it('--dry-run names what --keep-last 2 removes and the bytes it frees; the run frees exactly that; a backup whose parent went restores', async () => {
      await insert('kept', 0, 30, 4);
      ids['b1'] = await backup('b1', 'full');
      await insert('only_b2', 0, 30, 4);
      ids['b2'] = await backup('b2', 'incremental');
      await cql.execute(`DROP TABLE ${ks}.only_b2`);
      await insert('only_b3', 0, 30, 4);
      ids['b3'] = await backup('b3', 'incremental');
      await cql.execute(`DROP TABLE ${ks}.only_b3`);
      await insert('kept', 30, 30, 4);
      const rows4 = await dumpKeyspaces(cql, [ks]);
      ids['b4'] = await backup('b4', 'incremental');
      await insert('kept', 60, 30, 4);
      ids['b5'] = await backup('b5', 'incremental');

      const [b1, b2, b3, b4, b5] = await Promise.all(['b1', 'b2', 'b3', 'b4', 'b5'].map((k) => readRecord(store, ids[k]!)));
      assert.equal(b4!.parent, b3!.id, 'b4 follows b3, which the policy removes');
      const kept = blobsOf(b4!, b5!);
      const blobs = await keysUnder(store, BLOBS_PREFIX);
      const doomed = [...blobsOf(b2!, b3!)].filter((b) => !kept.has(b));
      assert.ok(doomed.length > 0, 'b2 and b3 have blobs of their own (their dropped tables)');
      const expectedFreed = b1!.size + doomed.reduce((s, b) => s + blobs.get(b)!, 0);

      const dry = await cbr(['backup-prune', '--keep-last', '2', '--dry-run', '--json'], env);
      assert.equal(dry.code, 0, dry.err);
      const plan = dry.json() as unknown as { remove: { id: string }[]; keep: { id: string; reasons: string[] }[]; freedBytes: number; freedBlobs: number };
      assert.deepEqual(
        plan.remove.map((b) => b.id),
        [b3!.id, b2!.id, b1!.id],
      );
      assert.deepEqual(
        plan.keep.map((b) => [b.id, b.reasons]),
        [
          [b5!.id, ['last']],
          [b4!.id, ['last']],
        ],
      );
      assert.deepEqual({ freedBytes: plan.freedBytes, freedBlobs: plan.freedBlobs }, { freedBytes: expectedFreed, freedBlobs: doomed.length });
      assert.equal((await listRecords(store)).length, 5, 'a dry run deletes nothing');
      assert.deepEqual(await keysUnder(store, BLOBS_PREFIX), blobs);

      const human = await cbr(['backup-prune', '--keep-last', '2', '--dry-run'], env);
      assert.match(human.out, new RegExp(`keep +${b5!.id} .*\\(last\\)`));
      assert.match(human.out, new RegExp(`would remove 3 backups and free .*\\(${expectedFreed} bytes\\)`));

      const run = await cbr(['backup-prune', '--keep-last', '2', '--json'], env);
      assert.equal(run.code, 0, run.err);
      const done = run.json() as unknown as { freedBytesDone: number; gc: { deleted: number; skipped: string | null }[]; resumed: string[] };
      assert.equal(done.freedBytesDone, expectedFreed, 'the run frees what the dry run said');
      assert.deepEqual(
        done.gc.map((g) => [g.deleted, g.skipped]),
        [[doomed.length, null]],
      );
      assert.deepEqual(done.resumed, []);
      await assertConsistent(store, [b4!.id, b5!.id]);
      assert.equal(await restoredRows(b4!.id, `prune-child-${n}`), rows4, 'the backup whose parent was pruned restores its rows');
    });

    it('a prune killed (kill -9) between a record and its objects is finished by the next run; the store is consistent', async () => {
      await insert('kept', 100, 20, 4);
      ids['b6'] = await backup('b6', 'incremental');
      await insert('kept', 120, 20, 4);
      ids['b7'] = await backup('b7', 'full');
      await insert('kept', 140, 20, 4);
      ids['b8'] = await backup('b8', 'incremental');
      const b7 = await readRecord(store, ids['b7']!);

      const child = spawn(join(REPO, 'node_modules', '.bin', 'node'), [join(REPO, 'bin', 'cbr.js'), 'backup-prune', '--keep-last', '1', '--json'], {
        env: { ...env, CBR_DRILL_PRUNE_DELAY_MS: '4000' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d) => {
        err += d;
      });
      const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_code, signal) => r(signal)));
      // b7 goes first (the newest removed): kill once its record is gone, before its archive is.
      while (await store.head(recordKey(b7.id))) {
        assert.equal(child.exitCode, null, `the prune ended before it was killed: ${err}`);
        await sleep(50);
      }
      child.kill('SIGKILL');
      assert.equal(await exited, 'SIGKILL');
      assert.ok(await store.head(b7.object), 'killed midway: the archive of b7 outlived its record');
      assert.equal((await keysUnder(store, PRUNE_PREFIX)).size, 1, 'the journal of the killed prune is there');
      assert.ok(!(await listRecords(store)).some((r) => r.id === b7.id), 'b7 is no longer listed');

      const rerun = await cbr(['backup-prune', '--keep-last', '1', '--json'], env);
      assert.equal(rerun.code, 0, rerun.err);
      const r = rerun.json() as unknown as { resumed: string[]; remove: { id: string }[]; gc: { skipped: string | null }[] };
      // The killed prune's journal names all it meant to remove; the rerun finishes that first, then finds no more.
      assert.deepEqual([...r.resumed].sort(), [ids['b4']!, ids['b5']!, ids['b6']!, b7.id].sort(), 'the rerun finished the killed prune');
      assert.deepEqual(r.remove, []);
      assert.ok(r.gc.length === 1 && r.gc[0]!.skipped === null);
      await assertConsistent(store, [ids['b8']!]);
    });

    it('a backup running during a prune completes and restores; the prune collects nothing of it, the next prune the rest', async () => {
      await insert('kept', 200, 20, 4);
      ids['b9'] = await backup('b9', 'incremental');
      await insert('kept', 1000, 200, 8);
      const rowsSlow = await dumpKeyspaces(cql, [ks]);
      const id = randomUUID();
      const hostId = (await readRecord(store, ids['b8']!)).hostId;
      const child = spawn(
        join(REPO, 'node_modules', '.bin', 'node'),
        [
          join(REPO, 'bin', 'cbr.js'),
          'backup-create',
          'slow',
          '--config',
          profilePath('source', testEnv),
          '--incremental',
          '--id',
          id,
          '--concurrency',
          '1',
          '--rate-limit',
          '64K',
          '--json',
        ],
        { env, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      let out = '';
      let err = '';
      child.stdout.on('data', (d) => {
        out += d;
      });
      child.stderr.on('data', (d) => {
        err += d;
      });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      while (!(await store.head(leaseKey(hostId, 'backup', id)))) {
        assert.equal(child.exitCode, null, `the slow backup ended before its lease was seen: ${out} ${err}`);
        await sleep(100);
      }
      const before = await keysUnder(store, BLOBS_PREFIX);

      const during = await cbr(['backup-prune', '--keep-last', '1', '--json'], env);
      assert.equal(during.code, 0, during.err);
      const d = during.json() as unknown as { remove: { id: string }[]; gc: { deleted: number; skipped: string | null }[] };
      assert.deepEqual(
        d.remove.map((b) => b.id),
        [ids['b8']!],
        'the running backup is no candidate: only b8 goes',
      );
      assert.deepEqual(
        d.gc.map((g) => [g.deleted, g.skipped]),
        [[0, 'backup-running']],
      );
      const afterPrune = await keysUnder(store, BLOBS_PREFIX);
      for (const k of before.keys()) assert.ok(afterPrune.has(k), `${k} was not collected under the running backup`);
      assert.equal((await keysUnder(store, PRUNE_PREFIX)).size, 1, 'the journal stays until its host is collected');

      assert.equal(await exited, 0, `${out} ${err}`);
      const slow = await readRecord(store, id);
      for (const b of blobsOf(slow)) assert.ok(await store.head(b), `${b} of the backup that ran during the prune is there`);
      assert.equal(await restoredRows(id, `prune-running-${n}`), rowsSlow, 'the backup that ran during the prune restores');

      const next = await cbr(['backup-prune', '--keep-last', '1', '--json'], env);
      assert.equal(next.code, 0, next.err);
      assert.deepEqual(
        (next.json() as unknown as { remove: { id: string }[] }).remove.map((b) => b.id),
        [ids['b9']!],
      );
      await assertConsistent(store, [id]);
    });
  });
}

describe('backup.prune over the bus (real RabbitMQ, a real node, local storage)', () => {
  const prefix = `prune${process.pid}.`;
  let agent: Agent;
  let env: NodeJS.ProcessEnv;
  let store: ObjectStore;
  let hostId: string;

  before(async () => {
    const root = scratchDir('prune-bus-storage');
    const storage = { driver: 'local' as const, root, container: 'database_backups' };
    env = { ...testEnv, CBR_STORAGE_ROOT: root, CBR_STATE_DB: join(scratchDir('prune-bus-state'), 'state.db') };
    store = openStore(storage);
    const source = await sharedNode('source');
    hostId = source.hostId;
    agent = new Agent({
      url: BUS_URL,
      hostId,
      profilePath: profilePath('source', testEnv),
      storage,
      stateDb: join(scratchDir('prune-bus-agent'), 'state.db'),
      // A pause after each record deleted (abortable): a prune lasts long enough to be refused and cancelled midway, even under load.
      env: { ...testEnv, CBR_DRILL_PRUNE_DELAY_MS: '5000' },
      log: silentLogger,
      prefix,
    });
    await agent.start();
    await agent.waitForConnect();
  });

  after(async () => {
    await agent?.stop().catch(() => {});
    await removeBusTopology(prefix, [hostId]);
  });

  it('the agent prunes its storage: a dry run first, then the run, each answered by a result event', async () => {
    const made: string[] = [];
    for (const name of ['bus-1', 'bus-2', 'bus-3']) {
      const res = await cbr(['backup-create', name, '--config', profilePath('source', testEnv), '--incremental', '--json'], env);
      assert.equal(res.code, 0, res.err);
      made.push(String(res.json()['id']));
    }
    const bus = ['--bus', BUS_URL, '--host', hostId, '--prefix', prefix, '--json'];
    const dry = await cbr(['backup-prune', '--keep-last', '1', '--dry-run', ...bus], env);
    assert.equal(dry.code, 0, dry.err);
    const plan = dry.json() as unknown as { dryRun: boolean; remove: { id: string }[]; keep: { id: string; reasons: string[] }[] };
    assert.equal(plan.dryRun, true);
    assert.deepEqual(
      plan.remove.map((b) => b.id),
      [made[1], made[0]],
    );
    assert.deepEqual(
      plan.keep.map((b) => [b.id, b.reasons]),
      [[made[2], ['last']]],
    );
    assert.equal((await listRecords(store)).length, 3, 'a dry run over the bus deletes nothing');

    const run = await cbr(['backup-prune', '--keep-last', '1', ...bus], env);
    assert.equal(run.code, 0, run.err);
    const done = run.json() as unknown as { dryRun: boolean; gc: { skipped: string | null }[] };
    assert.equal(done.dryRun, false);
    assert.deepEqual(
      done.gc.map((g) => g.skipped),
      [null],
    );
    await assertConsistent(store, [made[2]!]);

    const refused = await cbr(['backup-prune', ...bus], env);
    assert.equal(refused.json().error?.code, 'CBR_ERR_PRUNE_POLICY_INVALID', 'refused before anything is sent');
  });

  it('a prune runs after its ack: a second copy of its command is ignored, a second prune refused; workflow.cancel ends it with CBR_ERR_ABORTED, a rerun finishes it', async () => {
    for (const name of ['long-1', 'long-2', 'long-3', 'long-4']) {
      const res = await cbr(['backup-create', name, '--config', profilePath('source', testEnv), '--incremental', '--json'], env);
      assert.equal(res.code, 0, res.err);
    }
    const before = (await listRecords(store)).map((r) => r.id);
    assert.equal(before.length, 5);
    const events: BusEvent[] = [];
    const watch = await watchEvents({ url: BUS_URL, prefix, host: hostId, resync: false, onEvent: (e) => events.push(e) });
    const until = async <T>(what: string, probe: () => T | undefined): Promise<T> => {
      for (let i = 0; i < 1200; i++) {
        const v = probe();
        if (v !== undefined) return v;
        await sleep(50);
      }
      throw new Error(`timed out waiting for ${what}: ${JSON.stringify(events.map((e) => [e.type, e.workflowId, e.state]))}`);
    };
    const resultOf = (id: string) => events.find((e) => e.type === 'result' && e.workflowId === id);
    try {
      const first = await publishCommand({ url: BUS_URL, prefix, draft: { type: 'backup.prune', host: hostId, payload: { keepLast: 1 } } });
      // Mid-prune: one backup's record is gone (a progress event says so), the pause before its objects runs.
      await until('the first removal', () => events.find((e) => e.type === 'progress' && e.workflowId === first.id));
      const progress = events.find((e) => e.type === 'progress' && e.workflowId === first.id)!;
      assert.deepEqual([progress.kind, progress.step, progress.progress?.files, progress.progress?.totalFiles], ['backup.prune', 'pruning', 1, 4]);
      // The same command again (as a redelivery would bring it): ignored while its prune runs.
      await publishRaw(prefix, hostId, first as unknown as Record<string, unknown>);
      // Another prune of the same store: refused, not run beside it.
      const second = await publishCommand({ url: BUS_URL, prefix, draft: { type: 'backup.prune', host: hostId, payload: { keepLast: 2 } } });
      const refused = await until('the second prune refused', () => resultOf(second.id));
      assert.equal(refused.state, 'failed');
      assert.equal(refused.error?.code, 'CBR_ERR_WORKFLOW_CONFLICT');
      assert.match(refused.error?.message ?? '', new RegExp(`prune ${first.id} is running`));
      assert.equal(resultOf(first.id), undefined, 'the first prune still runs');

      const cancel = await publishCommand({ url: BUS_URL, prefix, draft: { type: 'workflow.cancel', host: hostId, payload: { workflowId: first.id } } });
      const ended = await until('the cancelled prune result', () => resultOf(first.id));
      assert.equal(ended.state, 'failed');
      assert.equal(ended.error?.code, 'CBR_ERR_ABORTED');
      assert.match(ended.error?.message ?? '', new RegExp(`cancelled by command ${cancel.id}`));
      assert.equal((await until('the cancel result', () => resultOf(cancel.id))).state, 'completed');
      // Let the copy of the first command be handled (it comes before the cancel in the queue): still no second run.
      assert.equal(events.filter((e) => e.type === 'result' && e.workflowId === first.id).length, 1, 'one result for the command');
    } finally {
      await watch.close();
    }
    const left = (await listRecords(store)).map((r) => r.id);
    assert.ok(left.length > 1 && left.length < 5, `cut short midway: ${left.length} of 5 records left`);
    assert.equal((await keysUnder(store, PRUNE_PREFIX)).size, 1, "the cancelled prune's journal is there");

    const rerun = await cbr(['backup-prune', '--keep-last', '1', '--bus', BUS_URL, '--host', hostId, '--prefix', prefix, '--json'], env);
    assert.equal(rerun.code, 0, rerun.err);
    const r = rerun.json() as unknown as { resumed: string[]; remove: { id: string }[] };
    assert.ok(r.resumed.length >= 1, 'the rerun finished what the cancelled prune started');
    await assertConsistent(store, [before.at(-1)!]);
  });
});
