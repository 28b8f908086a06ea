import { resolve } from 'node:path';
import { Agent } from '../../bus/agent.ts';
import { redactUrl } from '../../bus/client.ts';
import { loadProfile } from '../../cassandra/profile.ts';
import { createLogger } from '../../core/log.ts';
import { createInspection } from '../../runtime/inspect.ts';
import { busOptions, busPrefix, signingKey } from '../bus.ts';
import { cliLogger, stateDbPath, storageConfig, storageOptions } from '../context.ts';
import { type Command, parse, requireOption } from '../io.ts';

const usage =
  'cbr agent --config <profile> [--bus amqp://127.0.0.1:5672] [--host <host-id>] [--signing-key-file F] [--prefix P] [--storage-root DIR] [--step-delay-ms 0] [--inspect ws://host:port]';

export const command: Command = {
  summary: 'Run the host agent: consume AMQP commands, run and persist workflows, publish their events.',
  usage,
  async run(argv, io) {
    const { values } = parse(
      argv,
      {
        ...busOptions,
        ...storageOptions,
        config: { type: 'string' },
        'step-delay-ms': { type: 'string' },
        inspect: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      usage,
    );
    const profilePath = resolve(requireOption(values.config, '--config', usage));
    const profile = await loadProfile(profilePath);
    const url = values.bus ?? io.env['CBR_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
    const hostId = values.host ?? profile.hostId;
    const log = io.env['CBR_LOG_LEVEL'] ? cliLogger(io) : createLogger({ level: 'info', sink: (l) => io.stderr(`${l}\n`) });
    const inspection = values.inspect ? createInspection(values.inspect) : null;
    const agent = new Agent({
      url,
      hostId,
      profilePath,
      storage: storageConfig(values, io.env),
      stateDb: stateDbPath(io.env),
      env: io.env,
      log: log.child({ host: hostId }),
      prefix: busPrefix(values, io.env),
      signingKey: await signingKey(values, io.env),
      stepDelayMs: Number(values['step-delay-ms'] ?? 0),
      ...(inspection ? { inspect: inspection.inspect } : {}),
    });
    await agent.start();
    log.info('agent started', { host: hostId, bus: redactUrl(url), signed: Boolean(values['signing-key-file'] ?? io.env['CBR_SIGNING_KEY_FILE']) });
    await new Promise<void>((done) => {
      const stop = () => {
        log.info('stopping: no new commands, workflows checkpointed');
        agent
          .stop()
          .finally(() => inspection?.stop())
          .then(done, done);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};
