import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';

const REPO = join(import.meta.dirname, '..', '..', '..');

/** The source modules a fresh process has loaded after importing `modules` (module hooks see each one load). */
function loadedBy(modules: string[]): string[] {
  const script = `
    import { registerHooks } from 'node:module';
    const seen = [];
    registerHooks({ load(url, ctx, next) { seen.push(url); return next(url, ctx); } });
    for (const m of ${JSON.stringify(modules)}) await import(m);
    process.stdout.write(JSON.stringify(seen.filter((u) => u.includes('/src/')).map((u) => u.split('/src/')[1])));
  `;
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { cwd: REPO, encoding: 'utf8' })) as string[];
}

describe('cbr backup-create starts the JMX client before it loads the runtime', () => {
  it('loading the command (what runs before its JMX client JVM is started) loads neither the runtime, the machines nor the state database', () => {
    const loaded = loadedBy([join(REPO, 'src/cli/main.ts'), join(REPO, 'src/cli/commands/backup-create.ts')].map((p) => `file://${p}`));
    assert.ok(loaded.includes('cli/commands/backup-create.ts'));
    assert.ok(loaded.includes('cassandra/nodetool.ts'), 'the JMX client is there to start');
    for (const late of ['runtime/runtime.ts', 'machines/backup.machine.ts', 'state/stateDb.ts', 'cli/context.ts']) {
      assert.ok(!loaded.includes(late), `${late} loads only after the JVM was started`);
    }
  });
});
