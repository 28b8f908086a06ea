import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseCommand } from '../../../src/bus/schemas/commands.ts';
import { validCommand } from '../../helpers/malformed.ts';

const host = 'host-1';
const parse = (payload: Record<string, unknown>) =>
  parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type: 'backup.verify', payload }))), { hostId: host });

describe('backup.verify command', () => {
  it('takes a backup id, deep, a sample percentage and one key source', () => {
    const c = parse({ backupId: 'b1', deep: true, sample: '10%', decryptKeyFile: '/etc/cbr/key.hex' });
    assert.equal(c.type, 'backup.verify');
    assert.deepEqual(c.payload, { backupId: 'b1', deep: true, sample: '10%', decryptKeyFile: '/etc/cbr/key.hex' });
    assert.deepEqual(parse({ backupId: 'b1' }).payload, { backupId: 'b1' });
  });

  it('refuses what it cannot run, naming the field', () => {
    const cases: [Record<string, unknown>, RegExp][] = [
      [{}, /give payload.backupId or payload.latest/],
      [{ backupId: '../x' }, /backupId/],
      [{ backupId: 'b1', deep: 'yes' }, /payload.deep/],
      [{ backupId: 'b1', sample: 'ten percent' }, /payload.sample/],
      [{ backupId: 'b1', decryptKeyFile: 'relative/key' }, /absolute path/],
      [{ backupId: 'b1', decryptKeyFile: '/k', decryptKeyEnv: 'K' }, /not both/],
      [{ backupId: 'b1', key: 'aa' }, /unknown payload field "key"/],
    ];
    for (const [payload, why] of cases) assert.throws(() => parse(payload), { code: 'CBR_ERR_COMMAND_INVALID', message: why }, JSON.stringify(payload));
  });
});
