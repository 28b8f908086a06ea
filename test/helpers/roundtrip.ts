import assert from 'node:assert/strict';
import type { Profile } from '../../src/cassandra/profile.ts';
import { loadProfile } from '../../src/cassandra/profile.ts';
import { profilePath } from '../../src/sandbox/sandbox.ts';
import { cbr } from './cli.ts';
import { cqlFor, dumpKeyspaces } from './data.ts';
import { testEnv } from './env.ts';

/**
 * The Trove verbs against one storage driver (chosen by `env`), end to end with sandbox nodes: backup-create,
 * backup-list, backup-show, create --backup into a new sandbox whose rows must equal the source's, backup-delete.
 * `afterCreate` checks the driver's own layout (segments, parts) while the backup exists; `afterDelete` that
 * nothing is left.
 */
export async function storageRoundTrip(opts: {
  env: NodeJS.ProcessEnv;
  source: Profile;
  keyspaces: string[];
  instance: string;
  afterCreate?: (id: string, made: Record<string, unknown>) => Promise<void>;
  afterDelete: (id: string) => Promise<void>;
}): Promise<void> {
  const { env } = opts;
  const made = await cbr(['backup-create', `to-${opts.instance}`, '--config', profilePath('source', testEnv), '--compression', 'none', '--json'], env);
  assert.equal(made.code, 0, made.err);
  const id = String(made.json()['id']);
  await opts.afterCreate?.(id, made.json());
  const list = (await cbr(['backup-list', '--json'], env)).json() as unknown as { id: string; state: string }[];
  assert.ok(list.some((b) => b.id === id && b.state === 'COMPLETED'));
  const show = await cbr(['backup-show', id, '--json'], env);
  assert.equal(show.json()['size'], made.json()['size']);
  assert.equal(show.json()['sha256'], made.json()['sha256']);

  const restored = await cbr(['create', opts.instance, '--backup', id, '--sandbox', '--json'], env);
  assert.equal(restored.code, 0, restored.err);
  const target = await loadProfile(String(restored.json()['profilePath']));
  const [a, b] = [await cqlFor(opts.source), await cqlFor(target)];
  try {
    assert.equal(await dumpKeyspaces(b, opts.keyspaces), await dumpKeyspaces(a, opts.keyspaces));
  } finally {
    await a.close();
    await b.close();
  }
  await cbr(['sandbox', 'rm', opts.instance], env);

  const del = await cbr(['backup-delete', id], env);
  assert.equal(del.code, 0, del.err);
  await opts.afterDelete(id);
}
