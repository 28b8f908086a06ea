import { CbrError } from '../core/errors.ts';

/**
 * Which data directory takes each table directory of a restore. Cassandra reads a table's SSTables from every
 * data directory, so each `<ks>/<table>-<id>` (all its components together) goes whole to one directory:
 * largest first, each to the directory that is least full relative to its free space. Every directory gets
 * tables while there are enough of them, and none is given more than it has room for.
 */
export function placeTables(tables: ReadonlyMap<string, number>, free: readonly number[]): Record<string, number> {
  if (free.length === 0) throw new CbrError('CBR_ERR_CONFIG', 'the target has no data directory');
  const assigned = free.map(() => 0);
  const placement: Record<string, number> = {};
  const order = [...tables.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  for (const [key, bytes] of order) {
    let best = -1;
    for (let i = 0; i < free.length; i++) {
      if (assigned[i]! + bytes > free[i]!) continue;
      const fill = (assigned[i]! + bytes) / Math.max(free[i]!, 1);
      const bestFill = best < 0 ? Number.POSITIVE_INFINITY : (assigned[best]! + bytes) / Math.max(free[best]!, 1);
      if (fill < bestFill) best = i;
    }
    if (best < 0) {
      throw new CbrError('CBR_ERR_INSUFFICIENT_SPACE', `table ${key} (${Math.ceil(bytes / 2 ** 20)} MiB) fits in none of the target's data directories`);
    }
    assigned[best]! += bytes;
    placement[key] = best;
  }
  return placement;
}
