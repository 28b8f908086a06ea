import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CbrError, ERRORS, toErrorInfo } from '../../../src/core/errors.ts';
import { REPO } from '../../helpers/paths.ts';

describe('error catalogue', () => {
  it('docs/errors.md lists exactly the codes of src/core/errors.ts, with the same exit status and retryability', async () => {
    const doc = await readFile(join(REPO, 'docs', 'errors.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `(CBR_ERR_[A-Z_]+)` \| (\d+) \| (yes|no) \| (.+) \|$/gm)];
    const documented = new Map(rows.map((m) => [m[1], { exit: Number(m[2]), retryable: m[3] === 'yes', summary: m[4] }]));
    assert.deepEqual([...documented.keys()].sort(), Object.keys(ERRORS).sort());
    for (const [code, e] of Object.entries(ERRORS)) {
      assert.deepEqual(documented.get(code), { exit: e.exit, retryable: e.retryable, summary: e.summary }, code);
    }
  });

  it('codes are stable strings with the CBR_ERR_ prefix and exit statuses are non-zero', () => {
    for (const [code, e] of Object.entries(ERRORS)) {
      assert.match(code, /^CBR_ERR_[A-Z_]+$/);
      assert.ok(e.exit > 0 && e.exit < 126, code);
    }
  });

  it('turns errors into plain JSON and keeps codes', () => {
    const info = toErrorInfo(new CbrError('CBR_ERR_SNAPSHOT_FAILED', 'boom'));
    assert.deepEqual(JSON.parse(JSON.stringify(info)), { code: 'CBR_ERR_SNAPSHOT_FAILED', message: 'boom', retryable: true });
    assert.equal(toErrorInfo(new Error('x')).code, 'CBR_ERR_INTERNAL');
    const abort = new Error('stop');
    abort.name = 'AbortError';
    assert.equal(toErrorInfo(abort).code, 'CBR_ERR_ABORTED');
  });
});
