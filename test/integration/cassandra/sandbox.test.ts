import assert from 'node:assert/strict';
import { existsSync, statSync } from 'node:fs';
import { describe, it } from 'node:test';
import type { CliIO } from '../../../src/cli/io.ts';
import { main } from '../../../src/cli/main.ts';
import { instanceDir } from '../../../src/sandbox/sandbox.ts';
import { testEnv } from '../../helpers/env.ts';

function io(): CliIO & { out: string; err: string } {
  const o = { out: '', err: '', env: testEnv, isTTY: false } as CliIO & { out: string; err: string };
  o.stdout = (t) => {
    o.out += t;
  };
  o.stderr = (t) => {
    o.err += t;
  };
  return o;
}

describe('cbr sandbox lifecycle', () => {
  it('starts, reports, stops and removes a real node', async () => {
    const start = io();
    assert.equal(await main(['sandbox', 'start', 'lifecycle', '--cluster-name', 'Life Cycle', '--json'], start), 0, start.err);
    const started = JSON.parse(start.out);
    assert.equal(started.running, true);
    assert.equal(started.clusterName, 'Life Cycle');
    assert.match(started.releaseVersion, /^5\.0\./);
    assert.ok(existsSync(started.profilePath));
    const creds = JSON.parse(await import('node:fs/promises').then((f) => f.readFile(started.profilePath, 'utf8'))).cql.credentialsFile;
    assert.equal(statSync(creds).mode & 0o777, 0o600, 'credentials file is 0600');

    const again = io();
    assert.equal(await main(['sandbox', 'start', 'lifecycle', '--json'], again), 0, 'start is idempotent');
    assert.equal(JSON.parse(again.out).pid, started.pid);

    const status = io();
    assert.equal(await main(['sandbox', 'status', 'lifecycle'], status), 0);
    assert.match(status.out, /lifecycle: running .*Cassandra 5\.0\./);

    const stop = io();
    assert.equal(await main(['sandbox', 'stop', 'lifecycle'], stop), 0);
    const stopped = io();
    assert.equal(await main(['sandbox', 'status', 'lifecycle', '--json'], stopped), 1);
    assert.equal(JSON.parse(stopped.out).running, false);

    assert.equal(await main(['sandbox', 'rm', 'lifecycle'], io()), 0);
    assert.ok(!existsSync(instanceDir('lifecycle', testEnv)));
    const missing = io();
    assert.equal(await main(['sandbox', 'status', 'lifecycle'], missing), 4);
    assert.match(missing.err, /CBR_ERR_SANDBOX_NOT_FOUND/);
  });

  it('refuses a bad name with a coded error', async () => {
    const bad = io();
    assert.equal(await main(['sandbox', 'start', '../etc'], bad), 2);
    assert.match(bad.err, /CBR_ERR_INVALID_ARGUMENT/);
  });
});
