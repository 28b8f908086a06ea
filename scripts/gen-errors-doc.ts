// Regenerates docs/errors.md from src/core/errors.ts (test/unit/core/errors.test.ts fails when they drift).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERRORS } from '../src/core/errors.ts';

const rows = Object.entries(ERRORS).map(([c, e]) => `| \`${c}\` | ${e.exit} | ${e.retryable ? 'yes' : 'no'} | ${e.summary} |`);
const text = [
  '# Error codes',
  '',
  'Every failure cbr reports carries one of these codes, unchanged in events, `--json` output and exit statuses.',
  'This table is checked against `src/core/errors.ts` by `test/unit/core/errors.test.ts`; `node scripts/gen-errors-doc.ts` rewrites it.',
  '',
  '| code | exit status | retryable | meaning |',
  '| --- | --- | --- | --- |',
  ...rows,
  '',
].join('\n');
writeFileSync(join(import.meta.dirname, '..', 'docs', 'errors.md'), text);
