import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { silentLogger } from '../../../../src/core/log.ts';
import type { ClusterBackupInput, HostPart } from '../../../../src/machines/clusterBackup.machine.ts';
import { awaitSnapshots } from '../../../../src/steps/cluster/awaitSnapshots.ts';
import type { ClusterDeps, HostBus, HostReply } from '../../../../src/steps/cluster/deps.ts';
import { uploadHosts } from '../../../../src/steps/cluster/uploadHosts.ts';

const ctx: ClusterBackupInput = {
  workflowId: 'cb',
  backupId: 'cb',
  name: 'n',
  description: '',
  cluster: 'ring',
  hosts: null,
  strategy: 'full',
  concurrency: 2,
  startedAt: new Date().toISOString(),
};

/**
 * Fake hosts behind the HostBus port: each part holds until released, then uploads for `ticks` status answers and
 * completes (or fails, for the hosts in `failing`). Records the most parts uploading at once.
 */
function fakeHosts(hosts: string[], opts: { failing?: string[]; ticks?: number; lose?: number; holdMs?: number } = {}) {
  let lose = opts.lose ?? 0;
  const state = new Map(hosts.map((h, i) => [h, { id: `cb-${i + 1}`, state: 'holding', left: opts.ticks ?? 2, held: 0, since: Date.now() }]));
  /** With holdMs, a part holding longer than that without a release or a keepalive fails by itself (its hold timeout). */
  const expire = () => {
    if (opts.holdMs === undefined) return;
    for (const s of state.values()) if (s.state === 'holding' && Date.now() - s.since > opts.holdMs) s.state = 'failed';
  };
  const log: string[] = [];
  let peak = 0;
  const bus: HostBus = {
    async send(host, type, payload) {
      log.push(`${type} ${host}`);
      const s = state.get(host)!;
      if (type === 'backup.release' && lose > 0) {
        lose--; // confirmed by the broker, never acted on (an agent restarting)
        return 'x';
      }
      expire();
      if (type === 'backup.release' && s.state === 'holding' && payload['backupId'] === s.id) s.state = 'streaming';
      if (type === 'backup.hold' && s.state === 'holding' && payload['backupId'] === s.id) s.since = Date.now();
      return 'x';
    },
    async ask(host, workflowId): Promise<HostReply | null> {
      expire();
      const s = state.get(host)!;
      // The hold timeout, in status answers: a part never released fails by itself.
      if (s.state === 'holding' && ++s.held > 50) s.state = 'failed';
      if (s.state === 'streaming' && --s.left <= 0) s.state = opts.failing?.includes(host) ? 'failed' : 'completed';
      peak = Math.max(peak, [...state.values()].filter((x) => x.state === 'streaming').length);
      if (workflowId !== s.id) return { host, workflows: [] };
      const done = s.state === 'completed' || s.state === 'failed';
      const error = s.state === 'failed' ? { code: 'CBR_ERR_STORAGE_FAILED' as const, message: 'disk full', retryable: true } : null;
      return {
        host,
        workflows: [
          {
            workflowId: s.id,
            kind: 'backup',
            state: s.state,
            status: done ? 'done' : 'active',
            error,
            result: { objectKey: `${s.id}/a`, size: 1, rawBytes: 2, files: 3 },
          },
        ],
      };
    },
    async everyone() {
      return [];
    },
    async close() {},
  };
  const deps: ClusterDeps = {
    bus: async () => bus,
    store: null as never,
    cql: null as never,
    log: silentLogger,
    pollMs: 1,
    barrierTimeoutMs: 60_000,
    abortTimeoutMs: 60_000,
  };
  return { deps, log, state, peak: () => peak };
}

const parts = (hosts: string[], phase: HostPart['phase']): HostPart[] => hosts.map((host) => ({ host, phase, error: null }));
const HOSTS = ['h1', 'h2', 'h3', 'h4', 'h5'];

describe('cluster steps over a fake HostBus', () => {
  it('the barrier lets every host through once each holds its snapshot', async () => {
    const f = fakeHosts(HOSTS);
    const out = await awaitSnapshots(f.deps, { ctx, parts: parts(HOSTS, 'started') }, new AbortController().signal);
    assert.deepEqual(
      out.map((o) => [o.host, o.ok]),
      HOSTS.map((h) => [h, true]),
    );
  });

  it('uploadHosts releases at most `concurrency` hosts at once and reports each upload', async () => {
    const f = fakeHosts(HOSTS, { ticks: 3 });
    const out = await uploadHosts(f.deps, { ctx, parts: parts(HOSTS, 'snapshotted') }, new AbortController().signal);
    assert.deepEqual(
      out.map((o) => [o.host, o.ok]),
      HOSTS.map((h) => [h, true]),
    );
    assert.equal(f.log.filter((l) => l.startsWith('backup.release')).length, 5, 'each host released once');
    assert.ok(f.peak() <= 2, `at most 2 uploading at once, saw ${f.peak()}`);
    assert.ok(f.peak() >= 1);
    assert.deepEqual((out[0] as { upload?: unknown }).upload, { objectKey: 'cb-1/a', size: 1, rawBytes: 2, files: 3 });
  });

  it('parts queued for an upload slot are kept holding (backup.hold) past their hold timeout', async () => {
    // 4 hosts one at a time, each upload ~30 polls of 10 ms: the last waits ~1 s, its hold is 600 ms.
    const run = async (keepaliveMs: number) => {
      const f = fakeHosts(['h1', 'h2', 'h3', 'h4'], { ticks: 30, holdMs: 600 });
      const deps = { ...f.deps, pollMs: 10, holdKeepaliveMs: keepaliveMs };
      const out = await uploadHosts(
        deps,
        { ctx: { ...ctx, concurrency: 1 }, parts: parts(['h1', 'h2', 'h3', 'h4'], 'snapshotted') },
        new AbortController().signal,
      );
      return { out: out.map((o) => o.ok), holds: f.log.filter((l) => l.startsWith('backup.hold')).length };
    };
    const kept = await run(100);
    assert.deepEqual(kept.out, [true, true, true, true]);
    assert.ok(kept.holds > 0);
    const without = await run(60_000);
    assert.equal(without.holds, 0);
    assert.ok(without.out.includes(false), 'without the keepalive a queued part runs out of hold');
  });

  it('a release that is lost is sent again while the part still holds', async () => {
    const f = fakeHosts(['h1'], { lose: 1 });
    const out = await uploadHosts(f.deps, { ctx, parts: parts(['h1'], 'snapshotted') }, new AbortController().signal);
    assert.deepEqual(out[0]?.ok, true);
    assert.equal(f.log.filter((l) => l === 'backup.release h1').length, 2);
  });

  it('the first host to fail stops the releases: the held hosts are kept as they are, for the abort', async () => {
    const f = fakeHosts(HOSTS, { failing: ['h1'], ticks: 2 });
    const out = await uploadHosts(f.deps, { ctx: { ...ctx, concurrency: 1 }, parts: parts(HOSTS, 'snapshotted') }, new AbortController().signal);
    assert.deepEqual(out[0], { host: 'h1', ok: false, error: { code: 'CBR_ERR_STORAGE_FAILED', message: 'disk full', retryable: true } });
    assert.deepEqual(
      out.slice(1).map((o) => [o.host, o.ok, 'keep' in o && o.keep]),
      HOSTS.slice(1).map((h) => [h, true, true]),
    );
    assert.deepEqual(f.log, ['backup.release h1'], 'no other host was released');
    assert.equal(f.state.get('h2')?.state, 'holding');
  });
});
