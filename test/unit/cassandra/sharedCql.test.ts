import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { sharedCql } from '../../../src/cassandra/sharedCql.ts';

/** A fake connection that counts connects and closes. */
function counting(fail = 0) {
  const seen = { connects: 0, closes: 0, failures: fail };
  const connect = async (): Promise<CqlSession> => {
    seen.connects++;
    if (seen.failures > 0) {
      seen.failures--;
      throw new Error('connection refused');
    }
    const n = seen.connects;
    return { execute: async () => [{ n }], close: async () => void seen.closes++ };
  };
  return { seen, connect };
}

describe('sharedCql', () => {
  it('one connection for steps that open it one after another, closed by dispose', async () => {
    const { seen, connect } = counting();
    const shared = sharedCql(connect, 60_000);
    const a = await shared.open();
    assert.deepEqual(await a.execute('q'), [{ n: 1 }]);
    await a.close();
    const b = await shared.open();
    assert.deepEqual(await b.execute('q'), [{ n: 1 }]);
    await b.close();
    assert.equal(seen.connects, 1);
    assert.equal(seen.closes, 0);
    await shared.dispose();
    assert.equal(seen.closes, 1);
    // Opened again after dispose: a new connection.
    const c = await shared.open();
    assert.deepEqual(await c.execute('q'), [{ n: 2 }]);
    await c.close();
    await shared.dispose();
    assert.equal(seen.closes, 2);
  });

  it('closes once nothing held it for the linger time, not while a holder is left', async () => {
    const { seen, connect } = counting();
    const shared = sharedCql(connect, 20);
    const a = await shared.open();
    const b = await shared.open();
    await a.close();
    await a.close(); // a second close of the same handle lets go only once
    await sleep(60);
    assert.equal(seen.closes, 0, 'b still holds it');
    await b.close();
    await sleep(60);
    assert.equal(seen.closes, 1);
    assert.equal(seen.connects, 1);
  });

  it('a failed connect is not kept: the next open connects again', async () => {
    const { seen, connect } = counting(1);
    const shared = sharedCql(connect, 20);
    await assert.rejects(shared.open(), /connection refused/);
    const a = await shared.open();
    assert.deepEqual(await a.execute('q'), [{ n: 2 }]);
    await a.close();
    await shared.dispose();
    assert.equal(seen.connects, 2);
    assert.equal(seen.closes, 1);
  });
});
