import type { ObjectStore } from '../storage/port.ts';

/** A record lists every file of a snapshot (~300 bytes each): 256 MiB is ~800,000 files, and V8's longest string is 512 MiB. */
export const MAX_RECORD_BYTES = 256 * 2 ** 20;
/** A lease, a marker: a few hundred bytes. */
export const MAX_SMALL_BYTES = 2 ** 20;

/**
 * Reads a whole object that cbr wrote as a small one (a record, a marker, a journal) and stops reading past
 * `maxBytes`: an object from the store is not trusted, and one made huge (by mistake or by whoever can write
 * there) must end in the caller's coded error, not in an exhausted heap. `tooLarge` makes that error.
 */
export async function readSmall(
  store: ObjectStore,
  key: string,
  maxBytes: number,
  tooLarge: (maxBytes: number) => Error,
  signal?: AbortSignal,
): Promise<Buffer> {
  const body = await store.get(key, signal ? { signal } : {});
  const parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    length += (chunk as Buffer).length;
    if (length > maxBytes) {
      body.destroy();
      throw tooLarge(maxBytes);
    }
    parts.push(chunk as Buffer);
  }
  return Buffer.concat(parts, length);
}
