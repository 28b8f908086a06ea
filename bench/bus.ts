// npm run bench:bus — persist + publish overhead per step, and a fleet of 50 agents in one process against the
// local RabbitMQ with fake nodes (instant steps), 10 backups each: none lost, none duplicated, events/s.
import { randomUUID } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import amqplib, { type ConsumeMessage } from 'amqplib';
import { Agent } from '../src/bus/agent.ts';
import type { BusEvent } from '../src/bus/schemas/events.ts';
import { silentLogger } from '../src/core/log.ts';
import { StateDb } from '../src/state/stateDb.ts';
import { instantSteps as steps } from '../test/fixtures/steps.ts';
import { BENCH_DIR, table } from './lib.ts';

const URL = process.env['CBR_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
const AGENTS = Number(process.env['CBR_BENCH_AGENTS'] ?? 50);
const PER_AGENT = Number(process.env['CBR_BENCH_WORKFLOWS'] ?? 10);
const prefix = `bench${process.pid}.`;
const dir = join(BENCH_DIR, 'bus');
rmSync(dir, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });

const agents: Agent[] = [];
for (let i = 0; i < AGENTS; i++) {
  const a = new Agent({
    url: URL,
    hostId: `fake-${i}`,
    profilePath: '/nonexistent/profile.json',
    storage: { driver: 'local', root: dir, container: 'unused' },
    stateDb: join(dir, `agent-${i}.db`),
    env: process.env,
    log: silentLogger,
    prefix,
    steps,
  });
  await a.start();
  agents.push(a);
}
for (const a of agents) await a.waitForConnect();

// One subscriber for all events: latency from the event's timestamp (taken as it is persisted) to arrival.
const conn = await amqplib.connect(URL);
const ch = await conn.createChannel();
const { queue } = await ch.assertQueue('', { exclusive: true });
await ch.bindQueue(queue, `${prefix}cbr.events`, '#');
const seen = new Set<string>();
const latencies: number[] = [];
const results = new Map<string, number>();
let duplicates = 0;
let events = 0;
let lastEventAt = 0;
await ch.consume(
  queue,
  (m: ConsumeMessage | null) => {
    if (!m) return;
    const e = JSON.parse(m.content.toString()) as BusEvent;
    if (seen.has(e.eventId!)) duplicates++;
    seen.add(e.eventId!);
    events++;
    lastEventAt = Date.now();
    if (e.type === 'state') latencies.push(Date.now() - Date.parse(e.at));
    if (e.type === 'result') results.set(e.workflowId, (results.get(e.workflowId) ?? 0) + 1);
  },
  { noAck: true },
);

const pub = await conn.createConfirmChannel();

// Phase 1, per-step overhead: one agent, one workflow at a time. Persist = StateDb.save (snapshot + transition
// row, synchronous SQLite); persist + publish = transition persisted -> event received by a subscriber.
const saveTimes: number[] = [];
const save = StateDb.prototype.save;
StateDb.prototype.save = function (this: StateDb, ...args: Parameters<typeof save>) {
  const t = process.hrtime.bigint();
  try {
    return save.apply(this, args);
  } finally {
    saveTimes.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
};
const SEQUENTIAL = 50;
for (let j = 0; j < SEQUENTIAL; j++) {
  const id = randomUUID();
  const command = { version: 1, id, type: 'backup.create', host: 'fake-0', issuedAt: new Date().toISOString(), payload: { name: `seq${j}` } };
  pub.publish(`${prefix}cbr.commands`, 'fake-0', Buffer.from(JSON.stringify(command)), { persistent: true });
  await pub.waitForConfirms();
  while (!results.has(id)) await new Promise((r) => setTimeout(r, 2));
}
StateDb.prototype.save = save;
const seqLatencies = [...latencies].sort((a, b) => a - b);
latencies.length = 0;
saveTimes.sort((a, b) => a - b);
const q = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] ?? Number.NaN;
results.clear();

// Phase 2, the fleet: every agent gets its commands at once.
const t0 = Date.now();
const ids: string[] = [];
for (let i = 0; i < AGENTS; i++) {
  for (let j = 0; j < PER_AGENT; j++) {
    const id = randomUUID();
    ids.push(id);
    const command = { version: 1, id, type: 'backup.create', host: `fake-${i}`, issuedAt: new Date().toISOString(), payload: { name: `b${j}` } };
    pub.publish(`${prefix}cbr.commands`, `fake-${i}`, Buffer.from(JSON.stringify(command)), { persistent: true });
  }
}
await pub.waitForConfirms();
const deadline = Date.now() + 300_000;
while (results.size < ids.length && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
const seconds = (lastEventAt - t0) / 1000;
for (const a of agents) await a.stop();
for (let i = 0; i < AGENTS; i++) await ch.deleteQueue(`${prefix}cbr.host.fake-${i}`);
await ch.deleteQueue(`${prefix}cbr.dead`);
for (const x of ['cbr.commands', 'cbr.events', 'cbr.dead-letter']) await ch.deleteExchange(`${prefix}${x}`);
await conn.close();

latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? Number.NaN;
const lost = ids.filter((id) => !results.has(id)).length;
const dupResults = [...results.values()].filter((n) => n > 1).length;
const report = `## Bus benchmark (${new Date().toISOString().slice(0, 10)}, 2 cores, local RabbitMQ 3.10)

Per-step overhead, one agent running ${SEQUENTIAL} workflows one after another with fake nodes (instant steps):

${table(
  ['per step', 'median', 'p99'],
  [
    ['persist (snapshot + transition, SQLite WAL)', `${q(saveTimes, 50).toFixed(2)} ms`, `${q(saveTimes, 99).toFixed(2)} ms`],
    ['persist + outbox + publish with confirm + delivery', `${q(seqLatencies, 50)} ms`, `${q(seqLatencies, 99)} ms`],
  ],
)}

Fleet: ${AGENTS} agents in one process, fake nodes, ${PER_AGENT} backups each, ${ids.length} workflows published at once.

${table(
  ['measure', 'value'],
  [
    ['workflows completed', `${results.size} of ${ids.length}`],
    ['lost (no result)', String(lost)],
    ['duplicated results', String(dupResults)],
    ['duplicate events (same eventId)', String(duplicates)],
    ['events delivered', String(events)],
    ['wall time', `${seconds.toFixed(1)} s`],
    ['events/s', (events / seconds).toFixed(0)],
    ['fleet: state-event latency median (queueing under the burst)', `${pct(50)} ms`],
    ['fleet: state-event latency p99', `${pct(99)} ms`],
  ],
)}
`;
writeFileSync(join(BENCH_DIR, 'bus.md'), report);
process.stdout.write(report);
process.exit(lost === 0 && dupResults === 0 ? 0 : 1);
