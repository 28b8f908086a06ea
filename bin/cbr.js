#!/usr/bin/env node
// cbr runs its TypeScript sources directly on Node 24 (type stripping); Node 20 cannot.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`cbr needs Node.js 24 (this is ${process.version}). Run it as "npx cbr" or "npm run cbr --" so node_modules/.bin/node is used.\n`);
  process.exit(2);
}
// V8 lets its young generation grow to 32 MiB (two semi-spaces of 16 MiB) once a process has allocated a lot, and
// cbr's start-up (cassandra-driver, zod, xstate) and streams do: 25-30 MiB of resident set for garbage that lives a
// moment. 2 MiB semi-spaces keep that small at no measured cost in speed. The flag only takes effect when the
// process starts, so cbr starts itself again with it (execve: same pid, same stdio; ~35 ms). NODE_OPTIONS or
// node's own arguments naming the flag win; CBR_NO_REEXEC=1 turns this off.
const SEMI_SPACE = '--max-semi-space-size=2';
if (
  typeof process.execve === 'function' &&
  process.platform !== 'win32' &&
  process.argv[1] &&
  !process.env.CBR_NO_REEXEC &&
  !process.execArgv.some((a) => a.startsWith('--max-semi-space-size')) &&
  !(process.env.NODE_OPTIONS ?? '').includes('--max-semi-space-size')
) {
  try {
    process.execve(process.execPath, [process.execPath, SEMI_SPACE, ...process.execArgv, process.argv[1], ...process.argv.slice(2)], process.env);
  } catch {
    // Not restarted: cbr runs as it is, only with V8's default young generation.
  }
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
