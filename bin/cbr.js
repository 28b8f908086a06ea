#!/usr/bin/env node
// cbr runs its TypeScript sources directly on Node 24 (type stripping); Node 20 cannot.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`cbr needs Node.js 24 (this is ${process.version}). Run it as "npx cbr" or "npm run cbr --" so node_modules/.bin/node is used.\n`);
  process.exit(2);
}
// Node's compile cache keeps each source file's type-stripped, compiled form (keyed by its content) in cbr's cache
// folder: a later start neither loads the TypeScript stripper (~20 MiB resident) nor strips and compiles again.
// NODE_COMPILE_CACHE names another folder; NODE_DISABLE_COMPILE_CACHE=1 turns it off. A folder that cannot be
// written only costs the speed-up.
if (!process.env.NODE_DISABLE_COMPILE_CACHE) {
  const { enableCompileCache } = await import('node:module');
  const { homedir } = await import('node:os');
  const { join } = await import('node:path');
  const env = process.env;
  const cache = env.CBR_CACHE || join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'cbr');
  enableCompileCache(env.NODE_COMPILE_CACHE || join(cache, 'node-compile'));
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
