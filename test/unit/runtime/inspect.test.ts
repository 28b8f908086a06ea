import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, it } from 'node:test';
import { WebSocketServer } from 'ws';
import type { CbrError } from '../../../src/core/errors.ts';
import { createLogger } from '../../../src/core/log.ts';
import { createInspection } from '../../../src/runtime/inspect.ts';
import { WorkflowRuntime } from '../../../src/runtime/runtime.ts';
import { StateDb } from '../../../src/state/stateDb.ts';
import { instantSteps as steps } from '../../fixtures/steps.ts';

describe('--inspect: XState inspection events to a Stately inspector over WebSocket', () => {
  it('sends the actor, its events and every snapshot of a workflow to the inspector', async () => {
    const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
    await once(server, 'listening');
    const received: { type: string; snapshot?: { value?: unknown; status?: string } }[] = [];
    server.on('connection', (ws) => ws.on('message', (data) => received.push(JSON.parse(String(data)))));
    const inspection = createInspection(`ws://127.0.0.1:${(server.address() as AddressInfo).port}`);
    try {
      const runtime = new WorkflowRuntime({
        stateDb: new StateDb(':memory:'),
        env: {},
        log: createLogger({ level: 'error', sink: () => {} }),
        steps,
        inspect: inspection.inspect,
      });
      const storage = { driver: 'local' as const, root: '/nonexistent', container: 'c' };
      const run = await runtime.startBackup({
        workflowId: 'inspected',
        backupId: 'inspected',
        name: 'n',
        description: '',
        profilePath: '/p/profile.json',
        storage,
        compression: 'zstd',
        keySource: null,
        minFreePercent: 10,
        rateLimit: null,
        startedAt: new Date().toISOString(),
      });
      assert.equal((await run!.done).state, 'completed');
      const deadline = Date.now() + 10_000;
      const values = () => received.filter((e) => e.type === '@xstate.snapshot').map((e) => e.snapshot?.value);
      while (!values().includes('completed') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      assert.ok(
        received.some((e) => e.type === '@xstate.actor'),
        'the actor is announced',
      );
      assert.ok(
        received.some((e) => e.type === '@xstate.event'),
        'its events are sent',
      );
      for (const state of ['verifyingNode', 'snapshotting', 'streaming', 'recording', 'completed']) assert.ok(values().includes(state), `snapshot in ${state}`);
    } finally {
      inspection.stop();
      server.close();
    }
  });

  it('refuses anything but a ws:// or wss:// URL', () => {
    for (const bad of ['http://127.0.0.1:1', 'not a url', 'file:///etc/passwd']) {
      assert.throws(
        () => createInspection(bad),
        (err: CbrError) => err.code === 'CBR_ERR_INVALID_ARGUMENT',
      );
    }
  });
});
