import { readFile } from 'node:fs/promises';
import { setSimpleSeeds } from '../../cassandra/configFiles.ts';
import { CassandraYaml } from '../../cassandra/yaml.ts';
import { writeFileAtomic } from '../../core/atomicWrite.ts';
import { CbrError } from '../../core/errors.ts';
import type { RestoreStepInput } from '../../machines/restore.machine.ts';
import type { RestoreDeps } from './restoreDeps.ts';

/** A node of a cluster restore: which source node's tokens it takes, and the new cluster's seeds. */
export interface ClusterNodeSettings {
  /** The source host's tokens, as the cluster record has them. */
  tokens: string[];
  /** SimpleSeedProvider seeds: new nodes only (`host:port,...`). */
  seeds: string;
}

export type ClusterNodeStepInput = RestoreStepInput & { node: ClusterNodeSettings };

/**
 * After writeFinalConfig, on the file it wrote: `initial_token` set to the source host's tokens and `num_tokens`
 * to their count (the restored system.local holds the same tokens: the yaml agrees with it, so the ring shows the
 * recorded tokens whichever Cassandra trusts), and the seeds set to the new nodes only. Idempotent (the same
 * values again); the rollback's restoreConfig puts the operator's file back.
 */
export async function writeClusterConfig(deps: RestoreDeps, { node }: ClusterNodeStepInput, signal: AbortSignal): Promise<void> {
  signal.throwIfAborted();
  if (node.tokens.length === 0) throw new CbrError('CBR_ERR_RECORD_INVALID', 'the cluster record names no tokens for this node');
  if (!/^[^\s,]+(,[^\s,]+)*$/.test(node.seeds)) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid seeds ${JSON.stringify(node.seeds)}`);
  const path = deps.profile.cassandraYaml;
  const y = CassandraYaml.parse(await readFile(path, 'utf8'));
  y.set('num_tokens', node.tokens.length);
  y.set('initial_token', node.tokens.join(','));
  // A token allocator setting is moot with initial_token, and a wrong one only confuses a reader.
  y.delete('allocate_tokens_for_keyspace');
  y.delete('allocate_tokens_for_local_replication_factor');
  setSimpleSeeds(y, node.seeds);
  await writeFileAtomic(path, y.toString());
  deps.log.info('cassandra.yaml given the source host tokens and the new seeds', { tokens: node.tokens.length, seeds: node.seeds });
}
