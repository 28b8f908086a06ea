import { createHash, randomBytes } from 'node:crypto';
import cassandra from 'cassandra-driver';
import { type CqlSession, connectCql } from '../../src/cassandra/cql.ts';
import { loadCredentials, type Profile } from '../../src/cassandra/profile.ts';

export async function cqlFor(profile: Profile): Promise<CqlSession> {
  return connectCql({ ...profile.cql, credentials: await loadCredentials(profile.cql.credentialsFile) });
}

/**
 * Several keyspaces and tables: a secondary index, a counter table, collections, and incompressible blobs
 * (so archives have some size). Returns the keyspace names.
 */
export async function seedData(cql: CqlSession, prefix: string, opts: { rows?: number; blobKiB?: number } = {}): Promise<string[]> {
  const rows = opts.rows ?? 500;
  const blobKiB = opts.blobKiB ?? 8;
  const a = `${prefix}_shop`;
  const b = `${prefix}_metrics`;
  for (const ks of [a, b]) {
    await cql.execute(`CREATE KEYSPACE IF NOT EXISTS ${ks} WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}`);
  }
  await cql.execute(`CREATE TABLE IF NOT EXISTS ${a}.users (id int PRIMARY KEY, name text, city text, tags set<text>, attrs map<text, text>)`);
  await cql.execute(`CREATE INDEX IF NOT EXISTS users_city ON ${a}.users (city)`);
  await cql.execute(`CREATE TABLE IF NOT EXISTS ${a}.page_views (page text PRIMARY KEY, views counter)`);
  await cql.execute(`CREATE TABLE IF NOT EXISTS ${b}.samples (series text, ts int, value double, payload blob, PRIMARY KEY (series, ts))`);
  for (let i = 0; i < rows; i++) {
    await cql.execute(`INSERT INTO ${a}.users (id, name, city, tags, attrs) VALUES (?, ?, ?, ?, ?)`, [
      i,
      `user-${i}`,
      `city-${i % 13}`,
      [`t${i % 3}`, `t${i % 5}`],
      { tier: i % 2 ? 'gold' : 'silver' },
    ]);
    await cql.execute(`UPDATE ${a}.page_views SET views = views + ? WHERE page = ?`, [cassandraLong(i + 1), `/p/${i % 50}`]);
    await cql.execute(`INSERT INTO ${b}.samples (series, ts, value, payload) VALUES (?, ?, ?, ?)`, [`s${i % 4}`, i, i * 1.5, randomBytes(blobKiB * 1024)]);
  }
  return [a, b];
}

function cassandraLong(n: number) {
  return cassandra.types.Long.fromNumber(n);
}

/** Every row of every user table, sorted, as JSON text: equal strings mean equal data. */
export async function dumpKeyspaces(cql: CqlSession, keyspaces: string[]): Promise<string> {
  const out: Record<string, unknown[]> = {};
  for (const ks of keyspaces) {
    const tables = await cql.execute('SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?', [ks]);
    for (const t of tables) {
      const name = `${ks}.${String(t['table_name'])}`;
      const rows = await cql.execute(`SELECT * FROM ${name}`);
      out[name] = rows.map((r) => JSON.stringify(r, replacer)).sort();
    }
  }
  return JSON.stringify(out);
}

function replacer(_key: string, value: unknown): unknown {
  if (typeof value === 'bigint') return value.toString();
  const v = value as { type?: string; data?: number[] } | null;
  if (v && v.type === 'Buffer' && Array.isArray(v.data)) return `sha1:${createHash('sha1').update(Buffer.from(v.data)).digest('hex')}`;
  return value;
}

/** A CQL identifier, quoted (mixed-case names need it). */
export function quoteId(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * A SHA-256 per table and materialized view of the given keyspaces over all its rows (sorted), keyed
 * `ks.table`: equal maps mean equal data, and a differing table is named.
 */
export async function tableChecksums(cql: CqlSession, keyspaces: string[]): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const ks of keyspaces) {
    const tables = await cql.execute('SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?', [ks]);
    const views = await cql.execute('SELECT view_name FROM system_schema.views WHERE keyspace_name = ?', [ks]);
    const names = [...tables.map((t) => String(t['table_name'])), ...views.map((v) => String(v['view_name']))].sort();
    for (const name of names) {
      const rows = await cql.execute(`SELECT * FROM ${quoteId(ks)}.${quoteId(name)}`);
      const lines = rows.map((r) => JSON.stringify(r, replacer)).sort();
      out[`${ks}.${name}`] = `${rows.length}:${createHash('sha256').update(lines.join('\n')).digest('hex').slice(0, 16)}`;
    }
  }
  return out;
}
