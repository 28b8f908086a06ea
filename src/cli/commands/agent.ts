import { resolve } from 'node:path';
import { Agent } from '../../bus/agent.ts';
import { loadSchedule } from '../../bus/schedule/config.ts';
import { redactUrl } from '../../bus/subscriber.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import { createLogger } from '../../core/log.ts';
import { createInspection } from '../../runtime/inspect.ts';
import { busConnectionOptions, signingKey } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { cliLogger, stateDbPath, storageConfig, storageOptions } from '../context.ts';
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
    schedule: {
      type: 'string',
      placeholder: '<file>',
      description: 'run the jobs of this schedule (YAML or JSON: cron expressions and the commands they issue; see Schedules) (default: none)',
    },
    ...jsonOption,
    ...busConnectionOptions,
    ...storageOptions,
  },
  notes: ['SIGTERM or Ctrl-C stops taking commands; running workflows stay persisted and resume at the next start.'],
  async run({ values, usage }, io) {
    const profilePath = resolve(requireOption(values.config, '--config', usage));
    const profile = await loadProfile(profilePath);
    const url = values.bus;
    const hostId = values.host ?? profile.hostId;
    const log = io.env['CBR_LOG_LEVEL'] ? cliLogger(io) : createLogger({ level: 'info', sink: (l) => io.stderr(`${l}\n`) });
    const schedule = values.schedule ? await loadSchedule(resolve(values.schedule), hostId) : [];
    const inspection = values.inspect ? createInspection(values.inspect) : null;
    const agent = new Agent({
      url,
      hostId,
      profilePath,
      storage: storageConfig(values, io.env),
      stateDb: stateDbPath(io.env),
      env: io.env,
      log: log.child({ host: hostId }),
      prefix: values.prefix,
      signingKey: await signingKey(values['signing-key-file']),
      stepDelayMs: Number(values['step-delay-ms'] ?? 0),
      ...(inspection ? { inspect: inspection.inspect } : {}),
      schedule,
    });
    await agent.start();
    log.info('agent started', { host: hostId, bus: redactUrl(url), signed: Boolean(values['signing-key-file']), scheduleJobs: schedule.length });
    await untilInterrupted(() => {
      log.info('stopping: no new commands, workflows checkpointed');
      return agent.stop().finally(() => inspection?.stop());
    });
    return 0;
  },
});
