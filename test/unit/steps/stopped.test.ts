import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { createLogger } from '../../../src/core/log.ts';
import type { RestoreStepInput } from '../../../src/machines/restore.machine.ts';
import { restoreDataDirs } from '../../../src/steps/restore/restoreDataDirs.ts';
import type { RestoreDeps } from '../../../src/steps/restore/restoreDeps.ts';
import { swapDataDirs } from '../../../src/steps/restore/swapDataDirs.ts';
import { scratch } from '../../helpers/tmp.ts';

/** A node's directories mid-restore on disk: live data (the restored files) and the old data moved aside. */
function midRestore(cqlPort: number) {
  const root = scratch('cbr-stopped-');
  const dirs = ['data', 'commitlog', 'saved_caches', 'hints'].map((d) => join(root, d));
  for (const d of dirs) {
    mkdirSync(d);
    mkdirSync(`${d}.cbr-old-w1`);
    writeFileSync(join(`${d}.cbr-old-w1`, 'old.txt'), 'old');
    writeFileSync(join(d, 'live.txt'), 'live');
  }
  const profile = {
    name: 'n',
    dataDirs: [dirs[0]],
    commitlogDir: dirs[1],
    savedCachesDir: dirs[2],
    hintsDir: dirs[3],
    cassandraYaml: join(root, 'cassandra.yaml'),
    cql: { host: '127.0.0.1', port: cqlPort },
    jmx: { host: '127.0.0.1', port: 1 },
  } as unknown as Profile;
  return { root, dirs, profile };
}

function deps(profile: Profile, running: boolean): RestoreDeps {
  return {
    profile,
    service: { isRunning: async () => running, start: async () => {}, stop: async () => {} },
    log: createLogger({ level: 'error', sink: () => {} }),
  } as unknown as RestoreDeps;
}

const input = { ctx: { workflowId: 'w1' }, plan: {} } as unknown as RestoreStepInput;
const signal = new AbortController().signal;

describe('stopped means stopped before directories move', () => {
  it('rollback leaves the live directories alone while the node still runs', async () => {
    const { dirs, profile } = midRestore(1);
    await assert.rejects(restoreDataDirs(deps(profile, true), input, signal), { code: 'CBR_ERR_SERVICE_CONTROL_FAILED' });
    for (const d of dirs) assert.equal(readFileSync(join(d, 'live.txt'), 'utf8'), 'live', `${d} untouched`);
  });

  it('…and while something still answers on its CQL port, whatever the pid file says', async () => {
    const srv = createServer().listen(0, '127.0.0.1');
    await new Promise((r) => srv.once('listening', r));
    try {
      const { dirs, profile } = midRestore((srv.address() as { port: number }).port);
      await assert.rejects(restoreDataDirs(deps(profile, false), input, signal), /still answers on CQL/);
      await assert.rejects(swapDataDirs(deps(profile, false), input, signal), /still answers on CQL/);
      for (const d of dirs) assert.ok(existsSync(join(d, 'live.txt')));
    } finally {
      srv.close();
    }
  });

  it('puts the old directories back once the node is down', async () => {
    const { dirs, profile } = midRestore(1);
    await restoreDataDirs(deps(profile, false), input, signal);
    for (const d of dirs) {
      assert.equal(readFileSync(join(d, 'old.txt'), 'utf8'), 'old');
      assert.ok(!existsSync(`${d}.cbr-old-w1`));
    }
  });
});
