import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { waitUntil } from '../../../../src/steps/backup/waitUntil.ts';

describe('waitUntil (a held snapshot deadline)', () => {
  it('resolves at once when the deadline has passed (a restart past it fails the hold without waiting again)', async () => {
    await waitUntil(null, { until: new Date(Date.now() - 1000).toISOString() }, new AbortController().signal);
  });

  it('waits for a deadline ahead until it is aborted (a release or a cancel)', async () => {
    const abort = new AbortController();
    const waiting = waitUntil(null, { until: new Date(Date.now() + 3_600_000).toISOString() }, abort.signal);
    let settled = false;
    waiting.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    await new Promise((r) => setImmediate(r));
    assert.equal(settled, false, 'still waiting');
    abort.abort(new Error('released'));
    await assert.rejects(waiting, { name: 'AbortError' });
  });
});
