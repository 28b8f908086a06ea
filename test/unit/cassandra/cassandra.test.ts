import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { nodetoolMessage, parseListSnapshots } from '../../../src/cassandra/nodetool.ts';

describe('nodetool output', () => {
  it('parses listsnapshots', () => {
    const out = `Snapshot Details: \nSnapshot name Keyspace name Column family name True size Size on disk Creation time Expiration time\nb1            ks1           t1                 0 bytes   5.1 KiB      2026-01-01T00:00:00Z\nb1            ks1           t2                 0 bytes   5.1 KiB      2026-01-01T00:00:00Z\nb2            ks2           t1                 0 bytes   5.1 KiB      2026-01-01T00:00:00Z\n\nTotal TrueDiskSpaceUsed: 0 bytes\n`;
    assert.deepEqual(parseListSnapshots(out), ['b1', 'b2']);
    assert.deepEqual(parseListSnapshots('There are no snapshots\n'), []);
  });
  it('keeps the reason of a failure, not the stack trace', () => {
    const out = 'error: Snapshot t1 already exists.\n-- StackTrace --\njava.io.IOException: Snapshot t1 already exists.\n\tat org.apache...\n';
    assert.equal(nodetoolMessage(out), 'Snapshot t1 already exists.');
  });
});
