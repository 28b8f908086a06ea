import assert from 'node:assert/strict';
import { chmodSync, chownSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeFileAtomic } from '../../../src/core/atomicWrite.ts';

const root = process.getuid?.() === 0;
const NOBODY = 65534;

describe('writeFileAtomic', () => {
  const dir = mkdtempSync(join(tmpdir(), 'cbr-fsutil-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('replacing a file keeps its owner, group and mode (root:cassandra 0640 stays so)', { skip: !root && 'needs root (chown)' }, async () => {
    const yaml = join(dir, 'cassandra.yaml');
    writeFileSync(yaml, 'cluster_name: old\n');
    chownSync(yaml, NOBODY, NOBODY);
    chmodSync(yaml, 0o640);
    await writeFileAtomic(yaml, 'cluster_name: new\n');
    const s = statSync(yaml);
    assert.equal(readFileSync(yaml, 'utf8'), 'cluster_name: new\n');
    assert.deepEqual([s.uid, s.gid, s.mode & 0o7777], [NOBODY, NOBODY, 0o640]);
    assert.deepEqual(readdirSync(dir).sort(), ['cassandra.yaml'], 'no temporary file left');
  });

  it('an explicit mode sets the mode and still keeps owner and group', { skip: !root && 'needs root (chown)' }, async () => {
    const secret = join(dir, 'credentials.json');
    writeFileSync(secret, '{}');
    chownSync(secret, NOBODY, NOBODY);
    chmodSync(secret, 0o644);
    await writeFileAtomic(secret, Buffer.from('{"password":"p"}'), 0o600);
    const s = statSync(secret);
    assert.deepEqual([s.uid, s.gid, s.mode & 0o7777], [NOBODY, NOBODY, 0o600]);
    assert.equal(readFileSync(secret, 'utf8'), '{"password":"p"}');
  });

  it('does not carry set-id bits over; a new file gets the given mode or 0644', async () => {
    const tool = join(dir, 'tool');
    writeFileSync(tool, 'a');
    chmodSync(tool, 0o4755);
    await writeFileAtomic(tool, 'b');
    assert.equal(statSync(tool).mode & 0o7777, 0o755);
    await writeFileAtomic(join(dir, 'new-private'), 'x', 0o600);
    assert.equal(statSync(join(dir, 'new-private')).mode & 0o7777, 0o600);
    await writeFileAtomic(join(dir, 'new-default'), 'y');
    const s = statSync(join(dir, 'new-default'));
    assert.equal(s.mode & 0o7777, 0o644);
    assert.equal(s.uid, process.getuid?.());
  });
});
