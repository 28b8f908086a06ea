#!/usr/bin/env node
// cbr runs its TypeScript sources directly on Node 24 (type stripping); Node 20 cannot.
const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  process.stderr.write(`cbr needs Node.js 24 (this is ${process.version}). Run it as "npx cbr" or "npm run cbr --" so node_modules/.bin/node is used.\n`);
  process.exit(2);
}
const { main } = await import('../src/cli/main.ts');
process.exitCode = await main(process.argv.slice(2));
