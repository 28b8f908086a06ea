import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { createLogger } from '../../../src/core/log.ts';
import type { StepInput } from '../../../src/machines/backup.machine.ts';
import { deleteBackupObjects } from '../../../src/steps/backup/deleteBackupObjects.ts';
import { streamArchive } from '../../../src/steps/backup/streamArchive.ts';
import type { BackupDeps } from '../../../src/steps/nodeDeps.ts';
import { openStore } from '../../../src/storage/open.ts';
import { scratch } from '../../helpers/tmp.ts';

/** A data directory on disk holding snapshot `tag` of one table, with the given extra file names in it. */
function dataDirWith(tag: string, extra: string[]): string {
  const data = scratch('cbr-pack-check-');
  const snap = join(data, 'ks', 'users-0123456789abcdef0123456789abcdef', 'snapshots', tag);
  mkdirSync(snap, { recursive: true });
  for (const f of ['da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-Data.db', 'da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-SAI+aa+GroupComplete.db', 'manifest.json', ...extra]) {
    writeFileSync(join(snap, f), 'x');
  }
  return data;
}

function deps(dataDir: string, storeRoot: string): BackupDeps {
  return {
    profile: { name: 'p', dataDirs: [dataDir] } as Profile,
    store: openStore({ driver: 'local', root: storeRoot, container: 'database_backups' }),
    key: null,
    log: createLogger({ level: 'error' }),
    onProgress: () => {},
  } as unknown as BackupDeps;
}

const input = (backupId: string): StepInput => ({ ctx: { backupId, compression: 'zstd', rateLimit: null } as StepInput['ctx'] });

describe('the restore’s entry check runs when the backup is packed', () => {
  it('a snapshot file a restore would refuse stops the backup, coded, with nothing stored', async () => {
    const storeRoot = scratch('cbr-pack-store-');
    const data = dataDirWith('b1', ['weird name.db']);
    await assert.rejects(streamArchive(deps(data, storeRoot), input('b1'), new AbortController().signal), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'CBR_ERR_BACKUP_UNRESTORABLE');
      assert.match(e.message, /weird name\.db/);
      return true;
    });
    const stored = readdirSync(storeRoot, { recursive: true }).filter((f) => String(f).includes('archive'));
    assert.deepEqual(stored, [], 'no archive object');
  });

  it('SAI (+) and UUID-named files pass and are stored', async () => {
    const storeRoot = scratch('cbr-pack-store-');
    const data = dataDirWith('b2', ['da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-SAI+aa+users_email+TermsData.db']);
    const out = await streamArchive(deps(data, storeRoot), input('b2'), new AbortController().signal);
    assert.equal(out.files, 4);
  });

  it('a reused id: an archive another backup recorded is never overwritten, nor purged by the compensation', async () => {
    const storeRoot = scratch('cbr-pack-store-');
    const d = deps(dataDirWith('b3', []), storeRoot);
    const other = Buffer.from('another backup');
    await d.store.put('b3/archive.tar.zst', Readable.from([other]));
    await d.store.put('b3/backup.json', Readable.from([Buffer.from('{}')]));
    await assert.rejects(streamArchive(d, input('b3'), new AbortController().signal), { code: 'CBR_ERR_BACKUP_EXISTS' });
    assert.deepEqual(await buffer(await d.store.get('b3/archive.tar.zst')), other, 'the other archive is untouched');
    const ctx = { ...input('b3').ctx, error: { code: 'CBR_ERR_BACKUP_EXISTS', message: '', retryable: false } };
    await deleteBackupObjects(d, { ctx } as never, new AbortController().signal);
    assert.ok(await d.store.head('b3/backup.json'), 'the compensation leaves the other backup alone');
  });

  it('a re-run after a crash replaces its own unrecorded archive', async () => {
    const storeRoot = scratch('cbr-pack-store-');
    const d = deps(dataDirWith('b4', []), storeRoot);
    await d.store.put('b4/archive.tar.zst', Readable.from([Buffer.from('half of an earlier attempt')]));
    const out = await streamArchive(d, input('b4'), new AbortController().signal);
    assert.equal((await d.store.head('b4/archive.tar.zst'))?.size, out.size);
  });
});
