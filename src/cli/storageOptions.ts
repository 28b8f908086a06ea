import { join, resolve } from 'node:path';
import { CbrError } from '../core/errors.ts';
import { cbrHome } from '../core/paths.ts';
import { DEFAULT_CONTAINER, type StorageConfig } from '../storage/port.ts';
import { parseDuration } from './bus.ts';
import { optionGroup, type Values } from './command.ts';

// The storage and metrics options and what they resolve to, apart from context.ts: a command declares them without
// loading the runtime (backup-create starts the JMX client's JVM first, then loads the rest).

/** Where backups are kept: every command that reads or writes them (and the agent, for the workflows it runs). */
export const storageOptions = optionGroup('storage options', {
  storage: { type: 'string', placeholder: 'local|swift|s3', env: 'CBR_STORAGE', default: 'local', description: 'the storage driver' },
  'storage-root': {
    type: 'string',
    placeholder: '<dir>',
    env: 'CBR_STORAGE_ROOT',
    description: 'local: the folder backups are kept under (default $CBR_HOME/storage)',
  },
  container: {
    type: 'string',
    placeholder: '<name>',
    env: 'CBR_CONTAINER',
    default: DEFAULT_CONTAINER,
    description: 'the Swift container, S3 bucket or folder under the local root',
  },
  'swift-auth-url': {
    type: 'string',
    placeholder: '<url>',
    env: 'CBR_SWIFT_AUTH_URL',
    description: 'Swift: the auth URL (tempauth .../auth/v1.0 or Keystone .../v3)',
  },
  'swift-auth-version': {
    type: 'string',
    placeholder: '1|3',
    env: 'CBR_SWIFT_AUTH_VERSION',
    description: 'Swift: 1 (tempauth) or 3 (Keystone); default 3 when the auth URL ends in /v3, else 1',
  },
  'swift-credentials-file': {
    type: 'string',
    placeholder: '<file>',
    env: 'CBR_SWIFT_CREDENTIALS_FILE',
    description: 'Swift: JSON {"username", "password"}, mode 0600 (v1: the username is account:user)',
  },
  'swift-project': { type: 'string', placeholder: '<name>', env: 'CBR_SWIFT_PROJECT', description: 'Swift (Keystone): the project' },
  'swift-region': { type: 'string', placeholder: '<region>', env: 'CBR_SWIFT_REGION', description: "Swift (Keystone): the catalog's region" },
  'swift-interface': {
    type: 'string',
    placeholder: 'public|internal|admin',
    env: 'CBR_SWIFT_INTERFACE',
    description: "Swift (Keystone): the catalog's interface",
  },
  'segment-size': {
    type: 'string',
    placeholder: '<size>',
    env: 'CBR_SWIFT_SEGMENT_SIZE',
    description: 'Swift: the segment size of large archives, e.g. 1G (default 1G)',
  },
  'swift-spool-dir': {
    type: 'string',
    placeholder: '<dir>',
    env: 'CBR_SWIFT_SPOOL_DIR',
    description: 'Swift: where segments are spooled before upload, about 2 x segment size per file in flight (default $CBR_HOME/spool)',
  },
  'swift-outage-window': {
    type: 'string',
    placeholder: '<duration>',
    env: 'CBR_SWIFT_OUTAGE_WINDOW',
    description: 'Swift: how long a request is retried (every 5 s at most) while the store keeps failing, e.g. 30s, 10m (default 2m)',
  },
  's3-endpoint': { type: 'string', placeholder: '<url>', env: 'CBR_S3_ENDPOINT', description: 'S3: an S3-compatible endpoint (requests go path-style)' },
  's3-region': { type: 'string', placeholder: '<region>', env: 'CBR_S3_REGION', default: 'us-east-1', description: 'S3: the region' },
  's3-credentials-file': {
    type: 'string',
    placeholder: '<file>',
    env: 'CBR_S3_CREDENTIALS_FILE',
    description: 'S3: JSON {"accessKeyId", "secretAccessKey"}, mode 0600',
  },
  's3-part-size': { type: 'string', placeholder: '<size>', env: 'CBR_S3_PART_SIZE', description: 'S3: the multipart part size, at least 5M (default 16M)' },
});

export type StorageValues = Values<typeof storageOptions>;

/** The commands that run a workflow in this process can leave its outcome for node_exporter's textfile collector. */
export const metricsOptions = optionGroup('metrics options', {
  'metrics-textfile': {
    type: 'string',
    placeholder: '<file.prom>',
    env: 'CBR_METRICS_TEXTFILE',
    description: "record the workflow's outcome in this node_exporter textfile, carrying over the file's earlier counts and last successes (default: none)",
  },
});

/**
 * The storage the options name (each option's environment variable already applied by the parser, see
 * storageOptions). Local storage lives under $CBR_HOME/storage unless --storage-root says otherwise.
 */
export function storageConfig(values: StorageValues, env: NodeJS.ProcessEnv): StorageConfig {
  const driver = values.storage;
  const container = values.container;
  if (driver === 'local') {
    return { driver: 'local', root: values['storage-root'] ?? join(cbrHome(env), 'storage'), container };
  }
  if (driver === 'swift') {
    const authUrl = values['swift-auth-url'];
    const credentialsFile = values['swift-credentials-file'];
    if (!authUrl || !credentialsFile) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--storage swift needs --swift-auth-url and --swift-credentials-file');
    const version = Number(values['swift-auth-version'] ?? (/\/v3\/?$/.test(authUrl) ? 3 : 1));
    if (version !== 1 && version !== 3) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--swift-auth-version must be 1 or 3');
    const iface = values['swift-interface'];
    if (iface && !['public', 'internal', 'admin'].includes(iface))
      throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--swift-interface must be public, internal or admin');
    const segment = values['segment-size'];
    const outage = values['swift-outage-window'];
    const spool = values['swift-spool-dir'];
    const project = values['swift-project'];
    const region = values['swift-region'];
    return {
      driver: 'swift',
      authUrl,
      authVersion: version,
      credentialsFile: resolve(credentialsFile),
      container,
      ...(project ? { projectName: project } : {}),
      ...(region ? { region } : {}),
      ...(iface ? { interface: iface as 'public' | 'internal' | 'admin' } : {}),
      ...(segment ? { segmentSize: parseSize(segment) } : {}),
      spoolDir: resolve(spool ?? join(cbrHome(env), 'spool')),
      ...(outage ? { outageMs: parseDuration(outage, '--swift-outage-window') } : {}),
    };
  }
  if (driver === 's3') {
    const credentialsFile = values['s3-credentials-file'];
    if (!credentialsFile) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--storage s3 needs --s3-credentials-file');
    const endpoint = values['s3-endpoint'];
    const part = values['s3-part-size'];
    const partSize = part ? parseSize(part) : undefined;
    if (partSize !== undefined && partSize < 5 * 2 ** 20) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--s3-part-size must be at least 5M');
    return {
      driver: 's3',
      container,
      region: values['s3-region'],
      credentialsFile: resolve(credentialsFile),
      ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
      ...(partSize ? { partSize } : {}),
    };
  }
  throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown --storage ${JSON.stringify(driver)} (local, swift, s3)`);
}

/** "1G", "512M", "5242880". */
export function parseSize(text: string): number {
  const m = /^(\d+)([KMG]i?B?)?$/i.exec(text.trim());
  if (!m) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `cannot parse size ${JSON.stringify(text)}`);
  const unit = (m[2] ?? '').toUpperCase()[0];
  return Number(m[1]) * (unit === 'K' ? 1024 : unit === 'M' ? 1024 ** 2 : unit === 'G' ? 1024 ** 3 : 1);
}
