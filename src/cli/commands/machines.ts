import { CbrError } from '../../core/errors.ts';
import { diagram, toMermaid } from '../../diagram/graph.ts';
import { toSvg } from '../../diagram/svg.ts';
import { backupMachine } from '../../machines/backup.machine.ts';
import { clusterBackupMachine } from '../../machines/clusterBackup.machine.ts';
import { clusterRestoreMachine } from '../../machines/clusterRestore.machine.ts';
import { restoreMachine } from '../../machines/restore.machine.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { printJson } from '../io.ts';

export const command = defineCommand('machines', {
  summary: 'Draw the workflow machines from their definitions (Mermaid, SVG or JSON), failure and rollback paths included.',
  args: '[backup|restore|cluster-backup|cluster-restore]',
  options: {
    format: { type: 'string', default: 'mermaid', placeholder: 'mermaid|svg|json', description: 'what to draw (SVG: one machine at a time)' },
    ...jsonOption,
  },
  notes: ['--json is --format json.'],
  async run({ values, positionals, usage }, io) {
    const which = positionals[0];
    const machines = { backup: backupMachine, restore: restoreMachine, 'cluster-backup': clusterBackupMachine, 'cluster-restore': clusterRestoreMachine };
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
});
