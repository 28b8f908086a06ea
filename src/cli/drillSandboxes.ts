import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ownerAlive, ownerToken } from '../runtime/owner.ts';
import { createSandbox, instanceDir, listSandboxes, removeSandbox } from '../sandbox/sandbox.ts';
import { StateDb } from '../state/stateDb.ts';
import { DRILL_SANDBOX_RE, type DrillSandboxes } from '../workflows/drill.ts';
import { stateDbPath } from './context.ts';

const OWNER_FILE = 'drill-owner';

/**
 * The sandboxes of drills under `env`'s CBR_HOME, for `cbr drill` and the agent's `backup.drill` alike: each holds
 * its owner's token (boot id, pid, start time) so a later drill knows whether the process that made it is gone.
 */
export function drillSandboxes(env: NodeJS.ProcessEnv): DrillSandboxes {
  return {
    removeStale: () => removeStaleDrillSandboxes(env),
    async create(name, signal) {
      await createSandbox(name, { env, signal });
      writeFileSync(join(instanceDir(name, env), OWNER_FILE), `${ownerToken()}\n`);
      return join(instanceDir(name, env), 'profile.json');
    },
    remove: (name) => removeSandbox(name, env),
  };
}

/**
 * Sandboxes of drills whose process is gone (killed with -9, a power cut, an agent stopped mid-drill): removed,
 * and a restore workflow left unfinished on one is marked failed so neither `cbr resume` nor an agent's start
 * takes it up.
 */
export async function removeStaleDrillSandboxes(env: NodeJS.ProcessEnv): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await listSandboxes(env)) {
    const m = DRILL_SANDBOX_RE.exec(name);
    if (!m) continue;
    const ownerFile = join(instanceDir(name, env), OWNER_FILE);
    const token = existsSync(ownerFile) ? readFileSync(ownerFile, 'utf8').trim() : null;
    if (ownerAlive(token, Number(m[1]))) continue;
    await removeSandbox(name, env);
    removed.push(name);
  }
  if (removed.length && existsSync(stateDbPath(env))) {
    const db = new StateDb(stateDbPath(env));
    try {
      for (const w of db.list({ status: 'active' })) {
        const path = (w.input as { profilePath?: string }).profilePath ?? '';
        if (removed.some((n) => path === join(instanceDir(n, env), 'profile.json'))) db.save(w.id, 'error', w.state, w.snapshot);
      }
    } finally {
      db.close();
    }
  }
  return removed;
}
