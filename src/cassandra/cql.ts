import { CbrError } from '../core/errors.ts';

export interface CqlTarget {
  host: string;
  port: number;
  localDc: string;
  /** Omit when the node runs AllowAllAuthenticator. */
  credentials?: { username: string; password: string } | undefined;
}

export type Row = Record<string, unknown>;

/** The narrow CQL port cbr needs: run a statement, get rows. */
export interface CqlSession {
  execute(query: string, params?: unknown[]): Promise<Row[]>;
  close(): Promise<void>;
}

/**
 * Connects to exactly one node. An allow-list policy keeps the driver off every other host it learns from
 * system.peers: a restored node still lists the source cluster's peers until they are cleared, and cbr must
 * never send a statement there.
 */
export async function connectCql(target: CqlTarget, opts: { timeoutMs?: number } = {}): Promise<CqlSession> {
  const address = `${target.host}:${target.port}`;
  // Loaded with the first connection: commands (and an idle agent) that never speak CQL do not hold the driver.
  const cassandra = (await import('cassandra-driver')).default;
  const { policies, auth } = cassandra;
  const client = new cassandra.Client({
    contactPoints: [target.host],
    localDataCenter: target.localDc,
    protocolOptions: { port: target.port },
    policies: {
      loadBalancing: new policies.loadBalancing.AllowListPolicy(new policies.loadBalancing.DCAwareRoundRobinPolicy(target.localDc), [address]),
      reconnection: new policies.reconnection.ConstantReconnectionPolicy(500),
    },
    ...(target.credentials ? { authProvider: new auth.PlainTextAuthProvider(target.credentials.username, target.credentials.password) } : {}),
    socketOptions: { connectTimeout: opts.timeoutMs ?? 5000, readTimeout: 60_000 },
    isMetadataSyncEnabled: false,
  });
  try {
    await client.connect();
  } catch (err) {
    await client.shutdown().catch(() => {});
    throw new CbrError('CBR_ERR_CQL_FAILED', `cannot connect to CQL at ${address}: ${describeDriverError(err)}`);
  }
  return {
    async execute(query, params) {
      try {
        const rs = await client.execute(query, params as never, { prepare: params !== undefined && params.length > 0 });
        return rs.rows as unknown as Row[];
      } catch (err) {
        throw new CbrError('CBR_ERR_CQL_FAILED', `CQL failed at ${address}: ${describeDriverError(err)}`);
      }
    },
    async close() {
      await client.shutdown().catch(() => {});
    },
  };
}

/** Driver errors can nest per-host errors; flatten them without ever echoing credentials (the driver has none in messages). */
function describeDriverError(err: unknown): string {
  const e = err as { message?: string; innerErrors?: Record<string, Error> };
  const inner = e.innerErrors ? Object.values(e.innerErrors).map((x) => x.message) : [];
  return [e.message ?? String(err), ...inner].join('; ');
}
