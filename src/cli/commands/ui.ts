import { redactUrl } from '../../bus/client.ts';
import { CbrError } from '../../core/errors.ts';
import { createLogger } from '../../core/log.ts';
import { startUi } from '../../ui/server.ts';
import { busPrefix, signingKey } from '../bus.ts';
import { cliLogger } from '../context.ts';
import { type Command, parse } from '../io.ts';

const usage = 'cbr ui [--bus amqp://127.0.0.1:5672] [--port 8900] [--listen 127.0.0.1] [--public-host NAME]... [--prefix P] [--signing-key-file F]';

export const command: Command = {
  summary: 'Serve a live web view of every host and workflow on the bus (diagram, progress, history); start workflows with the signing key.',
  usage,
  async run(argv, io) {
    const { values } = parse(
      argv,
      {
        bus: { type: 'string' },
        port: { type: 'string', default: '8900' },
        listen: { type: 'string', default: '127.0.0.1' },
        'public-host': { type: 'string', multiple: true },
        prefix: { type: 'string' },
        'signing-key-file': { type: 'string' },
        json: { type: 'boolean', default: false },
      },
      usage,
    );
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--port must be 0-65535\nusage: ${usage}`);
    const url = values.bus ?? io.env['CBR_BUS_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';
    const log = io.env['CBR_LOG_LEVEL'] ? cliLogger(io) : createLogger({ level: 'info', sink: (l) => io.stderr(`${l}\n`) });
    const key = await signingKey(values, io.env);
    const ui = await startUi({
      url,
      prefix: busPrefix(values, io.env),
      port,
      listen: values.listen,
      publicHosts: values['public-host'] ?? [],
      signingKey: key,
      log,
    });
    if (values.json) io.stdout(`${JSON.stringify({ url: ui.url, bus: redactUrl(url), readOnly: !key })}\n`);
    else io.stdout(`cbr ui on ${ui.url} (bus ${redactUrl(url)}, ${key ? 'commands enabled' : 'read-only'}); Ctrl-C stops it\n`);
    await new Promise<void>((done) => {
      const stop = () => void ui.close().then(done, done);
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};
