// npm run demo — the main job on the embedded defaults: a local sandbox Cassandra, local filesystem storage.
// Starts a node, writes some rows, backs it up, lists and shows the backup, restores it as a new independent
// node, and reads the rows back there with the new superuser password.
import { connectCql } from '../src/cassandra/cql.ts';
import { loadCredentials, loadProfile } from '../src/cassandra/profile.ts';
import { processIO } from '../src/cli/io.ts';
import { main } from '../src/cli/main.ts';
import { profilePath } from '../src/sandbox/sandbox.ts';

const io = processIO();
const say = (t: string) => process.stdout.write(`\n== ${t}\n`);
const run = async (...argv: string[]) => {
  process.stdout.write(`$ cbr ${argv.join(' ')}\n`);
  const code = await main(argv, io);
  if (code !== 0) process.exit(code);
};
let out = '';
const capture = {
  ...io,
  stdout: (t: string) => {
    out += t;
  },
};

say('a real Cassandra 5.0 node from Maven Central jars');
for (const n of ['demo-restored', 'demo']) await main(['sandbox', 'rm', n], { ...io, stderr: () => {}, stdout: () => {} });
await run('sandbox', 'start', 'demo', '--cluster-name', 'Demo Cluster');
const profile = await loadProfile(profilePath('demo'));
const cql = await connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) });
await cql.execute("CREATE KEYSPACE shop WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}");
await cql.execute('CREATE TABLE shop.orders (id int PRIMARY KEY, item text, qty int)');
for (let i = 0; i < 1000; i++) await cql.execute('INSERT INTO shop.orders (id, item, qty) VALUES (?, ?, ?)', [i, `item-${i % 37}`, i % 9]);
await cql.close();
process.stdout.write('wrote 1000 rows into shop.orders\n');

say('backup: snapshot -> one zstd TAR stream -> local storage -> snapshot cleared');
process.stdout.write(`$ cbr backup-create nightly --config ${profilePath('demo')}\n`);
if ((await main(['backup-create', 'nightly', '--config', profilePath('demo'), '--description', 'demo backup'], capture)) !== 0) process.exit(1);
const id = out.trim();
process.stdout.write(`${id}\n`);
await run('backup-list');
await run('backup-show', id);

say('restore: the backup becomes a new, independent single-node instance');
await run('create', 'demo-restored', '--backup', id, '--sandbox');
const restored = await loadProfile(profilePath('demo-restored'));
const creds = await loadCredentials(restored.cql.credentialsFile);
const r = await connectCql({ ...restored.cql, credentials: creds });
const [local] = await r.execute('SELECT cluster_name FROM system.local');
const rows = await r.execute('SELECT count(*) AS n FROM shop.orders');
await r.close();
process.stdout.write(`restored node: cluster_name=${String(local?.['cluster_name'])}, shop.orders has ${String(rows[0]?.['n'])} rows\n`);
await run('sandbox', 'status');
process.stdout.write('\nBoth nodes keep running; `npx cbr sandbox rm demo` and `npx cbr sandbox rm demo-restored` remove them.\n');
