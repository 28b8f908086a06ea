import { CbrError } from '../../core/errors.ts';
import { diagram, toMermaid } from '../../diagram/graph.ts';
import { toSvg } from '../../diagram/svg.ts';
import { backupMachine } from '../../machines/backup.machine.ts';
import { restoreMachine } from '../../machines/restore.machine.ts';
import { type Command, parse, printJson } from '../io.ts';

const usage = 'cbr machines [backup|restore] [--format mermaid|svg|json]';

export const command: Command = {
  summary: 'Draw the workflow machines from their definitions (Mermaid, SVG or JSON), failure and rollback paths included.',
  usage,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { format: { type: 'string', default: 'mermaid' }, json: { type: 'boolean', default: false } }, usage);
    const which = positionals[0];
    const machines = { backup: backupMachine, restore: restoreMachine };
    if (which && !(which in machines)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown machine ${JSON.stringify(which)}\nusage: ${usage}`);
    const format = values.json ? 'json' : values.format;
    if (format !== 'mermaid' && format !== 'json' && format !== 'svg') throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--format must be mermaid, svg or json');
    const selected = which ? [which as keyof typeof machines] : (Object.keys(machines) as (keyof typeof machines)[]);
    if (format === 'json')
      printJson(
        io,
        selected.map((k) => diagram(machines[k])),
      );
    else if (format === 'svg') {
      if (selected.length !== 1) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', 'an SVG holds one machine: cbr machines backup --format svg');
      io.stdout(toSvg(diagram(machines[selected[0]!])));
    } else io.stdout(selected.map((k) => toMermaid(diagram(machines[k]))).join('\n'));
    return 0;
  },
};
