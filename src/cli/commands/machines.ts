import { backupMachine } from '../../../machines/backup.machine.ts';
import { restoreMachine } from '../../../machines/restore.machine.ts';
import { diagram, toMermaid } from '../../diagram.ts';
import { CbrError } from '../../errors.ts';
import { type Command, parse, printJson } from '../io.ts';

const usage = 'cbr machines [backup|restore] [--format mermaid|json]';

export const command: Command = {
  summary: 'Draw the workflow machines from their definitions (Mermaid or JSON), failure and rollback paths included.',
  usage,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { format: { type: 'string', default: 'mermaid' }, json: { type: 'boolean', default: false } }, usage);
    const which = positionals[0];
    const machines = { backup: backupMachine, restore: restoreMachine };
    if (which && !(which in machines)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown machine ${JSON.stringify(which)}\nusage: ${usage}`);
    const format = values.json ? 'json' : values.format;
    if (format !== 'mermaid' && format !== 'json') throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--format must be mermaid or json (svg is not there yet)`);
    const selected = which ? [which as keyof typeof machines] : (Object.keys(machines) as (keyof typeof machines)[]);
    if (format === 'json') printJson(io, selected.map((k) => diagram(machines[k])));
    else io.stdout(selected.map((k) => toMermaid(diagram(machines[k]))).join('\n'));
    return 0;
  },
};
