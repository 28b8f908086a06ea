// One cbr fetch run in its own process: an incremental backup's blobs in local storage -> a fresh directory, every
// file's size and SHA-256 checked (the restore's unpack step without the restore around it).
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BackupRecord } from '../src/catalog/catalog.ts';
import { silentLogger } from '../src/core/log.ts';
import type { RestoreStepInput } from '../src/machines/restore.machine.ts';
import { fetchFiles } from '../src/steps/restore/fetchFiles.ts';
import type { RestoreDeps } from '../src/steps/restore/restoreDeps.ts';
import { createLocalStore } from '../src/storage/local/localStore.ts';

const [root, container, backupId, target, concurrency] = process.argv.slice(2) as [string, string, string, string, string | undefined];
const rec = JSON.parse(await readFile(join(root, container, backupId, 'backup.json'), 'utf8')) as BackupRecord;
// Only what fetchFiles reads: the staging directory goes beside the one "data directory", owned by this user.
const deps = {
  profile: { dataDirs: [target], owner: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 } },
  store: createLocalStore(root, container),
  key: null,
  log: silentLogger,
  onProgress: () => {},
} as unknown as RestoreDeps;
const input = {
  ctx: { workflowId: 'bench', concurrency: concurrency ? Number(concurrency) : undefined },
  plan: { placement: {}, rawBytes: rec.rawBytes, fileCount: rec.files.length },
} as unknown as RestoreStepInput;
await rm(`${target}.cbr-restore-bench`, { recursive: true, force: true });
const r = await fetchFiles(deps, input, rec, new AbortController().signal);
process.stderr.write(`${JSON.stringify(r)}\n`);
