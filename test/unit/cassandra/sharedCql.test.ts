import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CqlSession } from '../../../src/cassandra/cql.ts';
import { closeKeptCql, keptCql, sharedCql } from '../../../src/cassandra/sharedCql.ts';

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

describe('keptCql (the agent: a session kept between workflows)', () => {
  it('a second workflow reuses the first one`s connection after one check query; dispose only lets go', async () => {
    const queries: string[] = [];
    let connects = 0;
    let closes = 0;
    const connect = async (): Promise<CqlSession> => {
      connects++;
      return {
        execute: async (q) => {
          queries.push(q);
          return [];
        },
        close: async () => void closes++,
      };
    };
    const first = keptCql('node-a', connect, 60_000);
    const s1 = await first.open();
    await s1.execute('q1');
    await s1.close();
    await first.dispose();
    assert.equal(closes, 0, 'kept after the workflow ended');
    const second = keptCql('node-a', connect, 60_000);
    const s2 = await second.open();
    await s2.execute('q2');
    await s2.close();
    assert.equal(connects, 1, 'one connection for both workflows');
    assert.deepEqual(queries, ['q1', 'SELECT key FROM system.local', 'q2']);
    await closeKeptCql();
    assert.equal(closes, 1, 'closed when the agent stops');
  });

  it('a kept connection that fails its check is closed and replaced by a new one', async () => {
    let connects = 0;
    let closes = 0;
    const connect = async (): Promise<CqlSession> => {
      const n = ++connects;
      return {
        execute: async (q) => {
          if (n === 1 && q.startsWith('SELECT key')) throw new Error('connection reset');
          return [{ n }];
        },
        close: async () => void closes++,
      };
    };
    const a = await keptCql('node-b', connect, 60_000).open();
    await a.close();
    const b = await keptCql('node-b', connect, 60_000).open();
    assert.deepEqual(await b.execute('q'), [{ n: 2 }]);
    await b.close();
    assert.equal(connects, 2);
    assert.equal(closes, 1, 'the stale one is closed');
    await closeKeptCql();
    assert.equal(closes, 2);
  });
});
