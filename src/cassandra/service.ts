import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { CbrError } from '../core/errors.ts';
import type { Profile } from './profile.ts';
import { waitForCql } from './ready.ts';

const run = promisify(execFile);

export interface Endpoint {
  host: string;
  port: number;
}

/** Start, stop and ask about the Cassandra process of one node. `start` returns once CQL answers. */
export interface ServiceControl {
  isRunning(): Promise<boolean>;
  /** `endpoint`: where CQL answers when the running configuration differs from the profile (a maintenance start). */
  start(signal?: AbortSignal, endpoint?: Endpoint): Promise<void>;
  stop(signal?: AbortSignal): Promise<void>;
}

/** A node run by systemd: `systemctl start|stop|is-active <unit>`, then wait until CQL answers. */
export function createSystemdControl(profile: Profile): ServiceControl {
  const service = profile.service;
  if (service.kind !== 'systemd') throw new CbrError('CBR_ERR_CONFIG', `profile service kind ${service.kind} is not systemd`);
  const systemctl = async (verb: string, signal?: AbortSignal): Promise<string> => {
    try {
      const { stdout } = await run('systemctl', [verb, service.unit], signal ? { signal } : {});
      return stdout.trim();
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      if (verb === 'is-active') return (e.stdout ?? '').trim();
      throw new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', `systemctl ${verb} ${service.unit}: ${(e.stderr ?? e.message).trim()}`);
    }
  };
  return {
    isRunning: async () => (await systemctl('is-active')) === 'active',
    start: async (signal, endpoint) => {
      await systemctl('start', signal);
      await waitForCql(
        { ...profile.cql, ...endpoint },
        {
          timeoutMs: 300_000,
          requireAuth: false,
          alive: () => true,
          diagnose: async () => `see journalctl -u ${service.unit}`,
          ...(signal ? { signal } : {}),
        },
      ).catch((err: CbrError) => {
        throw new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', err.message);
      });
    },
    stop: async (signal) => {
      await systemctl('stop', signal);
    },
  };
}
