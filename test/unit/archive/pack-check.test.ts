import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import type { StepInput } from '../../../machines/backup.machine.ts';
import { createLogger } from '../../../src/log.ts';
import type { Profile } from '../../../src/profile.ts';
import type { BackupDeps } from '../../../src/steps/deps.ts';
import { streamArchive } from '../../../src/steps/streamArchive.ts';
import { openStore } from '../../../src/storage/index.ts';

/** A data directory on disk holding snapshot `tag` of one table, with the given extra file names in it. */
function dataDirWith(tag: string, extra: string[]): string {
  const data = mkdtempSync(join(tmpdir(), 'cbr-pack-check-'));
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
    const storeRoot = mkdtempSync(join(tmpdir(), 'cbr-pack-store-'));
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
    const storeRoot = mkdtempSync(join(tmpdir(), 'cbr-pack-store-'));
    const data = dataDirWith('b2', ['da-3gxk_0s9t_1g4xs2f6hqs8cba2jr-bti-SAI+aa+users_email+TermsData.db']);
    const out = await streamArchive(deps(data, storeRoot), input('b2'), new AbortController().signal);
    assert.equal(out.files, 4);
  });
});
