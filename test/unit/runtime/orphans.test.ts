import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { createLogger } from '../../../src/core/log.ts';
import { ownerToken } from '../../../src/runtime/owner.ts';
import { WorkflowRuntime } from '../../../src/runtime/runtime.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { everyStep } from '../../fixtures/steps.ts';

describe('orphan detection survives reboots and reused pids', () => {
  it('a workflow whose owner pid is alive but belongs to another boot or a newer process is an orphan', () => {
    const store = new StateDb(':memory:');
    const row = (id: string, ownerPid: number, token: string | null) =>
      store.create({
        id,
        kind: 'backup',
        machineVersion: 1,
        status: 'active',
        state: 'streaming',
        snapshot: {},
        input: { profilePath: `/p/${id}` },
        commandId: null,
        ownerPid,
        ownerToken: token,
      });
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    const parent = process.ppid;
    const [, , parentStart] = ownerToken(parent).split(':');
    // pid 1 (or the parent) is alive on this machine; only the token can tell these owners are gone.
    row('after-reboot', parent, `${boot.replace(/^./, (c) => (c === 'a' ? 'b' : 'a'))}:${parent}:${parentStart}`);
    row('pid-reused', parent, `${boot}:${parent}:${Number(parentStart) + 12345}`);
    row('owner-alive', parent, ownerToken(parent));
    row('old-row-alive-pid', parent, null);
    const runtime = new WorkflowRuntime({ stateDb: store, env: {}, log: createLogger({ level: 'error', sink: () => {} }), steps: everyStep(null as never) });
    assert.deepEqual(
      runtime
        .orphans()
        .map((r) => r.id)
        .sort(),
      ['after-reboot', 'pid-reused'],
    );
  });

  it('migrates a database written before owner tokens', () => {
    const store = new StateDb(':memory:');
    store.db.exec('ALTER TABLE workflows DROP COLUMN owner_token');
    const again = Object.create(StateDb.prototype) as StateDb;
    Object.assign(again, { db: store.db });
    (again as unknown as { migrate(): void }).migrate();
    const cols = (store.db.prepare('PRAGMA table_info(workflows)').all() as { name: string }[]).map((c) => c.name);
    assert.ok(cols.includes('owner_token'));
  });
});
