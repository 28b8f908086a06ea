// Regenerates docs/machines.md from the machine definitions (test/unit/diagram.test.ts fails when they drift).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { machinesDoc } from '../src/machinesDoc.ts';

writeFileSync(join(import.meta.dirname, '..', 'docs', 'machines.md'), machinesDoc());
