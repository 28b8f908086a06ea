import { redactUrl } from '../../bus/subscriber.ts';
import { CbrError } from '../../core/errors.ts';
import { createLogger } from '../../core/log.ts';
import { startUi } from '../../ui/server.ts';
import { busConnectionOptions, signingKey } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { cliLogger } from '../context.ts';
import { untilInterrupted } from '../signals.ts';

export const command = defineCommand('ui', {
  summary: 'Serve a live web view of every host and workflow on the bus (diagram, progress, history); start workflows with the signing key.',
  options: {
    port: { type: 'string', default: '8900', placeholder: '<port>', description: 'the port to listen on (0: any free one)' },
    listen: {
      type: 'string',
      default: '127.0.0.1',
      placeholder: '<address>',
      description: 'the address to listen on (the page can start restores: keep it local)',
    },
    'public-host': {
      type: 'string',
      multiple: true,
      placeholder: '<name>',
      description: 'another name the page may be opened by (any other Host header gets 421)',
    },
    'signing-key-file': {
      type: 'string',
      placeholder: '<file>',
      env: 'CBR_SIGNING_KEY_FILE',
      description: "the agents' command signing key: the page can start backups and restores (default: read-only)",
    },
    ...jsonOption,
    ...busConnectionOptions,
  },
  async run({ values, usage }, io) {
    const port = Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--port must be 0-65535\nusage: ${usage}`);
    const url = values.bus;
    const log = io.env['CBR_LOG_LEVEL'] ? cliLogger(io) : createLogger({ level: 'info', sink: (l) => io.stderr(`${l}\n`) });
    const key = await signingKey(values['signing-key-file']);
    const ui = await startUi({
      url,
      prefix: values.prefix,
      port,
      listen: values.listen,
      publicHosts: values['public-host'] ?? [],
      signingKey: key,
      log,
    });
    if (values.json) io.stdout(`${JSON.stringify({ url: ui.url, bus: redactUrl(url), readOnly: !key })}\n`);
    else io.stdout(`cbr ui on ${ui.url} (bus ${redactUrl(url)}, ${key ? 'commands enabled' : 'read-only'}); Ctrl-C stops it\n`);
    await untilInterrupted(() => ui.close());
    return 0;
  },
});
