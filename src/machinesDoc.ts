import { backupMachine } from '../machines/backup.machine.ts';
import { restoreMachine } from '../machines/restore.machine.ts';
import { diagram, toMermaid } from './diagram.ts';

/** docs/machines.md: generated from the definitions, checked by a test. */
export function machinesDoc(): string {
  return [
    '# The workflow machines',
    '',
    'Generated from `machines/*.machine.ts` by `node scripts/gen-machine-docs.ts` (also `npx cbr machines`);',
    '`test/unit/diagram.test.ts` fails when this file and the definitions drift apart. `done`/`error` are the',
    "outcomes of the state's step, `CANCEL` a cancel command or signal, `[guard]` an eventless choice.",
    '',
    '## Backup',
    '',
    '```mermaid',
    toMermaid(diagram(backupMachine)).trimEnd(),
    '```',
    '',
    '## Restore',
    '',
    '```mermaid',
    toMermaid(diagram(restoreMachine)).trimEnd(),
    '```',
    '',
  ].join('\n');
}
