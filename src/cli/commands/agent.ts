import { resolve } from 'node:path';
import { Agent } from '../../bus/agent.ts';
import { loadSchedule } from '../../bus/schedule/config.ts';
import { redactUrl } from '../../bus/subscriber.ts';
import { jmxIdleMs } from '../../cassandra/nodetool.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import type { VerifyResult } from '../../catalog/verify.ts';
import { createLogger, type Logger } from '../../core/log.ts';
import { CbrMetrics, drillSample, runSample, seedFromEnded, workflowObserver } from '../../metrics/metrics.ts';
import { serveMetrics } from '../../metrics/serve.ts';
import { createInspection } from '../../runtime/inspect.ts';
import { DrillLog, type DrillRow } from '../../state/drillLog.ts';
import type { DrillResult } from '../../workflows/drill.ts';
import { busConnectionOptions, signingKey } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { cliLogger, stateDbPath, storageConfig, storageOptions } from '../context.ts';
import { drillSandboxes, removeStaleDrillSandboxes } from '../drillSandboxes.ts';
import { requireOption } from '../io.ts';
import { untilInterrupted } from '../signals.ts';

export const command = defineCommand('agent', {
  summary: 'Run the host agent: consume AMQP commands, run and persist workflows, publish their events.',
  args: '--config <profile>',
  options: {
    config: { type: 'string', placeholder: '<profile>', description: "this host's node profile: the node every command on this host's queue works on" },
    host: { type: 'string', placeholder: '<host-id>', description: "the host id commands are addressed to (default: the profile's hostId)" },
    'signing-key-file': {
      type: 'string',
      placeholder: '<file>',
      env: 'CBR_SIGNING_KEY_FILE',
      description: 'accept only commands signed with this key, each id once (default: accept unsigned commands)',
    },
    'step-delay-ms': { type: 'string', placeholder: '<ms>', description: 'wait this long before each step (fault-injection drills; default 0)' },
    inspect: {
      type: 'string',
      placeholder: '<ws-url>',
      description: "feed XState's inspection events of every workflow to a Stately inspector at this WebSocket",
    },
    'metrics-listen': {
      type: 'string',
      placeholder: '<host>:<port>',
      env: 'CBR_METRICS_LISTEN',
      description: 'serve Prometheus metrics at http://<host>:<port>/metrics, bound to that address only, e.g. 127.0.0.1:9464 (default: none)',
    },
    schedule: {
      type: 'string',
      placeholder: '<file>',
      description: 'run the jobs of this schedule (YAML or JSON: cron expressions and the commands they issue; see Schedules) (default: none)',
    },
    'jmx-idle': {
      type: 'string',
      placeholder: '<duration>',
      env: 'CBR_JMX_IDLE',
      default: '1h',
      description:
        "how long cbr's JMX client JVM and the node's CQL session stay up between workflows (one per node, shared by them; the JVM is about 45 MiB resident while up), e.g. 30s, 15m, 25h",
    },
    ...jsonOption,
    ...busConnectionOptions,
    ...storageOptions,
  },
  notes: ['SIGTERM or Ctrl-C stops taking commands; running workflows stay persisted and resume at the next start.'],
  async run({ values, usage }, io) {
    const profilePath = resolve(requireOption(values.config, '--config', usage));
    const profile = await loadProfile(profilePath);
    jmxIdleMs({ CBR_JMX_IDLE: values['jmx-idle'] }); // a wrong --jmx-idle fails now, not at the first workflow
    const url = values.bus;
    const hostId = values.host ?? profile.hostId;
    const log = io.env['CBR_LOG_LEVEL'] ? cliLogger(io) : createLogger({ level: 'info', sink: (l) => io.stderr(`${l}\n`) });
    const schedule = values.schedule ? await loadSchedule(resolve(values.schedule), hostId) : [];
    const inspection = values.inspect ? createInspection(values.inspect) : null;
    const metrics = values['metrics-listen'] ? new CbrMetrics({ process: true }) : null;
    // Drills cut short by the agent's last stop or crash: their sandboxes go, and the restores on them are marked
    // failed before the agent resumes unfinished workflows.
    await removeStaleDrillSandboxes(io.env);
    const agent: Agent = new Agent({
      url,
      hostId,
      profilePath,
      storage: storageConfig(values, io.env),
      stateDb: stateDbPath(io.env),
      // The JMX client JVM outlives a workflow: the next one does not pay its start (see --jmx-idle).
      env: { ...io.env, CBR_JMX_IDLE: values['jmx-idle'] },
      log: log.child({ host: hostId }),
      prefix: values.prefix,
      signingKey: await signingKey(values['signing-key-file']),
      stepDelayMs: Number(values['step-delay-ms'] ?? 0),
      ...(inspection ? { inspect: inspection.inspect } : {}),
      ...(metrics ? { onWorkflowEvent: workflowObserver(metrics, hostId, (id) => agent.store.get(id)) } : {}),
      ...(metrics ? { onVerified: (r: VerifyResult, code: string) => metrics.recordOutcome(runSample('verify', { ...r, code })) } : {}),
      drill: {
        sandboxes: drillSandboxes(io.env),
        ...(metrics ? { onDrilled: (r: DrillResult) => metrics.recordOutcome(drillSample(r)) } : {}),
      },
      schedule,
    });
    const server = metrics && values['metrics-listen'] ? await serveAgentMetrics(metrics, agent, hostId, values['metrics-listen'], log) : null;
    await agent.start();
    log.info('agent started', { host: hostId, bus: redactUrl(url), signed: Boolean(values['signing-key-file']), scheduleJobs: schedule.length });
    await untilInterrupted(() => {
      log.info('stopping: no new commands, workflows checkpointed');
      return agent.stop().finally(() => {
        inspection?.stop();
        return server?.close();
      });
    });
    return 0;
  },
});

/** The agent's metrics: its last outcomes from the state database, live gauges read at each scrape, then the endpoint. */
async function serveAgentMetrics(metrics: CbrMetrics, agent: Agent, hostId: string, listen: string, log: Logger) {
  const store = agent.store;
  seedFromEnded(metrics, hostId, store.lastEnded());
  // Drills start no workflow of their own kind: their last outcomes come from the drill log (table `drills`).
  for (const d of new DrillLog(store.db).last()) {
    const strategyOf = (r: DrillRow) => (r as DrillRow & { strategy?: string }).strategy ?? 'full';
    if (d.lastOk)
      metrics.seedLast({
        kind: 'drill',
        host: d.host,
        strategy: strategyOf(d.lastOk),
        lastSuccessAt: Date.parse(d.lastOk.finishedAt) / 1000,
        lastRunSucceeded: null,
      });
    metrics.seedLast({ kind: 'drill', host: d.host, strategy: strategyOf(d.last), lastSuccessAt: null, lastRunSucceeded: d.last.ok });
  }
  metrics.watchAgent({
    activeByState: () => store.activeByState(),
    outboxDepth: () => store.countEvents(),
    outboxOldestAgeSeconds: () => {
      const at = store.oldestEventAt();
      return at === null ? null : Math.max(0, (Date.now() - Date.parse(at)) / 1000);
    },
    busConnected: () => agent.busConnected,
  });
  const server = await serveMetrics(metrics, listen, log);
  log.info('serving metrics', { url: server.url });
  return server;
}
