import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseSchedule } from '../../../../src/bus/schedule/config.ts';
import { Scheduler } from '../../../../src/bus/schedule/scheduler.ts';
import { createLogger } from '../../../../src/core/log.ts';
import { StateDb } from '../../../../src/state/stateDb.ts';

const [job] = parseSchedule({ jobs: [{ name: 'j', cron: '* * * * *', command: { type: 'backup.create', payload: { name: 'every-minute' } } }] }, 'node-1');

/** A scheduler on an injected clock; its timers are cleared at once, the test calls tick() itself. */
function harness(store: StateDb, clock: { now: Date }, active: Set<string>, fed: Record<string, unknown>[], feedResult = true) {
  const lines: string[] = [];
  const scheduler = new Scheduler({
    jobs: [job!],
    hostId: 'node-1',
    store,
    log: createLogger({ level: 'info', sink: (l) => lines.push(l) }),
    feed: async (c) => {
      fed.push(c);
      return feedResult;
    },
    isActive: (id) => active.has(id),
    now: () => clock.now,
  });
  return { scheduler, lines };
}

describe('scheduler (injected clock, in-memory state database)', () => {
  it('runs each instant once with a deterministic id; after downtime, one catch-up run for the latest missed instant', async () => {
    const store = new StateDb(':memory:');
    const clock = { now: new Date('2026-11-30T14:00:30Z') };
    const fed: Record<string, unknown>[] = [];
    const first = harness(store, clock, new Set(), fed);
    first.scheduler.start();
    first.scheduler.stop();
    assert.equal(fed.length, 0, 'nothing is due when the schedule is first armed');
    clock.now = new Date('2026-11-30T14:01:00.004Z');
    assert.deepEqual(first.scheduler.tick(job!), { instant: '2026-11-30T14:01:00.000Z', ran: true, missed: 0 });
    assert.equal(first.scheduler.tick(job!), null, 'the same instant is not run twice');
    await first.scheduler.settled();
    assert.deepEqual(fed, [
      { version: 1, id: 'j-20261130T140100Z', type: 'backup.create', host: 'node-1', issuedAt: '2026-11-30T14:01:00.000Z', payload: { name: 'every-minute' } },
    ]);
    assert.equal(store.scheduleRun('j')?.lastOutcome, 'started');

    // Down from 14:01:10 to 14:05:20: 14:02 … 14:05 were missed; one run, for 14:05, labelled a catch-up.
    clock.now = new Date('2026-11-30T14:05:20Z');
    const second = harness(store, clock, new Set(), fed);
    second.scheduler.start();
    second.scheduler.stop();
    await second.scheduler.settled();
    assert.deepEqual(
      fed.map((c) => c['id']),
      ['j-20261130T140100Z', 'j-20261130T140500Z'],
    );
    const catchUp = second.lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => String(l['msg']).startsWith('catch-up run'));
    assert.equal(catchUp?.['missedInstants'], 4);
    assert.equal(catchUp?.['commandId'], 'j-20261130T140500Z');
    // A third start in the same minute: nothing was missed.
    const third = harness(store, clock, new Set(), fed);
    third.scheduler.start();
    third.scheduler.stop();
    assert.equal(fed.length, 2);
    store.close();
  });

  it('never overlaps: an instant due while the previous run is active is skipped (with its reason), the next one runs', async () => {
    const store = new StateDb(':memory:');
    const clock = { now: new Date('2026-11-30T14:00:30Z') };
    const fed: Record<string, unknown>[] = [];
    const active = new Set<string>();
    const { scheduler, lines } = harness(store, clock, active, fed);
    scheduler.start();
    scheduler.stop();
    clock.now = new Date('2026-11-30T14:01:00Z');
    scheduler.tick(job!);
    await scheduler.settled();
    active.add('j-20261130T140100Z');
    clock.now = new Date('2026-11-30T14:02:00Z');
    assert.deepEqual(scheduler.tick(job!), { instant: '2026-11-30T14:02:00.000Z', ran: false, missed: 0 });
    assert.equal(fed.length, 1, 'nothing fed while the run is active');
    assert.deepEqual(store.scheduleRun('j'), {
      job: 'j',
      armedAt: '2026-11-30T14:00:30.000Z',
      lastInstant: '2026-11-30T14:02:00.000Z',
      lastOutcome: 'skipped',
      runCommandId: 'j-20261130T140100Z',
    });
    const skipped = lines.map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l['msg'] === 'scheduled run skipped');
    assert.match(String(skipped?.['reason']), /previous run j-20261130T140100Z is still active/);
    active.clear();
    clock.now = new Date('2026-11-30T14:03:00Z');
    assert.equal(scheduler.tick(job!)?.ran, true);
    await scheduler.settled();
    assert.deepEqual(
      fed.map((c) => c['id']),
      ['j-20261130T140100Z', 'j-20261130T140300Z'],
    );
    store.close();
  });

  it('a run whose command is still being handled counts as active too', async () => {
    const store = new StateDb(':memory:');
    const clock = { now: new Date('2026-11-30T14:00:30Z') };
    let release = (_: boolean) => {};
    const scheduler = new Scheduler({
      jobs: [job!],
      hostId: 'node-1',
      store,
      log: createLogger({ level: 'error', sink: () => {} }),
      feed: () => new Promise<boolean>((r) => (release = r)),
      isActive: () => false,
      now: () => clock.now,
    });
    scheduler.start();
    scheduler.stop();
    clock.now = new Date('2026-11-30T14:01:00Z');
    assert.equal(scheduler.tick(job!)?.ran, true);
    clock.now = new Date('2026-11-30T14:02:00Z');
    assert.equal(scheduler.tick(job!)?.ran, false, 'the first command is not handled yet');
    release(false);
    await scheduler.settled();
    assert.equal(store.scheduleRun('j')?.lastOutcome, 'skipped', 'settling an older instant does not overwrite a later one');
    clock.now = new Date('2026-11-30T14:03:00Z');
    assert.equal(scheduler.tick(job!)?.ran, true);
    store.close();
  });

  it('an instant taken but never handled (a crash in between) is handed over again, with the same id, at the next start', async () => {
    const store = new StateDb(':memory:');
    store.armSchedule('j', '2026-11-30T14:00:30.000Z');
    assert.ok(store.takeInstant('j', '2026-11-30T14:01:00.000Z', 'pending', 'j-20261130T140100Z'));
    assert.equal(store.takeInstant('j', '2026-11-30T14:01:00.000Z', 'pending', 'j-20261130T140100Z'), false, 'an instant is taken once');
    const clock = { now: new Date('2026-11-30T14:01:20Z') };
    const fed: Record<string, unknown>[] = [];
    const { scheduler } = harness(store, clock, new Set(), fed);
    scheduler.start();
    scheduler.stop();
    await scheduler.settled();
    assert.deepEqual(
      fed.map((c) => c['id']),
      ['j-20261130T140100Z'],
    );
    assert.equal(store.scheduleRun('j')?.lastOutcome, 'started');
    store.close();
  });
});
