// Streams N GiB of generated data through the Swift driver (default 1 GiB segments) and back, in its own process
// so its peak RSS is its own. Prints {sha256 up, sha256 down, size, maxRssMiB, seconds} as JSON.
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { createSwiftStore } from '../../src/storage/swift/swiftStore.ts';

const [credentialsFile, authUrl, container, gib] = process.argv.slice(2) as [string, string, string, string];
const total = Number(gib) * 2 ** 30;
const store = createSwiftStore({ driver: 'swift', authUrl, authVersion: 1, credentialsFile, container });
const block = randomBytes(1 << 20);
const up = createHash('sha256');
let sent = 0;
const source = Readable.from(
  (function* () {
    while (sent < total) {
      // Vary every MiB so no two are alike.
      const b = Buffer.from(block);
      b.writeUInt32LE(sent / (1 << 20), 0);
      up.update(b);
      sent += b.length;
      yield b;
    }
  })(),
);
const t0 = Date.now();
const { size } = await store.put('big/stream', source);
const down = createHash('sha256');
let got = 0;
for await (const c of await store.get('big/stream')) {
  down.update(c as Buffer);
  got += (c as Buffer).length;
}
const seconds = (Date.now() - t0) / 1000;
await store.delete('big/stream');
process.stdout.write(
  `${JSON.stringify({ up: up.digest('hex'), down: down.digest('hex'), size, got, seconds, maxRssMiB: process.resourceUsage().maxRSS / 1024 })}\n`,
);
