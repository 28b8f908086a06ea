import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where cbr keeps its state, sandboxes and the default local storage. Default: ~/.local/share/cbr, or $CBR_HOME. */
export function cbrHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env['CBR_HOME']) return env['CBR_HOME'];
  const xdg = env['XDG_DATA_HOME'] || join(homedir(), '.local', 'share');
  return join(xdg, 'cbr');
}

/** Where downloaded Cassandra jars live (outside git, shared by every CBR_HOME). Default: ~/.cache/cbr, or $CBR_CACHE. */
export function cbrCache(env: NodeJS.ProcessEnv = process.env): string {
  if (env['CBR_CACHE']) return env['CBR_CACHE'];
  const xdg = env['XDG_CACHE_HOME'] || join(homedir(), '.cache');
  return join(xdg, 'cbr');
}
