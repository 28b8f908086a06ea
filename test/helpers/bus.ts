import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import amqplib from 'amqplib';
import { topology } from '../../src/bus/topology.ts';
import { StateDb, type WorkflowRow } from '../../src/state/stateDb.ts';
import { REPO, scratchDir } from './env.ts';

export const BUS_URL = process.env['CBR_TEST_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

const agentLogs: string[] = [];

/** The end of the agent logs of this test process, for failure messages. */
function agentLogTail(): string {
  const tail = agentLogs.slice(-2).map((f) => {
    try {
      return `\n--- ${f} (last lines)\n${readFileSync(f, 'utf8').split('\n').slice(-25).join('\n')}`;
    } catch {
      return '';
    }
  });
  return tail.join('');
}

/** Runs `cbr agent` as its own process (so it can be killed -9), logging to a file in the scratch area. */
export function spawnAgent(opts: {
  host: string;
  profilePath: string;
  env: NodeJS.ProcessEnv;
  prefix: string;
  stepDelayMs?: number;
  args?: string[];
}): ChildProcess {
  const logFile = join(scratchDir('agent-logs'), `${opts.host}.log`);
  if (!agentLogs.includes(logFile)) agentLogs.push(logFile);
  const log = createWriteStream(logFile, { flags: 'a' });
  const child = spawn(
    join(REPO, 'node_modules', '.bin', 'node'),
    [
      join(REPO, 'bin', 'cbr.js'),
      'agent',
      '--config',
      opts.profilePath,
      '--host',
      opts.host,
      '--bus',
      BUS_URL,
      '--prefix',
      opts.prefix,
      '--step-delay-ms',
      String(opts.stepDelayMs ?? 0),
      ...(opts.args ?? []),
    ],
    { env: { ...opts.env, CBR_LOG_LEVEL: 'info' }, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  // So a failure message shows an agent that died on its own (not killed by the test) and how.
  child.once('close', (code, signal) => log.end(`[test] agent pid ${child.pid} exited: code ${code}, signal ${signal}\n`));
  return child;
}

/** Resolves once the host's queue exists (the agent declares it when it connects). */
export async function waitForAgentQueue(prefix: string, host: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const conn = await amqplib.connect(BUS_URL);
  try {
    for (;;) {
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      try {
        await ch.checkQueue(`${prefix}cbr.host.${host}`);
        await ch.close();
        return;
      } catch {
        if (Date.now() > deadline) throw new Error(`the agent for ${host} never declared its queue`);
        await sleep(100);
      }
    }
  } finally {
    await conn.close();
  }
}

export async function killHard(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

export async function stopGracefully(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill('SIGTERM');
  return exited;
}

/** Publishes a raw command body to a host's queue through the commands exchange. */
export async function publishRaw(prefix: string, host: string, body: Buffer | Record<string, unknown>): Promise<void> {
  const conn = await amqplib.connect(BUS_URL);
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertExchange(`${prefix}cbr.commands`, 'direct', { durable: true });
    const content = Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    ch.publish(`${prefix}cbr.commands`, host, content, { persistent: true });
    await ch.waitForConfirms();
  } finally {
    await conn.close();
  }
}

/** Polls a state database (written by another process) until `match` holds for the workflow. */
export async function waitForWorkflow(dbPath: string, id: string, match: (w: WorkflowRow) => boolean, timeoutMs = 120_000): Promise<WorkflowRow> {
  const deadline = Date.now() + timeoutMs;
  let last: WorkflowRow | undefined;
  let openError = '';
  while (Date.now() < deadline) {
    try {
      const db = new StateDb(dbPath, { readOnly: true });
      try {
        last = db.get(id);
      } finally {
        db.close();
      }
      if (last && match(last)) return last;
    } catch (err) {
      // The database is being created (or busy): keep polling, but say so if it never opens.
      openError = (err as Error).message;
    }
    await sleep(25);
  }
  const why = last ? '' : openError ? `; the database did not open: ${openError}` : '; no such workflow';
  throw new Error(`workflow ${id} did not reach the expected state (last: ${last?.state}/${last?.status}${why})${agentLogTail()}`);
}

/** Removes what a test's agents declared under `prefix`: the dead queue, the hosts' queues, extra queues, every exchange. */
export async function removeBusTopology(prefix: string, hosts: string[], extraQueues: string[] = []): Promise<void> {
  const t = topology(prefix);
  const conn = await amqplib.connect(BUS_URL);
  try {
    const ch = await conn.createChannel();
    for (const q of [t.deadQueue, ...hosts.map((h) => t.hostQueue(h)), ...extraQueues.map((q) => `${prefix}${q}`)]) await ch.deleteQueue(q).catch(() => {});
    for (const x of [t.commands, t.events, t.deadLetter, t.status]) await ch.deleteExchange(x).catch(() => {});
  } finally {
    await conn.close();
  }
}
