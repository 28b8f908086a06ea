import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { loadSchedule, parseSchedule } from '../../../../src/bus/schedule/config.ts';
import { CbrError } from '../../../../src/core/errors.ts';

const job = (over: Record<string, unknown> = {}) => ({
  name: 'nightly',
  cron: '0 2 * * *',
  command: { type: 'backup.create', payload: { name: 'nightly' } },
  ...over,
});
const refused = (value: unknown, re: RegExp) =>
  assert.throws(
    () => parseSchedule(value, 'node-1'),
    (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_CONFIG' && re.test(e.message),
    re.source,
  );

describe('schedule file', () => {
  it('loads YAML and JSON, with UTC by default and a zone per job', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cbr-schedule-'));
    try {
      const yaml = join(dir, 's.yaml');
      writeFileSync(
        yaml,
        [
          'jobs:',
          '  - name: nightly',
          '    cron: "0 2 * * *"',
          '    command: { type: backup.create, payload: { name: nightly, strategy: incremental } }',
          '  - name: paris',
          '    cron: "*/30 * * * * *"',
          '    timezone: Europe/Paris',
          '    command: { type: backup.delete, payload: { backupId: old-1 } }',
          '',
        ].join('\n'),
      );
      const jobs = await loadSchedule(yaml, 'node-1');
      assert.deepEqual(
        jobs.map((j) => [j.name, j.cron, j.timezone, j.type, j.payload]),
        [
          ['nightly', '0 2 * * *', 'UTC', 'backup.create', { name: 'nightly', strategy: 'incremental' }],
          ['paris', '*/30 * * * * *', 'Europe/Paris', 'backup.delete', { backupId: 'old-1' }],
        ],
      );
      const json = join(dir, 's.json');
      writeFileSync(json, JSON.stringify({ timezone: 'Asia/Tokyo', jobs: [job()] }));
      assert.equal((await loadSchedule(json, 'node-1'))[0]?.timezone, 'Asia/Tokyo');
      await assert.rejects(loadSchedule(join(dir, 'missing.yaml'), 'node-1'), (e: unknown) => e instanceof CbrError && e.code === 'CBR_ERR_CONFIG');
      writeFileSync(join(dir, 'bad.yaml'), 'jobs: [\n');
      await assert.rejects(loadSchedule(join(dir, 'bad.yaml'), 'node-1'), /not valid YAML or JSON/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses, with CBR_ERR_CONFIG, a bad cron, an unknown job type, a payload its type refuses, and malformed jobs', () => {
    refused({ jobs: [job({ cron: '0 25 * * *' })] }, /job nightly: bad cron expression "0 25 \* \* \*"/);
    refused({ jobs: [job({ command: { type: 'backup.explode', payload: {} } })] }, /job nightly: unknown command type "backup.explode"/);
    refused(
      { jobs: [job({ command: { type: 'backup.create', payload: { name: 'n', colour: 'red' } } })] },
      /job nightly: backup.create: unknown payload field "colour"/,
    );
    refused({ jobs: [job({ command: { type: 'backup.create', payload: {} } })] }, /job nightly: backup.create: payload.name/);
    refused({ jobs: [job({ timezone: 'Nowhere/City' })] }, /unknown time zone "Nowhere\/City"/);
    refused({ jobs: [job(), job()] }, /two jobs are named nightly/);
    refused({ jobs: [job({ name: 'has space' })] }, /jobs.0.name: a job name must match/);
    refused({ jobs: [job({ extra: 1 })] }, /jobs.0/);
    refused({ jobs: [] }, /at least one job/);
    refused([], /schedule/);
  });
});
