import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { backupMachine } from '../../machines/backup.machine.ts';
import { restoreMachine } from '../../machines/restore.machine.ts';
import { diagram, toMermaid } from '../../src/diagram.ts';
import { machinesDoc } from '../../src/machinesDoc.ts';
import { REPO } from '../helpers/paths.ts';

describe('machine diagrams', () => {
  it('docs/machines.md is what the definitions generate (no drift)', async () => {
    assert.equal(await readFile(join(REPO, 'docs', 'machines.md'), 'utf8'), machinesDoc());
  });

  it('draws every step, the compensation and rollback paths, and eventless choices', () => {
    const b = diagram(backupMachine);
    const has = (d: typeof b, from: string, to: string, label: string) =>
      d.edges.some((e) => e.from.endsWith(from) && e.to.endsWith(to) && e.label === label);
    assert.ok(has(b, 'backup.streaming', 'backup.compensating', 'error'));
    assert.ok(has(b, 'backup.streaming', 'backup.compensating', 'CANCEL'));
    assert.ok(has(b, 'compensating.deletingObjects', 'compensating.clearingSnapshot', 'done'));
    assert.ok(has(b, 'backup.compensating', 'backup.failed', 'done'));
    const r = diagram(restoreMachine);
    assert.ok(has(r, 'rollingBack.deciding', 'rollingBack.restartingNode', '[restartNeeded]'));
    assert.ok(has(r, 'rollingBack.start', 'rollingBack.stoppingNode', '[touched]'));
    const mermaid = toMermaid(r);
    assert.match(mermaid, /^stateDiagram-v2$/m);
    assert.match(mermaid, /state rollingBack \{/);
    assert.match(mermaid, /unpacking : unpackBackup/);
    // Every non-final leaf state of the restore machine invokes a step, and every step is drawn.
    const steps = Object.keys(restoreMachine.implementations.actors);
    for (const s of steps) assert.ok(mermaid.includes(`: ${s}`), `step ${s} drawn`);
  });
});
