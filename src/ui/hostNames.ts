import { isIP } from 'node:net';
import { networkInterfaces } from 'node:os';

/** The DNS-rebinding guard of `cbr ui`: which Host header values name this server (see server.ts). */
export interface HostNames {
  accepts(host: string): boolean;
  url: string;
}

/**
 * The Host header values the server answers to: the names it listens as, with its port (port 80 also without).
 * On 0.0.0.0/:: the interface addresses are read again when a name is not found (an address may come later).
 */
export function hostNames(address: string, port: number, publicHosts: readonly string[], url: string): HostNames {
  const wildcard = address === '0.0.0.0' || address === '::';
  const build = () => {
    const names = new Set<string>();
    const add = (h: string) => {
      const n = (isIP(h) === 6 ? `[${h}]` : h).toLowerCase();
      names.add(`${n}:${port}`);
      if (port === 80) names.add(n);
    };
    add(address);
    if (address === '127.0.0.1' || address === '::1' || wildcard) add('localhost');
    if (wildcard) {
      for (const list of Object.values(networkInterfaces())) {
        for (const i of list ?? []) if (address === '::' || i.family === 'IPv4') add(i.address);
      }
    }
    for (const h of publicHosts) add(h);
    return names;
  };
  let names = build();
  return {
    url,
    accepts(host) {
      if (names.has(host)) return true;
      if (!wildcard || host === '') return false;
      names = build();
      return names.has(host);
    },
  };
}
