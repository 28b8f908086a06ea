import assert from 'node:assert/strict';
import { lstatSync, mkdirSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { describe, it } from 'node:test';
import { packArchive } from '../../../src/archive/pack.ts';
import { unpackArchive } from '../../../src/archive/unpack.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { removeTree } from '../../../src/core/removeTree.ts';
import type { RestoreStepInput } from '../../../src/machines/restore.machine.ts';
import { chownData } from '../../../src/steps/restore/chownData.ts';
import type { RestoreDeps } from '../../../src/steps/restore/restoreDeps.ts';
import { scratch } from '../../helpers/tmp.ts';

const NOBODY = 65534;
const asRoot = { skip: process.getuid?.() !== 0 ? 'needs root (chown)' : false };

function tree(): { root: string; files: { path: string; archivePath: string; size: number; keyspace: string; table: string }[] } {
  const root = scratch('cbr-own-src-');
  const files = ['ks/t-0123456789abcdef0123456789abcdef/nb-1-big-Data.db', 'ks/t-0123456789abcdef0123456789abcdef/.t_idx/nb-1-big-Data.db'].map(
    (archivePath) => {
      const path = join(root, archivePath.replace(/\//g, '_'));
      writeFileSync(path, 'x'.repeat(100));
      return { path, archivePath, size: 100, keyspace: 'ks', table: 't' };
    },
  );
  return { root, files };
}

describe('ownership is set as files are created, never by following the tree', () => {
  it('the unpack owns every directory and file it creates by the node user', asRoot, async () => {
    const { files } = tree();
    const { stream, result } = packArchive(files, { compression: 'zstd' });
    const archive = await buffer(stream);
    const staging = scratch('cbr-own-staging-');
    await unpackArchive(Readable.from([archive]), staging, { compression: 'zstd', sha256: (await result).sha256, owner: { uid: NOBODY, gid: NOBODY } });
    const walk = (dir: string): string[] =>
      readdirSync(dir).flatMap((n) => [join(dir, n), ...(statSync(join(dir, n)).isDirectory() ? walk(join(dir, n)) : [])]);
    const all = walk(staging);
    assert.equal(all.length, 5, 'ks, table dir, index dir and two files');
    for (const p of all) assert.equal(lstatSync(p).uid, NOBODY, `${p} owned by the node user`);
  });

  it('chownData does not follow a link planted in place of a restored directory', asRoot, async () => {
    const root = scratch('cbr-own-node-');
    const victim = join(root, 'victim');
    mkdirSync(victim);
    writeFileSync(join(victim, 'shadow'), 'root only');
    const dirs = ['data', 'commitlog', 'saved_caches'].map((d) => join(root, d));
    for (const d of dirs) mkdirSync(d);
    // The node's user swapped the fresh hints directory for a link to a directory of root's.
    const hints = join(root, 'hints');
    symlinkSync(victim, hints);
    const profile = {
      dataDirs: [dirs[0]],
      commitlogDir: dirs[1],
      savedCachesDir: dirs[2],
      hintsDir: hints,
      owner: { uid: NOBODY, gid: NOBODY },
    } as unknown as Profile;
    await chownData({ profile } as RestoreDeps, {} as RestoreStepInput, new AbortController().signal);
    assert.equal(statSync(join(victim, 'shadow')).uid, 0, 'the file behind the link is still root’s');
    assert.equal(statSync(victim).uid, 0, 'the directory behind the link is still root’s');
    for (const d of dirs) assert.equal(lstatSync(d).uid, NOBODY);
  });

  it('removeTree takes a tree out of reach before deleting it, links inside are not followed', async () => {
    const root = scratch('cbr-own-rm-');
    const victim = join(root, 'victim');
    mkdirSync(victim);
    writeFileSync(join(victim, 'keep'), 'keep');
    const old = join(root, 'data.cbr-old-w');
    mkdirSync(join(old, 'ks'), { recursive: true });
    symlinkSync(victim, join(old, 'ks', 'table-link'));
    await removeTree(old);
    assert.deepEqual(readdirSync(root).sort(), ['victim']);
    assert.deepEqual(readdirSync(victim), ['keep']);
  });
});
