import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { checkPackEntries, entryProblem } from '../../../src/archive/entries.ts';
import { placeTables } from '../../../src/cassandra/placement.ts';

const T = 'ks/users-0123456789abcdef0123456789abcdef';

describe('archive entry names: one check at pack and unpack time', () => {
  it('takes every file a Cassandra 5.0 snapshot holds', () => {
    for (const file of [
      'nb-1-big-Data.db',
      'oa-12-big-Index.db',
      'da-3-bti-Partitions.db',
      'da-3-bti-Rows.db',
      'da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-Data.db',
      'da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-SAI+aa+GroupComplete.db',
      'da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-SAI+aa+users_email_idx+TermsData.db',
      'nb-1-big-SAI+aa+Users_Mixed_idx+Meta.db',
      'nb-1-big-Digest.crc32',
      'nb-1-big-TOC.txt',
      'manifest.json',
      'schema.cql',
    ]) {
      assert.equal(entryProblem(`${T}/${file}`), null, file);
    }
    assert.equal(entryProblem(`${T}/.users_by_city/nb-1-big-Data.db`), null, 'legacy secondary index subdirectory');
    assert.equal(entryProblem('Ks_1/MixedCaseTable-0123456789abcdef0123456789abcdef/nb-1-big-Data.db'), null, 'quoted mixed-case names');
  });

  it('refuses what a data directory never holds', () => {
    for (const bad of [
      '/etc/passwd',
      `${T}/../../x`,
      `${T}/./x`,
      'ks/users-0123/nb-1-big-Data.db',
      `${T}/snapshots/tag/nb-1-big-Data.db`,
      `${T}/.idx/.deeper/x`,
      `${T}/a\\b`,
      `${T}/-leading-dash`,
      `${T}/name with space`,
    ]) {
      assert.notEqual(entryProblem(bad), null, bad);
    }
  });

  it('at pack time a refused or duplicate name stops the backup with its own code', () => {
    assert.doesNotThrow(() => checkPackEntries([`${T}/nb-1-big-Data.db`, `${T}/manifest.json`]));
    assert.throws(
      () => checkPackEntries([`${T}/a b`]),
      (e: Error & { code?: string }) => e.code === 'CBR_ERR_BACKUP_UNRESTORABLE',
    );
    assert.throws(() => checkPackEntries([`${T}/x.db`, `${T}/x.db`]), /same archive path/);
  });
});

describe('placing tables in data directories', () => {
  it('spreads tables over every directory by free space, none overfilled', () => {
    const tables = new Map<string, number>(Array.from({ length: 30 }, (_, i) => [`ks/t${i}-x`, 1000 + i * 100]));
    const placement = placeTables(tables, [1e6, 1e6, 1e6]);
    const load = [0, 0, 0];
    for (const [k, d] of Object.entries(placement)) load[d]! += tables.get(k)!;
    assert.ok(
      load.every((l) => l > 0),
      `all three used: ${load}`,
    );
    assert.ok(Math.max(...load) - Math.min(...load) <= 2900, `balanced: ${load}`);
    const uneven = placeTables(
      new Map([
        ['a', 500],
        ['b', 400],
        ['c', 300],
      ]),
      [600, 10_000],
    );
    assert.equal(uneven['a'], 1, 'the largest table to the roomiest directory');
  });

  it('refuses a table that fits nowhere', () => {
    assert.throws(
      () => placeTables(new Map([['big', 5000]]), [1000, 2000]),
      (e: Error & { code?: string }) => e.code === 'CBR_ERR_INSUFFICIENT_SPACE',
    );
  });
});
