// npm run bench:fleet — a cluster backup fanned out to 1,000 fake hosts on the local RabbitMQ (issue 15, item 6).
// The hosts (test/fixtures/fakeFleet.ts) run in one child process on one connection: each has its own host queue
// and speaks the host side of the protocol (status reply with its cluster, backup.create with hold -> holding,
// backup.release -> upload events and a result). The coordinator side is a fan-out driver that follows the
// protocol step by step: resolve the hosts by a status broadcast, backup.create (id = part id, clusterBackupId, hold)
// to each, a barrier until every host holds, backup.release with a cluster-wide concurrency limit, every result.
// Measured from a tap on the commands and events exchanges: command-to-first-event per host (first event received
// minus the command's issuedAt), total time, events/s, lost or duplicated workflows, and each process's CPU and RSS.
import { fork } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import amqplib, { type ConsumeMessage } from 'amqplib';
import type { BusEvent } from '../src/bus/schemas/events.ts';
import { topology } from '../src/bus/topology.ts';
import { partId } from '../src/catalog/clusterRecord.ts';
import { BENCH_DIR, NODE, table } from './lib.ts';

const URL = process.env['CBR_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const HOSTS = Number(process.env['CBR_BENCH_FLEET_HOSTS'] ?? 1000);
const CONCURRENCY = Number(process.env['CBR_BENCH_FLEET_CONCURRENCY'] ?? 100);
// Classic host queues for the fake fleet: on this machine a quorum queue took 20 ms to 2 s to declare (a Raft group
// each, its log synced), so 1,000 of them dominated the run; their cost is measured on a sample instead.
/** `coordinator`: the coordinator's real steps drive the fleet; `protocol`: the bench's own fan-out driver. */
const DRIVER = process.env['CBR_BENCH_FLEET_DRIVER'] ?? 'coordinator';
const QUEUE_TYPE = (process.env['CBR_BENCH_FLEET_QUEUES'] ?? 'classic') as 'quorum' | 'classic';
const QUORUM_SAMPLE = Number(process.env['CBR_BENCH_FLEET_QUORUM_SAMPLE'] ?? 100);
const run = randomUUID().slice(0, 8);
const prefix = `fleet${run}.`;
const t = topology(prefix);
const cluster = `Fleet ${run}`;
const clusterId = `fleet${run}`;
// Host names sort in host order, so the n-th host's part is <cluster id>-<n>.
const hosts = Array.from({ length: HOSTS }, (_, i) => `fake-${String(i).padStart(4, '0')}`);

type Msg = { op: string; [k: string]: unknown };
const child = fork(join(import.meta.dirname, 'fleet-hosts.ts'), [], { execPath: NODE, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
const replies: Msg[] = [];
const waiters: ((m: Msg) => void)[] = [];
child.on('message', (m: Msg) => {
  const w = waiters.shift();
  if (w) w(m);
  else replies.push(m);
});
const ask = (m: Msg): Promise<Msg> =>
  new Promise((resolve) => {
    waiters.push(resolve);
    child.send(m);
  });

const sample =
  QUORUM_SAMPLE > 0
    ? await ask({ op: 'sample', start: { url: URL, prefix: `${prefix}q.`, hosts: hosts.slice(0, QUORUM_SAMPLE), cluster, queueType: 'quorum' } })
    : null;
if (sample)
  process.stdout.write(
    `${QUORUM_SAMPLE} quorum host queues: declared and bound in ${Number(sample['queueSeconds']).toFixed(1)} s, deleted in ${Number(sample['deleteSeconds']).toFixed(1)} s\n`,
  );
const ready = await ask({ op: 'start', start: { url: URL, prefix, hosts, cluster, queueType: QUEUE_TYPE } });
const queueSeconds = Number(ready['queueSeconds']);
process.stdout.write(`${HOSTS} ${QUEUE_TYPE} host queues declared and bound in ${queueSeconds.toFixed(1)} s\n`);

// The tap: every event, and every command to a host (for its issuedAt), on queues of this process.
const conn = await amqplib.connect(URL);
const tap = await conn.createChannel();
const { queue: eventsQ } = await tap.assertQueue('', { exclusive: true });
await tap.bindQueue(eventsQ, t.events, '#');
const { queue: commandsQ } = await tap.assertQueue('', { exclusive: true });
for (const h of hosts) await tap.bindQueue(commandsQ, t.commands, h);

interface Part {
  host: string;
  id: string;
  issuedAt: number;
  firstEventAt: number;
  states: string[];
  results: number;
  releasedAt: number;
}
const parts = new Map<string, Part>(
  hosts.map((h, i) => [h, { host: h, id: partId(clusterId, i), issuedAt: 0, firstEventAt: 0, states: [], results: 0, releasedAt: 0 }]),
);
const workflowsByHost = new Map<string, Set<string>>();
const eventIds = new Set<string>();
let duplicateEvents = 0;
let events = 0;
let firstCommandAt = 0;
let lastEventAt = 0;
const onHolding = new Set<string>();
let wake: (() => void) | null = null;
const nudge = () => {
  const w = wake;
  wake = null;
  w?.();
};
const until = async (done: () => boolean, what: string, ms = 120_000) => {
  const deadline = Date.now() + ms;
  while (!done()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise<void>((r) => {
      wake = r;
      setTimeout(r, 200);
    });
  }
};

await tap.consume(
  commandsQ,
  (m: ConsumeMessage | null) => {
    if (!m) return;
    const c = JSON.parse(m.content.toString()) as { type: string; host: string; id: string; issuedAt: string };
    const p = parts.get(c.host);
    if (c.type === 'backup.create' && p && !p.issuedAt) {
      p.issuedAt = Date.parse(c.issuedAt);
      if (!firstCommandAt || p.issuedAt < firstCommandAt) firstCommandAt = p.issuedAt;
    }
  },
  { noAck: true },
);
await tap.consume(
  eventsQ,
  (m: ConsumeMessage | null) => {
    if (!m) return;
    const now = Date.now();
    const e = JSON.parse(m.content.toString()) as BusEvent;
    events++;
    lastEventAt = now;
    if (e.eventId) {
      if (eventIds.has(e.eventId)) duplicateEvents++;
      eventIds.add(e.eventId);
    }
    if (e.kind !== 'backup') return;
    const ws = workflowsByHost.get(e.host) ?? new Set<string>();
    workflowsByHost.set(e.host, ws);
    ws.add(e.workflowId);
    const p = parts.get(e.host);
    if (!p || p.id !== e.workflowId) return;
    if (!p.firstEventAt) p.firstEventAt = now;
    if (e.type === 'state') {
      p.states.push(e.state);
      if (e.state === 'holding') onHolding.add(e.host);
    }
    if (e.type === 'result') p.results++;
    nudge();
  },
  { noAck: true },
);

// The coordinator: this fan-out driver, step by step as the protocol says.
const cpu0 = process.cpuUsage();
await ask({ op: 'mark' });
const pub = await conn.createConfirmChannel();
const command = (type: string, host: string, id: string, payload: Record<string, unknown>) =>
  pub.publish(t.commands, host, Buffer.from(JSON.stringify({ version: 1, id, type, host, issuedAt: new Date().toISOString(), payload })), {
    persistent: true,
    mandatory: true,
  });
let unroutable = 0;
pub.on('return', () => unroutable++);

const t0 = Date.now();
// 1. Resolve: a status query to every agent; keep those answering with this cluster's name.
const rq = await conn.createChannel();
const { queue: replyQ } = await rq.assertQueue('', { exclusive: true });
const members = new Set<string>();
await rq.consume(
  replyQ,
  (m) => {
    if (!m) return;
    const r = JSON.parse(m.content.toString()) as { host: string; cluster?: string };
    if (r.cluster === cluster) members.add(r.host);
    nudge();
  },
  { noAck: true },
);
const queryId = randomUUID();
rq.publish(
  t.status,
  '',
  Buffer.from(JSON.stringify({ version: 1, id: queryId, type: 'status.query', host: '*', issuedAt: new Date().toISOString(), payload: { limit: 1 } })),
  {
    replyTo: replyQ,
    correlationId: queryId,
  },
);
await until(() => members.size >= HOSTS, 'the status replies');
const resolvedAt = Date.now();
const sorted = [...members].sort();

let sentAt: number;
let heldAt: number;
let coordinatorFailed = 0;
if (DRIVER === 'coordinator') {
  // 2-4 by the coordinator's own steps (src/steps/cluster), over its own AMQP HostBus, as the agent runs them; only
  // the CQL session (the cluster record's ring and schema) is absent: this bench stops before the record.
  const { applyOutcomes } = await import('../src/machines/clusterBackup.machine.ts');
  const { startHostBackups } = await import('../src/steps/cluster/startHostBackups.ts');
  const { awaitSnapshots } = await import('../src/steps/cluster/awaitSnapshots.ts');
  const { uploadHosts } = await import('../src/steps/cluster/uploadHosts.ts');
  const { openHostBus } = await import('../src/bus/hostBus.ts');
  const { openStore } = await import('../src/storage/open.ts');
  const { silentLogger } = await import('../src/core/log.ts');
  const root = mkdtempSync(join(tmpdir(), 'cbr-fleet-'));
  const deps = {
    bus: () => openHostBus({ url: URL, prefix }),
    store: openStore({ driver: 'local', root, container: 'c' }),
    cql: async () => {
      throw new Error('the fleet bench has no CQL node');
    },
    log: silentLogger,
    pollMs: 200,
    barrierTimeoutMs: 600_000,
    abortTimeoutMs: 60_000,
  };
  const ctx = {
    workflowId: clusterId,
    backupId: clusterId,
    name: 'fleet',
    description: '',
    cluster,
    hosts: sorted,
    strategy: 'full' as const,
    concurrency: CONCURRENCY,
    startedAt: new Date().toISOString(),
  };
  const signal = new AbortController().signal;
  let state = sorted.map((host) => ({ host, phase: 'pending' as const, error: null }) as Parameters<typeof applyOutcomes>[0][number]);
  state = applyOutcomes(state, await startHostBackups(deps as never, { ctx, parts: state }, signal), 'started');
  sentAt = Date.now();
  state = applyOutcomes(state, await awaitSnapshots(deps as never, { ctx, parts: state }, signal), 'snapshotted');
  heldAt = Date.now();
  state = applyOutcomes(state, await uploadHosts(deps as never, { ctx, parts: state }, signal), 'uploaded');
  coordinatorFailed = state.filter((p) => p.phase === 'failed').length;
  rmSync(root, { recursive: true, force: true });
} else {
  // 2. backup.create with hold to every host (command id = the part id).
  for (const [i, h] of sorted.entries()) command('backup.create', h, partId(clusterId, i), { name: 'fleet', clusterBackupId: clusterId, hold: true });
  await pub.waitForConfirms();
  sentAt = Date.now();

  // 3. The barrier: every host holding its snapshot.
  await until(() => onHolding.size >= HOSTS, 'every host holding');
  heldAt = Date.now();

  // 4. Release the uploads, at most CONCURRENCY hosts at once, and wait for every result.
  let next = 0;
  const inFlight = () => [...parts.values()].filter((p) => p.releasedAt && !p.results).length;
  while (next < sorted.length || [...parts.values()].some((p) => !p.results)) {
    while (next < sorted.length && inFlight() < CONCURRENCY) {
      const host = sorted[next]!;
      const p = parts.get(host)!;
      p.releasedAt = Date.now();
      command('backup.release', host, `${p.id}-r`, { backupId: p.id });
      next++;
    }
    const allDone = () => [...parts.values()].every((p) => p.results > 0);
    await until(() => (next < sorted.length && inFlight() < CONCURRENCY) || allDone(), 'the uploads');
  }
}
const doneAt = Date.now();
await new Promise((r) => setTimeout(r, 1000)); // late duplicates would land here
const cpu = process.cpuUsage(cpu0);
const driverRss = process.resourceUsage().maxRSS / 1024;

const fleet = await ask({ op: 'stop' });
child.disconnect();
await conn.close();

// Results.
const all = [...parts.values()];
const lat = all
  .filter((p) => p.issuedAt && p.firstEventAt)
  .map((p) => p.firstEventAt - p.issuedAt)
  .sort((a, b) => a - b);
const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] ?? Number.NaN;
const lost = all.filter((p) => p.results === 0).length;
const duplicatedResults = all.filter((p) => p.results > 1).length;
const extraWorkflows = [...workflowsByHost.values()].filter((s) => s.size !== 1).length;
const notHeld = all.filter((p) => !p.states.includes('holding') || p.states.indexOf('holding') > p.states.indexOf('streaming')).length;
const seconds = (doneAt - t0) / 1000;
const eventSeconds = (lastEventAt - firstCommandAt) / 1000;
const stats = fleet['stats'] as { eventsPublished: number; commands: number; duplicateCommands: number };
const date = new Date().toISOString().slice(0, 16).replace('T', ' ');
const report = `### Fleet benchmark (${date} UTC, 2 cores, local RabbitMQ 3.10)

A cluster backup fanned out to ${HOSTS} fake hosts (one child process, one connection, ${Math.ceil(HOSTS / 100)} consuming channels,
a ${QUEUE_TYPE} host queue each) ${DRIVER === 'coordinator' ? "by the coordinator's own steps and HostBus (startHostBackups, awaitSnapshots, uploadHosts; the bench's status broadcast resolves the hosts; no cluster record: no CQL node)" : "by the protocol's fan-out driver"} (status broadcast, backup.create with hold, barrier,
backup.release at most ${CONCURRENCY} hosts at once).

${table(
  ['measure', 'value'],
  [
    ['hosts resolved by one status broadcast', `${members.size} of ${HOSTS} in ${((resolvedAt - t0) / 1000).toFixed(2)} s`],
    ['command to first event, p50 / p99 / max', `${q(50)} / ${q(99)} / ${lat.at(-1)} ms (${lat.length} hosts)`],
    [`backup.create to all ${HOSTS}: published and confirmed`, `${((sentAt - resolvedAt) / 1000).toFixed(2)} s`],
    ['barrier: every host holding, from the first command', `${((heldAt - resolvedAt) / 1000).toFixed(2)} s`],
    ['uploads released to the last result', `${((doneAt - heldAt) / 1000).toFixed(2)} s`],
    ['total (status query to the last result)', `${seconds.toFixed(2)} s`],
    ['events received / duplicates (same eventId)', `${events} / ${duplicateEvents}`],
    ['events/s (first command to last event)', (events / eventSeconds).toFixed(0)],
    ['workflows: lost (no result) / duplicated results / hosts with other than one workflow', `${lost} / ${duplicatedResults} / ${extraWorkflows}`],
    ...(DRIVER === 'coordinator' ? [['hosts the coordinator failed', String(coordinatorFailed)]] : []),
    ['hosts that uploaded before holding', String(notHeld)],
    ['commands the hosts received (dedupe hits) / unroutable', `${stats.commands} (${stats.duplicateCommands}) / ${unroutable}`],
    [`${HOSTS} ${QUEUE_TYPE} host queues: declare + bind / delete`, `${queueSeconds.toFixed(1)} s / ${Number(fleet['deleteSeconds']).toFixed(1)} s`],
    ...(sample
      ? [
          [
            `${QUORUM_SAMPLE} quorum host queues (the agent's kind): declare + bind / delete`,
            `${Number(sample['queueSeconds']).toFixed(1)} s / ${Number(sample['deleteSeconds']).toFixed(1)} s`,
          ],
        ]
      : []),
    [
      'fake fleet process: CPU / RSS (peak)',
      `${Number(fleet['cpuSeconds']).toFixed(2)} s / ${Number(fleet['rssMiB']).toFixed(0)} MiB (${Number(fleet['peakRssMiB']).toFixed(0)})`,
    ],
    ['driver + tap process: CPU / peak RSS', `${((cpu.user + cpu.system) / 1e6).toFixed(2)} s / ${driverRss.toFixed(0)} MiB`],
  ],
)}
`;
mkdirSync(BENCH_DIR, { recursive: true });
writeFileSync(join(BENCH_DIR, 'fleet.md'), report);
process.stdout.write(report);
process.exit(lost === 0 && coordinatorFailed === 0 && duplicatedResults === 0 && extraWorkflows === 0 && notHeld === 0 ? 0 : 1);
