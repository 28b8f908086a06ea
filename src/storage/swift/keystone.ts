import { CbrError } from '../../core/errors.ts';
import type { SwiftConfig } from '../port.ts';

/** Keystone v3 password authentication for the Swift driver: the token request and the catalog's endpoint. */
export interface KeystoneTokenResponse {
  token: {
    catalog?: { type: string; endpoints: { interface: string; region?: string; region_id?: string; url: string }[] }[];
  };
}

export function keystoneBody(config: SwiftConfig, creds: { username: string; password: string }) {
  return {
    auth: {
      identity: {
        methods: ['password'],
        password: { user: { name: creds.username, domain: { name: config.userDomainName ?? 'Default' }, password: creds.password } },
      },
      scope: { project: { name: config.projectName ?? creds.username, domain: { name: config.projectDomainName ?? 'Default' } } },
    },
  };
}

/** The object-store endpoint of a Keystone v3 token's catalog, by interface (default public) and region. */
export function objectStoreEndpoint(body: KeystoneTokenResponse, config: Pick<SwiftConfig, 'region' | 'interface'>): string {
  const service = body.token.catalog?.find((s) => s.type === 'object-store');
  const wanted = config.interface ?? 'public';
  const ep = service?.endpoints.find((e) => e.interface === wanted && (!config.region || e.region_id === config.region || e.region === config.region));
  if (!ep)
    throw new CbrError('CBR_ERR_CONFIG', `no ${wanted} object-store endpoint${config.region ? ` in region ${config.region}` : ''} in the Keystone catalog`);
  return ep.url.replace(/\/$/, '');
}
