import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

type Gc = (opts?: { type?: 'minor' | 'major'; execution?: 'sync' | 'async' }) => void;

let gc: Gc | null | undefined;

/** V8's gc(), exposed once for this process (as `--expose-gc` would), or null when V8 refuses. */
function exposedGc(): Gc | null {
  if (gc !== undefined) return gc;
  try {
    setFlagsFromString('--expose-gc');
    gc = runInNewContext('gc') as Gc;
  } catch {
    gc = null;
  }
  return gc;
}

/**
 * Streaming a backup allocates a new 1 MiB buffer per chunk read and per block compressed, dead a moment later.
 * Their memory lies outside V8's heap, which collects it only after ~64 MiB more of it exists, so a busy stream
 * holds tens of MiB of dead buffers. Counting the bytes that went through and asking for a young-generation
 * collection every `everyBytes` (a millisecond or two each) frees them as they die. CBR_GC_EVERY_MIB=0 turns it
 * off.
 */
export function bufferReleaser(env: NodeJS.ProcessEnv = process.env): (bytes: number) => void {
  const mib = Number(env['CBR_GC_EVERY_MIB'] ?? 16);
  const collect = mib > 0 ? exposedGc() : null;
  if (!collect) return () => {};
  const every = mib * 2 ** 20;
  let since = 0;
  return (bytes) => {
    since += bytes;
    if (since < every) return;
    since = 0;
    collect({ type: 'minor', execution: 'sync' });
  };
}
