import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { BufferPool } from '../../../src/core/bufferPool.ts';

describe('BufferPool', () => {
  it('hands a buffer given back out again, views included; keeps at most max', () => {
    const pool = new BufferPool(1024, 1);
    const a = pool.take();
    const b = pool.take();
    assert.equal(a.length, 1024);
    assert.notEqual(a.buffer, b.buffer);
    pool.give([a.subarray(0, 10), b]);
    const c = pool.take();
    assert.equal(c.buffer, a.buffer, 'the first given back is reused');
    assert.notEqual(pool.take().buffer, b.buffer, 'b was over the limit and dropped');
  });

  it('ignores buffers it did not make, and the same buffer given twice', () => {
    const pool = new BufferPool(1024, 4);
    const foreign = Buffer.allocUnsafeSlow(1024);
    const a = pool.take();
    pool.give([foreign, a, a.subarray(5)]);
    assert.equal(pool.take().buffer, a.buffer);
    const next = pool.take();
    assert.notEqual(next.buffer, a.buffer);
    assert.notEqual(next.buffer, foreign.buffer);
  });
});
