import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { backoff, retry } from '../../../src/core/retry.ts';

class Transient extends Error {}

/** A function that fails `failures` times with a Transient error, then returns 'ok'; `calls` counts attempts. */
function flaky(failures: number) {
  const f = {
    calls: 0,
    run: async (attempt: number) => {
      f.calls++;
      assert.equal(attempt, f.calls);
      if (f.calls <= failures) throw new Transient(`failure ${f.calls}`);
      return 'ok';
    },
  };
  return f;
}

describe('retry', () => {
  it('returns the first success, after as many attempts as it took', async () => {
    const f = flaky(2);
    const seen: number[] = [];
    assert.equal(await retry(f.run, { attempts: 3, baseMs: 1, onRetry: ({ attempt }) => void seen.push(attempt) }), 'ok');
    assert.equal(f.calls, 3);
    assert.deepEqual(seen, [1, 2]);
  });

  it('makes no second attempt when the first succeeds', async () => {
    const f = flaky(0);
    assert.equal(await retry(f.run, { attempts: 5, onRetry: () => assert.fail('no retry expected') }), 'ok');
    assert.equal(f.calls, 1);
  });

  it('throws the last error as it is once the attempts are spent, with no wait after the last one', async () => {
    const f = flaky(10);
    const retries: number[] = [];
    await assert.rejects(
      retry(f.run, { attempts: 4, baseMs: 1, onRetry: ({ attempt }) => void retries.push(attempt) }),
      (err) => err instanceof Transient && err.message === 'failure 4',
    );
    assert.equal(f.calls, 4);
    assert.deepEqual(retries, [1, 2, 3]);
  });

  it('throws a non-retryable error at once, without waiting or calling onRetry', async () => {
    let calls = 0;
    const fatal = new Error('403 forbidden');
    const started = performance.now();
    await assert.rejects(
      retry(
        async () => {
          calls++;
          throw fatal;
        },
        { attempts: 5, baseMs: 10_000, retryable: (e) => e instanceof Transient, onRetry: () => assert.fail('no retry expected') },
      ),
      (err) => err === fatal,
    );
    assert.equal(calls, 1);
    assert.ok(performance.now() - started < 1000);
  });

  it('retries only the errors the predicate accepts, then passes the first other one through', async () => {
    let calls = 0;
    await assert.rejects(
      retry(
        async () => {
          calls++;
          throw calls < 3 ? new Transient('again') : new Error('for good');
        },
        { attempts: 10, baseMs: 1, retryable: (e) => e instanceof Transient },
      ),
      /for good/,
    );
    assert.equal(calls, 3);
  });

  it('waits exponentially longer, up to the cap', async () => {
    const delays: number[] = [];
    await assert.rejects(retry(flaky(10).run, { attempts: 6, baseMs: 1, maxMs: 4, jitter: 0, onRetry: ({ delayMs }) => void delays.push(delayMs) }), Transient);
    assert.deepEqual(delays, [1, 2, 4, 4, 4]);
  });

  it('awaits onRetry before the next attempt', async () => {
    const order: string[] = [];
    await retry(
      async (attempt) => {
        order.push(`attempt ${attempt}`);
        if (attempt === 1) throw new Transient('x');
      },
      {
        baseMs: 0,
        onRetry: async () => {
          await new Promise((r) => setTimeout(r, 5));
          order.push('repaired');
        },
      },
    );
    assert.deepEqual(order, ['attempt 1', 'repaired', 'attempt 2']);
  });

  it('stops when the signal fires during a wait, with the signal reason', async () => {
    const f = flaky(10);
    const ac = new AbortController();
    const reason = new Error('workflow cancelled');
    setTimeout(() => ac.abort(reason), 20);
    const started = performance.now();
    await assert.rejects(retry(f.run, { attempts: 5, baseMs: 10_000, signal: ac.signal }), (err) => err === reason);
    assert.equal(f.calls, 1);
    assert.ok(performance.now() - started < 1000);
  });

  it('starts no attempt when the signal has already fired', async () => {
    const f = flaky(0);
    const ac = new AbortController();
    ac.abort();
    await assert.rejects(retry(f.run, { signal: ac.signal }), { name: 'AbortError' });
    assert.equal(f.calls, 0);
  });

  it('throws a failure that came after the signal fired as it is, with no further attempt', async () => {
    const ac = new AbortController();
    let calls = 0;
    await assert.rejects(
      retry(
        async () => {
          calls++;
          ac.abort();
          throw new Transient('cut short');
        },
        { attempts: 5, baseMs: 1, signal: ac.signal },
      ),
      /cut short/,
    );
    assert.equal(calls, 1);
  });
});

describe('backoff', () => {
  it('takes up to the jitter share off the exponential wait, never more', (t) => {
    const random = t.mock.method(Math, 'random', () => 0);
    assert.deepEqual(
      [1, 2, 3, 4, 5, 6].map((a) => backoff(a, 200, 5000, 0.5)),
      [200, 400, 800, 1600, 3200, 5000],
    );
    random.mock.mockImplementation(() => 0.999999);
    assert.deepEqual(
      [1, 2, 6].map((a) => backoff(a, 200, 5000, 0.5)),
      [100, 200, 2500],
    );
    random.mock.mockImplementation(() => 0.5);
    assert.equal(backoff(3, 200, 5000, 0), 800);
  });
});
