import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { diagram, toMermaid } from '../../../src/diagram/graph.ts';
import { machineSvgs, machinesDoc } from '../../../src/diagram/machinesDoc.ts';
import { toSvg } from '../../../src/diagram/svg.ts';
import { backupMachine } from '../../../src/machines/backup.machine.ts';
import { clusterBackupMachine } from '../../../src/machines/clusterBackup.machine.ts';
import { clusterRestoreMachine } from '../../../src/machines/clusterRestore.machine.ts';
import { restoreMachine } from '../../../src/machines/restore.machine.ts';
import { REPO } from '../../helpers/paths.ts';

describe('machine diagrams', () => {
  it('docs/machines.md is what the definitions generate (no drift)', async () => {
    assert.equal(await readFile(join(REPO, 'docs', 'machines.md'), 'utf8'), machinesDoc());
    for (const [name, svg] of Object.entries(machineSvgs()))
      assert.equal(await readFile(join(REPO, 'docs', 'machines', name), 'utf8'), svg, `docs/machines/${name}`);
  });

  it('SVG: one group per state with the dotted path the events carry, an arrow per transition pair', () => {
    for (const machine of [backupMachine, restoreMachine, clusterBackupMachine, clusterRestoreMachine]) {
      const d = diagram(machine);
      const svg = toSvg(d);
      const groups = [...svg.matchAll(/<g class="([^"]*)" data-state="([^"]+)">/g)].map((m) => ({ cls: m[1]!, path: m[2]! }));
      const paths: string[] = [];
      const walk = (n: typeof d.root, prefix: string) => {
        for (const c of n.children) {
          const p = prefix ? `${prefix}.${c.id.split('.').pop()}` : c.id.split('.').pop()!;
          paths.push(p);
          walk(c, p);
        }
      };
      walk(d.root, '');
      assert.deepEqual(groups.map((g) => g.path).sort(), paths.sort(), `${d.id}: every state drawn once`);
      assert.ok(groups.find((g) => g.path === 'failed')!.cls.includes('final'));
      // A self-transition (holding's HOLD) is not drawn as an arrow; docs/machines.md lists it.
      const pairs = new Set(d.edges.filter((e) => e.from !== e.to).map((e) => `${e.from}>${e.to}`));
      const arrows = (svg.match(/<path class="edge /g) ?? []).length;
      const initials = (svg.match(/<circle class="initial"/g) ?? []).length;
      assert.equal(arrows, pairs.size + initials, `${d.id}: one arrow per (from, to) pair plus the initial ones`);
      assert.match(svg, /^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"[^>]* viewBox="-1 -1 \d+ \d+"/);
    }
    const r = toSvg(diagram(restoreMachine));
    assert.match(r, /data-state="rollingBack\.restartingNode"/);
    assert.match(r, /class="edge-label fail"[^>]*>CANCEL, error</);
  });

  it('draws every step, the compensation and rollback paths, and eventless choices', () => {
    const b = diagram(backupMachine);
    const has = (d: typeof b, from: string, to: string, label: string) => d.edges.some((e) => e.from.endsWith(from) && e.to.endsWith(to) && e.label === label);
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
