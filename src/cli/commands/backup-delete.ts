import { existsSync } from 'node:fs';
import { checkId, deleteBackup, readRecord } from '../../catalog/catalog.ts';
import { CbrError } from '../../core/errors.ts';
import { StateDb } from '../../state/stateDb.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { openStorage, stateDbPath, storageOptions } from '../context.ts';
import { printJson } from '../io.ts';

export const command = defineCommand('backup-delete', {
  summary: 'Delete a backup: its record first (it stops being listed), then its archive.',
  args: '<id>',
  options: { ...jsonOption, ...storageOptions, ...busOptions, ...followOptions },
  notes: ["With --bus the host's agent deletes it from its storage."],
  async run({ values, positionals }, io) {
    const id = checkId(positionals[0] ?? '');
    if (values.bus) {
      await runOverBus(io, values, { type: 'backup.delete', payload: { backupId: id } }, values.json);
      if (values.json) printJson(io, { id, deleted: true, host: values.host });
      else io.stdout(`backup ${id} deleted\n`);
      return 0;
    }
    if (existsSync(stateDbPath(io.env))) {
      const db = new StateDb(stateDbPath(io.env));
      const w = db.get(id);
      db.close();
      if (w && w.status === 'active') throw new CbrError('CBR_ERR_WORKFLOW_CONFLICT', `backup ${id} is still running (${w.state}); cancel it first`);
    }
    const store = openStorage(values, io.env);
    const had = await readRecord(store, id).then(
      () => true,
      () => false,
    );
    const removed = await deleteBackup(store, id);
    if (!had && removed === 0) throw new CbrError('CBR_ERR_BACKUP_NOT_FOUND', `no backup ${id}`);
    if (values.json) printJson(io, { id, deleted: true, objects: removed + (had ? 1 : 0) });
    else io.stdout(`backup ${id} deleted\n`);
    return 0;
  },
});
