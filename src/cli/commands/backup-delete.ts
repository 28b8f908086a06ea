import { existsSync } from 'node:fs';
import { checkId, deleteBackup, readRecord } from '../../catalog/catalog.ts';
import { CbrError } from '../../core/errors.ts';
import { StateDb } from '../../state/stateDb.ts';
import { busOptions, followOptions, runOverBus } from '../bus.ts';
import { commonOptions, openStorage, stateDbPath } from '../context.ts';
import { type Command, parse, printJson } from '../io.ts';

const usage = 'cbr backup-delete <id> [--storage-root DIR | --bus URL --host H [--bus-outage-deadline 5m]] [--json]';

export const command: Command = {
  summary: 'Delete a backup: its record first (it stops being listed), then its archive.',
  usage,
  async run(argv, io) {
    const { values, positionals } = parse(argv, { ...commonOptions, ...busOptions, ...followOptions }, usage);
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
};
