// Regenerates docs/machines.md and docs/machines/*.svg from the machine definitions (test/unit/diagram/diagram.test.ts fails when they drift).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machineSvgs, machinesDoc } from '../src/diagram/machinesDoc.ts';

writeFileSync(join(import.meta.dirname, '..', 'docs', 'machines.md'), machinesDoc());
mkdirSync(join(import.meta.dirname, '..', 'docs', 'machines'), { recursive: true });
for (const [name, svg] of Object.entries(machineSvgs())) writeFileSync(join(import.meta.dirname, '..', 'docs', 'machines', name), svg);
