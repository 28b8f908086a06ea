import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, describe, it } from 'node:test';
import { createLocalStore } from '../../../src/storage/local/localStore.ts';

const root = mkdtempSync(join(tmpdir(), 'cbr-local-list-'));
after(() => rmSync(root, { recursive: true, force: true }));

describe('local store: list by prefix', () => {
  it('walks only the folder of the prefix and still lists every key that starts with it, and nothing else', async () => {
    const store = createLocalStore(root, 'c');
    for (const key of ['a/b/c', 'a/bc', 'a/b/d/e', 'ab/x', 'b', 'cbr.locks/h/backup-1.json']) {
      await store.put(key, Readable.from([Buffer.from(key)]));
    }
    const list = async (prefix: string) => {
      const keys: string[] = [];
      for await (const o of store.list(prefix)) keys.push(o.key);
      return keys;
    };
    assert.deepEqual(await list('a/b'), ['a/b/c', 'a/b/d/e', 'a/bc']);
    assert.deepEqual(await list('a/b/'), ['a/b/c', 'a/b/d/e']);
    assert.deepEqual(await list('a'), ['a/b/c', 'a/b/d/e', 'a/bc', 'ab/x']);
    assert.deepEqual(await list('cbr.locks/h/'), ['cbr.locks/h/backup-1.json']);
    assert.deepEqual(await list('missing/x/'), []);
    assert.equal((await list('')).length, 6);
    // A prefix that would climb out of the container is not narrowed: it matches no key.
    assert.deepEqual(await list('../c/a/'), []);
  });
});
