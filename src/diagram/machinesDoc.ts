import { backupMachine } from '../machines/backup.machine.ts';
import { clusterBackupMachine } from '../machines/clusterBackup.machine.ts';
import { clusterRestoreMachine } from '../machines/clusterRestore.machine.ts';
import { restoreMachine } from '../machines/restore.machine.ts';
import { diagram, toMermaid } from './graph.ts';
import { toSvg } from './svg.ts';

/** docs/machines/*.svg (laid out by `cbr machines <m> --format svg`; the live view draws the same). */
export function machineSvgs(): Record<string, string> {
  return {
    'backup.svg': toSvg(diagram(backupMachine)),
    'restore.svg': toSvg(diagram(restoreMachine)),
    'cluster-backup.svg': toSvg(diagram(clusterBackupMachine)),
    'cluster-restore.svg': toSvg(diagram(clusterRestoreMachine)),
  };
}

/** docs/machines.md: generated from the definitions, checked by a test. */
export function machinesDoc(): string {
  return [
    '# The workflow machines',
    '',
    'Generated from `src/machines/*.machine.ts` by `node scripts/gen-machine-docs.ts` (also `npx cbr machines`, `--format svg`);',
    '`test/unit/diagram/diagram.test.ts` fails when this file and the definitions drift apart. `done`/`error` are the',
    "outcomes of the state's step, `CANCEL` a cancel command or signal, `[guard]` an eventless choice.",
    '',
    '## Backup',
    '',
    '![backup machine](machines/backup.svg)',
    '',
    '```mermaid',
    toMermaid(diagram(backupMachine)).trimEnd(),
    '```',
    '',
    '## Restore',
    '',
    '![restore machine](machines/restore.svg)',
    '',
    '```mermaid',
    toMermaid(diagram(restoreMachine)).trimEnd(),
    '```',
    '',
    '## Cluster backup (coordinator)',
    '',
    'One backup id across every host: each host runs the backup machine above; this one tells them when. The',
    '`[hostsFailed]` choices after each phase send any host failure to `aborting` (every host drops its part).',
    '',
    '![cluster backup machine](machines/cluster-backup.svg)',
    '',
    '```mermaid',
    toMermaid(diagram(clusterBackupMachine)).trimEnd(),
    '```',
    '',
    '## Cluster restore (as a new cluster)',
    '',
    "Each target node runs the restore machine's steps; this one runs each phase on every node at once, with a barrier",
    'between phases, and rolls every node back from any of them (finalize, which drops the replaced data, comes last).',
    '',
    '![cluster restore machine](machines/cluster-restore.svg)',
    '',
    '```mermaid',
    toMermaid(diagram(clusterRestoreMachine)).trimEnd(),
    '```',
    '',
  ].join('\n');
}
