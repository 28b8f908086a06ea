import { readFileSync } from 'node:fs';

/**
 * Who owns an active workflow, robust to reboots and pid reuse: the boot id of the kernel, the pid and the
 * process's start time (clock ticks since boot, /proc/<pid>/stat field 22). A bare pid is not enough: after a
 * reboot, or once the pid is reused, a dead owner would look alive and its workflow never resume.
 */
export function ownerToken(pid: number = process.pid): string {
  return `${bootId()}:${pid}:${startTime(pid) ?? 'unknown'}`;
}

/** True when the process the token names is still the one running (same boot, same pid, same start time). */
export function ownerAlive(token: string | null, pid: number | null): boolean {
  if (token) {
    const [boot, p, start] = token.split(':');
    if (boot !== bootId()) return false;
    const now = startTime(Number(p));
    return now !== null && String(now) === start;
  }
  // Rows written before owner tokens: the pid is all there is.
  if (pid === null) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

let cachedBootId: string | undefined;

function bootId(): string {
  if (cachedBootId === undefined) {
    try {
      cachedBootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
    } catch {
      cachedBootId = 'no-boot-id';
    }
  }
  return cachedBootId;
}

function startTime(pid: number): number | null {
  if (!Number.isInteger(pid) || pid <= 0) return null;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing one.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return null;
    const ticks = Number(fields[19]);
    return Number.isFinite(ticks) ? ticks : null;
  } catch {
    return null;
  }
}
