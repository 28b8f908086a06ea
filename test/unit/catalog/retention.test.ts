import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { applyPolicy, bucketOf, isoWeek, parsePolicy, type RetentionCandidate, withinCutoff } from '../../../src/catalog/retention.ts';
import { CbrError } from '../../../src/core/errors.ts';

const HOST = 'host-a';

/**
 * 30 backups of one host over 40 days, 2026-01-01 (a Thursday) to 2026-02-09, all times UTC. ISO weeks: W01 ends
 * Sun 01-04, W02 01-05..01-11, W03 01-12..01-18, W04 01-19..01-25, W05 01-26..02-01, W06 02-02..02-08, W07 from
 * 02-09. Edges on purpose: b14 is Sunday 23:30 (W04) and b15 Monday 00:30 (W05); b18 is the last minute of January
 * and b19 the first of February (but both W05); b24 and b25 share an hour; days 01-04, 01-07, ... have none.
 */
const TABLE: [string, string][] = [
  ['b01', '2026-01-01T02:00'],
  ['b02', '2026-01-01T14:00'],
  ['b03', '2026-01-02T02:00'],
  ['b04', '2026-01-03T02:00'],
  ['b05', '2026-01-05T02:00'],
  ['b06', '2026-01-06T02:00'],
  ['b07', '2026-01-08T02:00'],
  ['b08', '2026-01-10T02:00'],
  ['b09', '2026-01-12T02:00'],
  ['b10', '2026-01-14T02:00'],
  ['b11', '2026-01-17T02:00'],
  ['b12', '2026-01-19T02:00'],
  ['b13', '2026-01-21T02:00'],
  ['b14', '2026-01-25T23:30'],
  ['b15', '2026-01-26T00:30'],
  ['b16', '2026-01-28T02:00'],
  ['b17', '2026-01-31T02:00'],
  ['b18', '2026-01-31T23:59'],
  ['b19', '2026-02-01T00:01'],
  ['b20', '2026-02-02T02:00'],
  ['b21', '2026-02-03T02:00'],
  ['b22', '2026-02-04T02:00'],
  ['b23', '2026-02-05T02:00'],
  ['b24', '2026-02-06T02:00'],
  ['b25', '2026-02-06T02:30'],
  ['b26', '2026-02-06T14:00'],
  ['b27', '2026-02-07T02:00'],
  ['b28', '2026-02-08T02:00'],
  ['b29', '2026-02-09T02:00'],
  ['b30', '2026-02-09T03:00'],
];

const backups: RetentionCandidate[] = TABLE.map(([id, t]) => ({ id, created: `${t}:00.000Z`, hostId: HOST, sourceInstance: 'alpha' }));
const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, i) => `b${String(from + i).padStart(2, '0')}`);

type Opts = Parameters<typeof parsePolicy>[0];

/** Each policy with the backups it keeps and why, worked out by hand from the table above (newest first). */
const POLICIES: { policy: Opts; keep: Record<string, string[]> }[] = [
  { policy: { last: '5' }, keep: { b30: ['last'], b29: ['last'], b28: ['last'], b27: ['last'], b26: ['last'] } },
  // One per hour: b25 (02:30) stands for the hour of b24 (02:00).
  { policy: { hourly: '6' }, keep: { b30: ['hourly'], b29: ['hourly'], b28: ['hourly'], b27: ['hourly'], b26: ['hourly'], b25: ['hourly'] } },
  // The 7 latest days that have a backup, the newest of each: 02-09 b30, 02-08 b28, 02-07 b27, 02-06 b26, 02-05..02-03.
  { policy: { daily: '7' }, keep: { b30: ['daily'], b28: ['daily'], b27: ['daily'], b26: ['daily'], b23: ['daily'], b22: ['daily'], b21: ['daily'] } },
  // W07 b30, W06 b28, W05 b19 (Sunday 02-01 ends W05, so b15..b18 are not its newest), W04 b14 (Sunday 23:30).
  { policy: { weekly: '4' }, keep: { b30: ['weekly'], b28: ['weekly'], b19: ['weekly'], b14: ['weekly'] } },
  // More weeks asked for than there are (W01..W07): the newest of each.
  {
    policy: { weekly: '10' },
    keep: { b30: ['weekly'], b28: ['weekly'], b19: ['weekly'], b14: ['weekly'], b11: ['weekly'], b08: ['weekly'], b04: ['weekly'] },
  },
  // February's newest and January's (b18, a minute before February); a third month does not exist.
  { policy: { monthly: '3' }, keep: { b30: ['monthly'], b18: ['monthly'] } },
  // Newest is 02-09 03:00, so after 02-02 03:00: b21..b30 (b20 at 02:00 that day is before).
  { policy: { within: '7d' }, keep: Object.fromEntries(range(21, 30).map((id) => [id, ['within 7d']])) },
  // A calendar month before 02-09 03:00 is 01-09 03:00: b08 (01-10) and after.
  { policy: { within: '1m' }, keep: Object.fromEntries(range(8, 30).map((id) => [id, ['within 1m']])) },
  // 36 hours before 02-09 03:00 is 02-07 15:00: b28, b29, b30.
  { policy: { within: '36h' }, keep: { b30: ['within 36h'], b29: ['within 36h'], b28: ['within 36h'] } },
  // Reasons add up: last 2 (b30, b29), daily 3 (b30, b28, b27), weekly 3 (b30, b28, b19), monthly 2 (b30, b18).
  {
    policy: { last: '2', daily: '3', weekly: '3', monthly: '2' },
    keep: {
      b30: ['last', 'daily', 'weekly', 'monthly'],
      b29: ['last'],
      b28: ['daily', 'weekly'],
      b27: ['daily'],
      b19: ['weekly'],
      b18: ['monthly'],
    },
  },
  // Yearly keeps 2026's newest; within 2d: after 02-07 03:00, so b28..b30 (b27 is 02-07 02:00).
  { policy: { yearly: '1', within: '2d' }, keep: { b30: ['yearly', 'within 2d'], b29: ['within 2d'], b28: ['within 2d'] } },
  // Everything, when the rules reach back past the first backup.
  { policy: { last: '100' }, keep: Object.fromEntries(range(1, 30).map((id) => [id, ['last']])) },
];

