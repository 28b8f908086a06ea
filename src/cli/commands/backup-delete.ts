import { existsSync } from 'node:fs';
import { checkId, deleteBackup } from '../../catalog/catalog.ts';
import {
  deleteAbandonedClusterBackup,
  deleteClusterBackup,
  isClusterBackup,
  MAX_CLUSTER_BACKUP_ID,
  pendingMarkerKey,
  readPendingMarker,
  refuseClusterPart,
} from '../../catalog/clusterRecord.ts';
import { CbrError } from '../../core/errors.ts';
import { StateDb } from '../../state/stateDb.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { openStorage, stateDbPath, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';

export const command = defineCommand('backup-delete', {
  summary: 'Delete a backup: its record first (it stops being listed), then its archive.',
  args: '<id>',
  options: {
    force: {
      type: 'boolean',
      default: false,
      description: 'with the id of a cluster backup that has no record (its marker only): its coordinator is gone for good, delete its parts and marker',
    },
    ...jsonOption,
    ...storageOptions,
    ...busOptions,
    ...followOptions,
  },
  notes: [
    "With --bus the host's agent deletes it from its storage.",
    "A cluster backup id deletes the cluster record, then every host's part; one part alone is refused (CBR_ERR_CLUSTER_PART).",
    'A cluster backup still without its record (running, or its coordinator gone) is refused; --force deletes its parts and marker.',
  ],
  async run({ values, positionals }, io) {
    const id = checkId(positionals[0] ?? '');
    if (values.bus) {
      const { result } = await runOverBus(io, values, { type: 'backup.delete', payload: { backupId: id } }, values.json);
      const freed = { freedBytes: result?.['freedBytes'] ?? 0, deletedBlobs: result?.['deletedBlobs'] ?? 0, gcSkipped: result?.['gcSkipped'] ?? null };
      if (result?.['cluster'] === true) {
        const parts = Array.isArray(result['parts']) ? result['parts'].map(String) : [];
        if (values.json) printJson(io, { id, deleted: true, cluster: true, host: values.host, parts: parts.map((p) => ({ id: p })), ...freed });
        else io.stdout(`cluster backup ${id} deleted with its ${parts.length} parts (${parts.join(', ')})\n`);
        return 0;
      }
      if (values.json) printJson(io, { id, deleted: true, host: values.host, ...freed });
      else io.stdout(`backup ${id} deleted${result?.['incremental'] ? `; ${gcLine(freed)}` : ''}\n`);
      return 0;
    }
    if (existsSync(stateDbPath(io.env))) {
      const db = new StateDb(stateDbPath(io.env));
      const w = db.get(id);
      db.close();
      if (w && w.status === 'active') throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `backup ${id} is still running (${w.state}); cancel it first`);
    }
    const store = openStorage(values, io.env);
    if (await isClusterBackup(store, id)) {
      const { parts } = await deleteClusterBackup(store, id);
      const freedBytes = parts.reduce((n, p) => n + (p.gc?.freedBytes ?? 0), 0);
      if (values.json)
        printJson(io, { id, deleted: true, cluster: true, parts: parts.map((p) => ({ id: p.id, hadRecord: p.record !== null, gc: p.gc })), freedBytes });
      else io.stdout(`cluster backup ${id} deleted with its ${parts.length} parts (${parts.map((p) => p.id).join(', ')})\n`);
      return 0;
    }
    const markerThere = id.length <= MAX_CLUSTER_BACKUP_ID && (await store.head(pendingMarkerKey(id))) !== null;
    if (markerThere) {
      const marker = (await readPendingMarker(store, id).catch(() => null)) ?? { coordinator: '(unreadable marker)', started: '?' };
      // A cluster backup with no record yet: running, or left by a coordinator that never came back.
      if (!values.force)
        throw new CbrError(
          'CBR_ERR_WORKFLOW_CONFLICT',
          `cluster backup ${id} has no record yet: its coordinator ${marker.coordinator} started it at ${marker.started} and may still be running (see its agent); if that coordinator is gone for good, --force deletes its parts and marker`,
        );
      const { parts } = await deleteAbandonedClusterBackup(store, id);
      if (values.json)
        printJson(io, { id, deleted: true, cluster: true, abandoned: true, parts: parts.map((p) => ({ id: p.id, hadRecord: p.record !== null, gc: p.gc })) });
      else
        io.stdout(
          `unfinished cluster backup ${id} deleted with the ${parts.length} parts it had stored${parts.length ? ` (${parts.map((p) => p.id).join(', ')})` : ''}\n`,
        );
      return 0;
    }
    await refuseClusterPart(store, id);
    const { removed, record, gc } = await deleteBackup(store, id);
    const had = record !== null;
    if (!had && removed === 0) throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no backup ${id}`);
    const freed = { freedBytes: gc?.freedBytes ?? 0, deletedBlobs: gc?.deleted ?? 0, gcSkipped: gc?.skipped ?? null };
    if (values.json) printJson(io, { id, deleted: true, objects: removed + (had ? 1 : 0), ...freed });
    else io.stdout(`backup ${id} deleted${gc ? `; ${gcLine(freed)}` : ''}\n`);
    return 0;
  },
});

/** What an incremental backup's delete freed, or why its bytes are freed later. */
function gcLine(f: { freedBytes: unknown; deletedBlobs: unknown; gcSkipped: unknown }): string {
  if (f.gcSkipped === 'backup-running') return 'a backup of this host is running: the bytes only it used are freed by a later delete';
  if (f.gcSkipped === 'restore-running') return 'a restore or drill is fetching blobs of this host: the bytes only it used are freed by a later delete';
  if (f.gcSkipped === 'failed') return 'garbage collection failed: the bytes only it used are freed by a later delete';
  return `${f.deletedBlobs} blobs (${f.freedBytes} bytes) no other backup uses were freed`;
}
