// One cbr pack run in its own process (so its peak RSS is its own): packs a dataset to /dev/null.

import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import type { Compression } from '../src/archive/format.ts';
import { packArchive } from '../src/archive/pack.ts';
import { dataset } from './lib.ts';

const [kind, compression, encrypt, out] = process.argv.slice(2) as ['mixed' | 'small', Compression, string, string | undefined];
const { files } = dataset(kind);
const { stream, result } = packArchive(files, { compression, key: encrypt === 'enc' ? randomBytes(32) : undefined });
await Promise.all([result, pipeline(stream, createWriteStream(out ?? '/dev/null'))]);
const r = await result;
process.stderr.write(`${JSON.stringify({ size: r.size })}\n`);
