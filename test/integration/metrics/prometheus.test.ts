import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { copyFileSync, createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { freeLoopbackPorts } from '../../../src/cassandra/ports.ts';
import { loadProfile } from '../../../src/cassandra/profile.ts';
import type { BackupOutput } from '../../../src/machines/backup.machine.ts';
import { parseExposition } from '../../../src/metrics/textfile.ts';
import { outputOf } from '../../../src/runtime/runtime.ts';
import { profilePath } from '../../../src/sandbox/sandbox.ts';
import { publishRaw, removeBusTopology, spawnAgent, stopGracefully, waitForAgentQueue, waitForWorkflow } from '../../helpers/bus.ts';
import { cbr } from '../../helpers/cli.ts';
import { REPO, scratchDir, sharedNode, testEnv } from '../../helpers/env.ts';
import { validCommand } from '../../helpers/malformed.ts';
import { provision } from '../../helpers/provision.ts';

const RULES = join(REPO, 'deploy', 'prometheus', 'cbr-alerts.yml');
const RULE_TESTS = join(REPO, 'deploy', 'prometheus', 'cbr-alerts.test.yml');

/** promtool and prometheus from Debian's package (deploy/prometheus/ensure.sh); the reason when they cannot be had. */
function prometheusMissing(): string | null {
  try {
    provision('prometheus/ensure.sh');
    return null;
  } catch (err) {
    return `Debian's prometheus package cannot be installed here, so promtool and prometheus are missing: ${(err as Error).message}`;
  }
}
const missing = prometheusMissing();

function promtool(args: string[], cwd?: string): { code: number | null; out: string } {
  const r = spawnSync('promtool', args, { encoding: 'utf8', ...(cwd ? { cwd } : {}) });
  return { code: r.status, out: `${r.stdout}${r.stderr}` };
}

const freePort = async (): Promise<number> => (await freeLoopbackPorts(1))[0]!;

describe('alert rules (promtool)', { skip: missing ?? false }, () => {
  it('check rules: every rule parses', () => {
    const r = promtool(['check', 'rules', RULES]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS: 7 rules found/);
    const c = promtool(['check', 'config', join(REPO, 'deploy', 'prometheus', 'prometheus.example.yml')]);
    assert.equal(c.code, 0, c.out);
  });

  it('test rules: the unit tests pass, and fail when a threshold moves', () => {
    const r = promtool(['test', 'rules', RULE_TESTS]);
    assert.equal(r.code, 0, r.out);
    assert.match(r.out, /SUCCESS/);
    // The same tests against rules whose margin is a day longer: they must notice.
    const dir = scratchDir('promtool-mutant');
    copyFileSync(RULE_TESTS, join(dir, 'cbr-alerts.test.yml'));
    writeFileSync(join(dir, 'cbr-alerts.yml'), readFileSync(RULES, 'utf8').replaceAll('26 * 3600', '50 * 3600'));
    const m = promtool(['test', 'rules', 'cbr-alerts.test.yml'], dir);
    assert.notEqual(m.code, 0, m.out);
    assert.match(m.out, /CbrBackupOverdue/);
  });
});

describe('a real Prometheus scrapes a real agent', { skip: missing ?? false }, () => {
  const prefix = `m${process.pid}.`;
  const host = 'metrics-src';
  let agentPort: number;
  let promPort: number;
  let env: NodeJS.ProcessEnv;
  let stateDb: string;
  let agent: ChildProcess | null = null;
  let prometheus: ChildProcess | null = null;

  const startAgent = () => spawnAgent({ host, profilePath: profilePath('source', testEnv), env, prefix, args: ['--metrics-listen', `127.0.0.1:${agentPort}`] });

  /** Polls Prometheus's query API until `accept` holds for the result (Prometheus scrapes every second). */
  async function query(expr: string, accept: (r: { metric: Record<string, string>; value: [number, string] }[]) => boolean) {
    const deadline = Date.now() + 60_000;
    let last: unknown = null;
    while (Date.now() < deadline) {
      const res = await fetch(`http://127.0.0.1:${promPort}/api/v1/query?query=${encodeURIComponent(expr)}`).catch(() => null);
      if (res?.ok) {
        const body = (await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
        last = body.data.result;
        if (accept(body.data.result)) return body.data.result;
      }
      await sleep(250);
    }
    throw new Error(`Prometheus never answered ${expr} as expected; last: ${JSON.stringify(last)}`);
  }
  const one = async (expr: string, accept: (v: number) => boolean = () => true) =>
    Number((await query(expr, (r) => r.length === 1 && accept(Number(r[0]?.value[1]))))[0]?.value[1]);

  before(async () => {
    await sharedNode('source');
    const dir = scratchDir('metrics');
    stateDb = join(dir, 'state.db');
    env = { ...testEnv, CBR_STORAGE_ROOT: join(dir, 'storage'), CBR_STATE_DB: stateDb };
    agentPort = await freePort();
    promPort = await freePort();
    const config = join(dir, 'prometheus.yml');
    writeFileSync(
      config,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        `rule_files: [${JSON.stringify(RULES)}]`,
        'scrape_configs:',
        '  - job_name: cbr-agent',
        `    static_configs: [{ targets: ['127.0.0.1:${agentPort}'] }]`,
        '',
      ].join('\n'),
    );
    const log = createWriteStream(join(dir, 'prometheus.log'));
    prometheus = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${promPort}`], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    prometheus.stdout?.pipe(log);
    prometheus.stderr?.pipe(log);
    agent = startAgent();
    await waitForAgentQueue(prefix, host);
  });

  after(async () => {
    if (agent) await stopGracefully(agent);
    if (prometheus) await stopGracefully(prometheus);
    await removeBusTopology(prefix, [host]);
  });

  it('a backup over the bus shows in Prometheus: its count, bytes and last success; the rules load; a stopped agent is down', async () => {
    await one('up{job="cbr-agent"}', (v) => v === 1);
    await one('cbr_bus_connected', (v) => v === 1);
    const id = randomUUID();
    await publishRaw(prefix, host, validCommand(host, { id, payload: { name: 'metrics' } }));
    const row = await waitForWorkflow(stateDb, id, (w) => w.status === 'done');
    assert.equal(row.state, 'completed');
    const out = outputOf('backup', (row.snapshot as { context: unknown }).context) as BackupOutput;
    assert.ok(out.result && out.result.size > 0);

    assert.equal(await one(`cbr_workflows_total{kind="backup",outcome="completed",code=""}`), 1);
    assert.equal(await one(`cbr_stored_bytes_total{kind="backup"}`), out.result.size);
    assert.equal(await one(`cbr_read_bytes_total{kind="backup"}`), out.result.rawBytes);
    const lastSuccess = await one(`cbr_last_success_timestamp_seconds{kind="backup",host="${host}",strategy="full"}`);
    assert.ok(Math.abs(lastSuccess - Date.parse(row.updatedAt) / 1000) < 5, `${lastSuccess} vs ${row.updatedAt}`);
    assert.equal(await one(`cbr_last_run_success{kind="backup",host="${host}"}`), 1);
    assert.equal(await one(`cbr_workflow_duration_seconds_count{kind="backup",outcome="completed"}`), 1);
    assert.equal(await one('sum(cbr_workflows_active) or vector(0)', (v) => v === 0), 0);
    assert.equal(await one('cbr_outbox_events', (v) => v === 0), 0);
    assert.equal(await one(`count(ALERTS{alertname=~"CbrBackupOverdue|CbrBackupFailed|CbrBackupNeverSucceeded"}) or vector(0)`), 0);

    const rules = (await (await fetch(`http://127.0.0.1:${promPort}/api/v1/rules`)).json()) as {
      data: { groups: { name: string; rules: { name: string; health: string }[] }[] };
    };
    const cbrRules = rules.data.groups.find((g) => g.name === 'cbr')?.rules ?? [];
    assert.equal(cbrRules.length, 7);
    assert.deepEqual(
      cbrRules.filter((r) => r.health === 'err').map((r) => r.name),
      [],
    );

    // The agent stops: Prometheus sees it down, and CbrAgentDown goes pending (it fires after 5 minutes).
    assert.equal(await stopGracefully(agent!), 0);
    agent = null;
    await one('up{job="cbr-agent"}', (v) => v === 0);
    await query('ALERTS{alertname="CbrAgentDown",alertstate="pending"}', (r) => r.length === 1);

    // Started again, it remembers its last success from its state database (the counters start over, as counters do).
    // The database's time is the row's last update, a few milliseconds from the final event's time the live value had.
    agent = startAgent();
    await one('up{job="cbr-agent"}', (v) => v === 1);
    const seeded = await one(`cbr_last_success_timestamp_seconds{kind="backup",host="${host}",strategy="full"}`, (v) => Math.abs(v - lastSuccess) < 1);
    assert.ok(Math.abs(seeded - lastSuccess) < 1, `${seeded} vs ${lastSuccess}`);
    assert.equal(await one(`cbr_last_run_success{kind="backup",host="${host}"}`), 1);
  });

  it('local CLI runs write a node_exporter textfile that promtool accepts and that adds up across runs', async () => {
    const file = join(scratchDir('metrics-textfile'), 'cbr.prom');
    const cliEnv = { ...env, CBR_METRICS_TEXTFILE: file };
    const config = profilePath('source', testEnv);
    const first = await cbr(['backup-create', 'textfile-1', '--config', config], cliEnv);
    assert.equal(first.code, 0, first.err);
    const second = await cbr(['backup-create', 'textfile-2', '--config', config, '--metrics-textfile', file], env);
    assert.equal(second.code, 0, second.err);
    const text = readFileSync(file, 'utf8');
    const lint = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    assert.equal(lint.status, 0, `${lint.stdout}${lint.stderr}`);
    const samples = parseExposition(text);
    const get = (name: string, labels: Record<string, string>) =>
      samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    assert.equal(get('cbr_workflows_total', { kind: 'backup', outcome: 'completed' }), 2);
    const { hostId } = await loadProfile(config);
    const last = get('cbr_last_success_timestamp_seconds', { kind: 'backup', strategy: 'full', host: hostId });
    assert.ok(last && Math.abs(last - Date.now() / 1000) < 600, String(last));
    assert.equal(get('cbr_last_run_success', { kind: 'backup' }), 1);
  });
});