describe('retention policies (restic semantics, UTC buckets, ISO weeks)', () => {
  it('the table: which of 30 backups across 40 days each policy keeps, and why', () => {
    assert.equal(backups.length, 30);
    assert.equal((Date.parse(backups[29]!.created) - Date.parse(backups[0]!.created)) / 86_400_000 < 40, true);
    for (const { policy, keep } of POLICIES) {
      const decisions = applyPolicy(backups, parsePolicy(policy), 'host');
      assert.equal(decisions.length, 30);
      const kept = Object.fromEntries(decisions.filter((d) => d.keep).map((d) => [d.id, d.reasons]));
      assert.deepEqual(kept, keep, JSON.stringify(policy));
      for (const d of decisions.filter((x) => !x.keep)) assert.deepEqual(d.reasons, []);
    }
  });

  it('the order of the input does not matter', () => {
    const shuffled = [...backups].reverse();
    shuffled.push(shuffled.shift()!);
    const a = applyPolicy(backups, parsePolicy({ daily: '5', weekly: '2' }), 'host');
    const b = applyPolicy(shuffled, parsePolicy({ daily: '5', weekly: '2' }), 'host');
    assert.deepEqual(b, a);
  });

  it('each group has its own policy: per host, or per source instance', () => {
    const other = [
      { id: 'x1', created: '2026-01-01T00:00:00.000Z', hostId: 'host-b', sourceInstance: 'alpha' },
      { id: 'x2', created: '2026-01-02T00:00:00.000Z', hostId: 'host-b', sourceInstance: 'beta' },
    ];
    const byHost = applyPolicy([...backups, ...other], parsePolicy({ last: '1' }), 'host');
    assert.deepEqual(
      byHost.filter((d) => d.keep).map((d) => [d.group, d.id]),
      [
        ['host-a', 'b30'],
        ['host-b', 'x2'],
      ],
    );
    const byInstance = applyPolicy([...backups, ...other], parsePolicy({ last: '1' }), 'instance');
    assert.deepEqual(
      byInstance.filter((d) => d.keep).map((d) => [d.group, d.id]),
      [
        ['alpha', 'b30'],
        ['beta', 'x2'],
      ],
    );
  });

  it('buckets: UTC days and months, ISO weeks across a year end', () => {
    assert.equal(bucketOf('daily', new Date('2026-01-31T23:59:00Z')), '2026-01-31');
    assert.equal(bucketOf('monthly', new Date('2026-02-01T00:01:00Z')), '2026-02');
    assert.equal(bucketOf('hourly', new Date('2026-02-06T02:30:00Z')), '2026-02-06T02');
    assert.deepEqual(isoWeek(new Date('2026-01-01T00:00:00Z')), { year: 2026, week: 1 });
    assert.deepEqual(isoWeek(new Date('2025-12-29T00:00:00Z')), { year: 2026, week: 1 });
    assert.deepEqual(isoWeek(new Date('2025-12-28T23:59:00Z')), { year: 2025, week: 52 });
    assert.deepEqual(isoWeek(new Date('2021-01-03T12:00:00Z')), { year: 2020, week: 53 });
    assert.equal(bucketOf('weekly', new Date('2026-01-25T23:30:00Z')), '2026-W04');
    assert.equal(bucketOf('weekly', new Date('2026-01-26T00:30:00Z')), '2026-W05');
    assert.equal(new Date(withinCutoff(new Date('2026-03-31T00:00:00Z'), parsePolicy({ within: '1m' }).within!)).toISOString(), '2026-03-03T00:00:00.000Z');
  });

  it('refuses a policy that keeps nothing, and malformed counts and durations, with CBR_ERR_PRUNE_POLICY_INVALID', () => {
    const refused = (o: Opts) =>
      assert.throws(
        () => parsePolicy(o),
        (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_PRUNE_POLICY_INVALID',
        JSON.stringify(o),
      );
    refused({});
    for (const n of ['0', '-1', '1.5', 'x', '', '1e3', '0x10', '1234567']) refused({ daily: n });
    for (const d of ['', '7', '7x', '0d', '0y0m', 'd', '1d2y', '7 d', '-1d']) refused({ within: d });
    assert.deepEqual(parsePolicy({ last: '3', within: '1y2m3d4h' }), { last: 3, within: { years: 1, months: 2, days: 3, hours: 4, text: '1y2m3d4h' } });
    assert.throws(() => applyPolicy(backups, {}, 'host'), /keeps nothing/);
  });
});
