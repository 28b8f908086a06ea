// One cbr unpack run in its own process: archive file -> fresh directory, checksum verified.
import { createReadStream } from 'node:fs';
import type { Compression } from '../src/archive/format.ts';
import { unpackArchive } from '../src/archive/unpack.ts';

const [archive, target, sha256, compression] = process.argv.slice(2) as [string, string, string, Compression];
const r = await unpackArchive(createReadStream(archive, { highWaterMark: 1 << 20 }), target, { compression, sha256 });
process.stderr.write(`${JSON.stringify(r)}\n`);
