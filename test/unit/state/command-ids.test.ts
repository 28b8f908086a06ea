import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { StateDb } from '../../../src/state/stateDb.ts';

describe('state store: signed command ids (replay protection)', () => {
  it('records an id once, survives a reopen, settles it, and prunes it only once its time has passed', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cbr-ids-'));
    try {
      const path = join(dir, 'state.db');
      const t0 = Date.parse('2026-01-01T00:00:00Z');
      let store = new StateDb(path);
      assert.equal(store.recordCommand('c-1', 'backup.delete', t0 + 600_000, t0), null, 'new id');
      const again = store.recordCommand('c-1', 'backup.delete', t0 + 600_000, t0 + 1000);
      assert.equal(again?.outcome, 'pending');
      assert.equal(again?.seenAt, new Date(t0).toISOString());
      store.settleCommand('c-1', 'failed');
      store.close();

      store = new StateDb(path);
      assert.equal(store.recordCommand('c-1', 'backup.delete', t0 + 600_000, t0 + 599_999)?.outcome, 'failed', 'kept across a reopen');
      // At its keep-until time it is still there; after it, another record prunes it.
      assert.ok(store.recordCommand('c-1', 'backup.delete', t0 + 600_000, t0 + 600_000));
      assert.equal(store.recordCommand('c-2', 'workflow.cancel', t0 + 1_200_000, t0 + 600_001), null);
      assert.equal(store.seenCommand('c-1'), null, 'pruned');
      assert.equal(store.seenCommand('c-2')?.outcome, 'pending');
      store.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
