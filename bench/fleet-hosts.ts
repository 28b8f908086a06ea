// The fake fleet of `npm run bench:fleet` in its own process (test/fixtures/fakeFleet.ts), so the hosts' CPU and
// memory are measured apart from the coordinator's. Driven over IPC: {hosts, prefix, cluster, queueType} in,
// 'ready' with the queue creation time out; 'stop' deletes the queues and answers with the counts and usage.
import { FakeFleet } from '../test/fixtures/fakeFleet.ts';

interface Start {
  url: string;
  prefix: string;
  hosts: string[];
  cluster: string;
  queueType: 'quorum' | 'classic';
}

let fleet: FakeFleet | null = null;
let stopped = false;
// The bench died or was interrupted: the queues go anyway.
process.on('disconnect', async () => {
  if (!stopped) await fleet?.stop(true).catch(() => {});
  process.exit(0);
});
let cpu0 = process.cpuUsage();
process.on('message', async (m: { op: 'start'; start: Start } | { op: 'stop' } | { op: 'mark' } | { op: 'sample'; start: Start }) => {
  if (m.op === 'sample') {
    // The cost of the agent's own (quorum) host queues, on a sample of the fleet: declare + bind, then delete.
    const sample = new FakeFleet({ ...m.start, queueType: 'quorum' });
    await sample.start();
    const { deleteSeconds } = await sample.stop(true);
    process.send?.({ op: 'sampled', queueSeconds: sample.stats.queueSeconds, deleteSeconds });
  } else if (m.op === 'start') {
    fleet = new FakeFleet({ ...m.start });
    await fleet.start();
    process.send?.({ op: 'ready', queueSeconds: fleet.stats.queueSeconds, rssMiB: process.memoryUsage().rss / 2 ** 20 });
  } else if (m.op === 'mark') {
    cpu0 = process.cpuUsage();
    process.send?.({ op: 'marked' });
  } else if (m.op === 'stop') {
    stopped = true;
    const cpu = process.cpuUsage(cpu0);
    const stats = fleet?.stats;
    const rssMiB = process.memoryUsage().rss / 2 ** 20;
    const peakRssMiB = process.resourceUsage().maxRSS / 1024;
    const { deleteSeconds } = (await fleet?.stop(true)) ?? { deleteSeconds: 0 };
    process.send?.({ op: 'stopped', stats, deleteSeconds, cpuSeconds: (cpu.user + cpu.system) / 1e6, rssMiB, peakRssMiB }, () => process.exit(0));
  }
});
