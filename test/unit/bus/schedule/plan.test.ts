import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { commandIdFor, compileCron, decide, dueInstant, MISSED_COUNT_CAP, nextInstant } from '../../../../src/bus/schedule/plan.ts';
import { ID } from '../../../../src/bus/schemas/fields.ts';
import { CbrError } from '../../../../src/core/errors.ts';

const at = (iso: string) => new Date(iso);

describe('schedule plan (pure: every function takes now)', () => {
  it('computes the next instant, with seconds when the expression has six fields, in the given zone', () => {
    const daily = compileCron('j', '0 2 * * *', 'UTC');
    assert.equal(nextInstant(daily, at('2026-11-30T14:00:00Z'))?.toISOString(), '2026-12-01T02:00:00.000Z');
    const every15s = compileCron('j', '*/15 * * * * *', 'UTC');
    assert.equal(nextInstant(every15s, at('2026-11-30T14:00:15Z'))?.toISOString(), '2026-11-30T14:00:30.000Z', 'strictly after');
    const paris = compileCron('j', '0 2 * * *', 'Europe/Paris');
    assert.equal(nextInstant(paris, at('2026-11-30T14:00:00Z'))?.toISOString(), '2026-12-01T01:00:00.000Z', '02:00 CET is 01:00 UTC');
  });

  it('DST: a fixed time skipped by spring-forward runs after the gap that day; one repeated in autumn runs once', () => {
    const paris = compileCron('j', '30 2 * * *', 'Europe/Paris');
    const spring = [nextInstant(paris, at('2026-03-28T12:00:00Z'))!];
    spring.push(nextInstant(paris, spring[0]!)!);
    // 29 March 2026: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist and the run is at 03:00 CEST (01:00 UTC).
    assert.deepEqual(
      spring.map((d) => d.toISOString()),
      ['2026-03-29T01:00:00.000Z', '2026-03-30T00:30:00.000Z'],
    );
    // 25 October 2026: 02:30 happens at 00:30 UTC (CEST) and again at 01:30 UTC (CET); it runs at the first only.
    const autumn = nextInstant(paris, at('2026-10-24T12:00:00Z'))!;
    assert.equal(autumn.toISOString(), '2026-10-25T00:30:00.000Z');
    assert.equal(nextInstant(paris, autumn)?.toISOString(), '2026-10-26T01:30:00.000Z');
  });

  it('refuses a bad expression or an unknown zone with CBR_ERR_CONFIG naming the job', () => {
    for (const expr of ['61 * * * *', 'x', '* * * * * * *', '', '0 0 31 2 *']) {
      assert.throws(
        () => compileCron('nightly', expr, 'UTC'),
        (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_CONFIG' && e.message.includes('schedule job nightly: bad cron expression'),
        expr,
      );
    }
    assert.throws(
      () => compileCron('nightly', '0 2 * * *', 'Mars/Olympus'),
      (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_CONFIG' && /unknown time zone "Mars\/Olympus"/.test(e.message),
    );
  });

  it('finds the latest due instant and how many were missed: one run for many missed instants', () => {
    const everyMinute = compileCron('j', '* * * * *', 'UTC');
    assert.equal(dueInstant(everyMinute, at('2026-11-30T14:00:00Z'), at('2026-11-30T14:00:59.999Z')), null, 'none due yet');
    assert.deepEqual(dueInstant(everyMinute, at('2026-11-30T14:00:00Z'), at('2026-11-30T14:01:00Z')), { instant: at('2026-11-30T14:01:00Z'), count: 1 });
    // Down from 14:00:30 to 14:07:10: 14:01 … 14:07 were missed; the run is for 14:07.
    assert.deepEqual(dueInstant(everyMinute, at('2026-11-30T14:00:30Z'), at('2026-11-30T14:07:10Z')), { instant: at('2026-11-30T14:07:00Z'), count: 7 });
    assert.equal(dueInstant(everyMinute, at('2026-11-30T14:07:00Z'), at('2026-11-30T14:07:00Z')), null, 'the instant taken last is not due again');
    assert.equal(dueInstant(everyMinute, at('2026-11-30T14:08:00Z'), at('2026-11-30T14:07:00Z')), null, 'a clock stepped back runs nothing');
    const everySecond = compileCron('j', '* * * * * *', 'UTC');
    const day = dueInstant(everySecond, at('2026-11-29T00:00:00Z'), at('2026-11-30T00:00:00Z'));
    assert.equal(day?.instant.toISOString(), '2026-11-30T00:00:00.000Z');
    assert.equal(day?.count, MISSED_COUNT_CAP, 'the count is capped');
  });

  it('never overlaps: a due instant is skipped while the previous run is active, with the reason', () => {
    const due = at('2026-11-30T14:01:00Z');
    assert.deepEqual(decide(due, null), { run: true });
    assert.deepEqual(decide(due, { commandId: 'j-1', active: false }), { run: true });
    const skip = decide(due, { commandId: 'j-20261130T140000Z', active: true });
    assert.equal(skip.run, false);
    assert.match(skip.run ? '' : skip.reason, /previous run j-20261130T140000Z is still active at 2026-11-30T14:01:00.000Z/);
  });

  it('derives a valid, deterministic command id from the job and the instant', () => {
    const id = commandIdFor('a'.repeat(40), at('2026-11-30T14:01:05.000Z'));
    assert.equal(id, `${'a'.repeat(40)}-20261130T140105Z`);
    assert.match(id, ID);
    assert.equal(commandIdFor('j', at('2026-11-30T14:01:05Z')), commandIdFor('j', at('2026-11-30T14:01:05.000Z')));
    assert.notEqual(commandIdFor('j', at('2026-11-30T14:01:05Z')), commandIdFor('j', at('2026-11-30T14:01:06Z')));
  });
});
