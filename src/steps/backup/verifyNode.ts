import { readDataSettings } from '../../cassandra/dataSettings.ts';
import { checkRecordIdentity } from '../../catalog/record.ts';
import { CbrError } from '../../core/errors.ts';
import type { NodeFacts, StepInput } from '../../machines/backup.machine.ts';
import type { BackupDeps } from '../nodeDeps.ts';
import { assertIdFree } from './assertIdFree.ts';

/**
 * The node must be running, Up/Normal in its own status, and answer both JMX and CQL before a snapshot is taken, the backup id
 * must be free in storage and on the node, and the settings the node's data depends on travel with the backup.
 *
 * The JMX checks and the CQL queries run at the same time (they wait on different connections); a failure is
 * reported in the order the checks are listed above, whichever came first.
 */
export async function verifyNode(deps: BackupDeps, input: StepInput, signal: AbortSignal): Promise<NodeFacts> {
  if (!(await deps.service.isRunning())) throw new CbrError('CBR_ERR_NODE_NOT_RUNNING', `Cassandra on ${deps.profile.name} is not running`);
  checkRecordIdentity({ name: input.ctx.name, description: input.ctx.description, sourceInstance: deps.profile.name, hostId: deps.profile.hostId });
  const jmx = (async () => {
    const status = await deps.nodetool.status(signal).catch((err: CbrError) => {
      if (signal.aborted) throw err;
      throw new CbrError('CBR_ERR_NODE_NOT_RUNNING', `JMX does not answer on ${deps.profile.name}: ${err.message}`);
    });
    if (!status.live || status.state !== 'Normal') {
      throw new CbrError('CBR_ERR_NODE_NOT_RUNNING', `node ${deps.profile.name} is not Up/Normal (${status.live ? 'Up' : 'Down'}/${status.state})`);
    }
    await assertIdFree(deps, input, signal);
  })();
  const cqlFacts = (async (): Promise<NodeFacts> => {
    const cql = await deps.cql();
    try {
      const [row] = await cql.execute('SELECT cluster_name, release_version FROM system.local');
      return {
        clusterName: String(row?.['cluster_name'] ?? ''),
        cassandraVersion: String(row?.['release_version'] || deps.profile.cassandraVersion),
        settings: await readDataSettings(cql),
      };
    } finally {
      await cql.close();
    }
  })();
  const [checked, facts] = await Promise.allSettled([jmx, cqlFacts]);
  if (checked.status === 'rejected') throw checked.reason;
  if (facts.status === 'rejected') throw facts.reason;
  return facts.value;
}
