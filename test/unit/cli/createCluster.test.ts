import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type ClusterRecord, writeClusterRecord } from '../../../src/catalog/clusterRecord.ts';
import type { CliIO } from '../../../src/cli/io.ts';
import { main } from '../../../src/cli/main.ts';
import { openStore } from '../../../src/storage/open.ts';

/** `cbr create --backup <cluster backup id>` as a new cluster: what is refused before anything is made or touched. */

let home: string;
let env: NodeJS.ProcessEnv;

async function run(args: string[]): Promise<{ code: number; err: { code: string; message: string } | undefined }> {
  let out = '';
  const io: CliIO = {
    stdout: (t) => {
      out += t;
    },
    stderr: () => {},
    env,
    isTTY: false,
  };
  const code = await main([...args, '--json'], io);
  return { code, err: out ? (JSON.parse(out) as { error?: { code: string; message: string } }).error : undefined };
}

before(async () => {
  home = mkdtempSync(join(tmpdir(), 'cbr-create-cluster-'));
  env = { ...process.env, CBR_HOME: home, CBR_STORAGE_ROOT: join(home, 'storage') };
  const hosts = [1, 2, 3].map((i) => ({
    host: `h${i}`,
    backupId: `cb-${i}`,
    hostId: `host-${i}`,
    address: `10.0.0.${i}`,
    datacenter: 'dc1',
    rack: 'r1',
    tokens: [String(i * 100)],
  }));
  const record: ClusterRecord = {
    format: 1,
    kind: 'cluster',
    id: 'cb',
    name: 'n',
    description: '',
    state: 'COMPLETED',
    clusterName: 'src',
    partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
    strategy: 'full',
    created: '2026-01-01T00:00:00.000Z',
    finished: '2026-01-01T00:00:01.000Z',
    schema: '',
    hosts,
  };
  await writeClusterRecord(openStore({ driver: 'local', root: join(home, 'storage'), container: 'database_backups' }), record);
});

after(() => rmSync(home, { recursive: true, force: true }));

describe('create --backup <cluster backup id> as a new cluster', () => {
  it('refuses a node count other than the backup host count, before a sandbox is made', async () => {
    const r = await run(['create', 'newc', '--backup', 'cb', '--sandbox', '--nodes', '2']);
    assert.equal(r.code, 2);
    assert.equal(r.err?.code, 'CBR_ERR_INVALID_ARGUMENT');
    assert.match(r.err?.message ?? '', /cluster backup cb has 3 hosts \(h1, h2, h3\): restore it as a new cluster of 3 nodes \(got 2\)/);
    assert.ok(!existsSync(join(home, 'sandboxes', 'newc')), 'no sandbox made');
  });

  it('refuses --nodes without --sandbox, both --nodes and --profile, and --nodes for an id that is not a cluster backup', async () => {
    for (const [args, message] of [
      [['--nodes', '3'], /--nodes takes a node count, with --sandbox/],
      [['--sandbox', '--nodes', '3', '--profiles', 'a,b,c'], /--sandbox --nodes <n> or one --profile per node/],
      [['--profile', 'a', '--profile', 'b'], /restore it as a new cluster of 3 nodes \(got 2\)/],
    ] as const) {
      const r = await run(['create', 'newc', '--backup', 'cb', ...args]);
      assert.equal(r.err?.code, 'CBR_ERR_INVALID_ARGUMENT', args.join(' '));
      assert.match(r.err?.message ?? '', message);
    }
    const other = await run(['create', 'newc', '--backup', 'not-a-cluster', '--sandbox', '--nodes', '3']);
    assert.equal(other.err?.code, 'CBR_ERR_INVALID_ARGUMENT');
    assert.match(other.err?.message ?? '', /not-a-cluster is not one/);
    assert.ok(!existsSync(join(home, 'sandboxes')), 'no sandbox made');
  });
});
