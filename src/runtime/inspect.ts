import { createWebSocketInspector } from '@statelyai/inspect';
import type { InspectionEvent, Observer } from 'xstate';
import { CbrError } from '../core/errors.ts';

/**
 * `--inspect <ws-url>`: feeds the inspection events of every workflow actor (actors, events, snapshots) to a
 * Stately inspector listening on a WebSocket, for those who run one. Contexts hold ids, paths and counters only
 * (never a password or key), so nothing secret goes out; an unreachable inspector is retried in the background
 * and never holds a workflow up.
 */
export interface Inspection {
  inspect: Observer<InspectionEvent>;
  stop(): void;
}

export function createInspection(url: string): Inspection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--inspect needs a ws:// or wss:// URL');
  }
  if (parsed.protocol !== 'ws:' && parsed.protocol !== 'wss:') throw new CbrError('CBR_ERR_INVALID_ARGUMENT', '--inspect needs a ws:// or wss:// URL');
  const inspector = createWebSocketInspector({ url: parsed.href });
  return { inspect: inspector.inspect as Observer<InspectionEvent>, stop: () => inspector.stop() };
}
