import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../../../src/core/log.ts';

describe('logger redaction', () => {
  it('redacts secret fields at any depth and keeps paths, ids and keys of objects', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', sink: (l) => lines.push(l) }).child({ workflowId: 'w1' });
    log.info('x', {
      password: 'hunter2',
      nested: { credentials: { username: 'u', password: 'p' }, salted_hash: '$2a$10$abc', key: 'k3y' },
      signingKey: 'sig',
      passwordFile: '/etc/pw',
      objectKey: 'b1/archive.tar.zst',
      keyFingerprint: 'abcd',
      keyspace: 'ks',
    });
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.workflowId, 'w1');
    assert.equal(entry.password, '[redacted]');
    assert.equal(entry.nested.credentials, '[redacted]');
    assert.equal(entry.nested.salted_hash, '[redacted]');
    assert.equal(entry.nested.key, '[redacted]');
    assert.equal(entry.signingKey, '[redacted]');
    assert.equal(entry.passwordFile, '/etc/pw');
    assert.equal(entry.objectKey, 'b1/archive.tar.zst');
    assert.equal(entry.keyFingerprint, 'abcd');
    assert.equal(entry.keyspace, 'ks');
    assert.ok(!lines[0]!.includes('hunter2') && !lines[0]!.includes('k3y') && !lines[0]!.includes('$2a$'));
  });
});
