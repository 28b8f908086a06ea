import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type Command, defineCommand, flag, parse } from '../../../src/cli/command.ts';
import type { CliIO } from '../../../src/cli/io.ts';
import { COMMANDS, main } from '../../../src/cli/main.ts';
import { REPO } from '../../helpers/paths.ts';

function fakeIO(env: NodeJS.ProcessEnv = {}) {
  const io = { out: '', err: '' };
  const cli: CliIO = {
    stdout: (t) => {
      io.out += t;
    },
    stderr: (t) => {
      io.err += t;
    },
    env,
    isTTY: false,
  };
  return { io, cli };
}

/** Every command as typed after `cbr`, a command with subcommands as one entry per subcommand (`sandbox start`). */
async function allCommands(): Promise<Map<string, Command>> {
  const all = new Map<string, Command>();
  for (const [name, load] of Object.entries(COMMANDS)) {
    const command = await load();
    if (command.subcommands) for (const [verb, sub] of Object.entries(command.subcommands)) all.set(`${name} ${verb}`, sub);
    else all.set(name, command);
  }
  return all;
}

/**
 * The cbr command lines README shows: each `npx cbr ...` line of a code block (continuation lines joined, comments
 * dropped) and each inline `cbr ...` / `npx cbr ...` span, as [command, the options it names].
 */
async function readmeCommandLines(commands: Map<string, Command>): Promise<{ command: string; options: string[]; text: string }[]> {
  const readme = await readFile(join(REPO, 'README.md'), 'utf8');
  const texts: string[] = [];
  const prose = readme.replace(/^```[a-z]*\n([\s\S]*?)^```$/gm, (_, block: string) => {
    const joined = block.replace(/\\\n\s*/g, ' ');
    let previous = -1;
    for (const line of joined.split('\n')) {
      if (/^\s*npx cbr /.test(line)) previous = texts.push(line.replace(/\s+#.*$/, '')) - 1;
      // A comment line naming options (`# Keystone v3: --swift-auth-url ...`) is about the command above it.
      else if (/^\s*#.*--/.test(line) && previous >= 0) texts[previous] += ` ${line}`;
    }
    return '';
  });
  for (const m of prose.matchAll(/`(?:npx )?cbr ([^`]+)`/g)) texts.push(`cbr ${m[1]!.replace(/\s+/g, ' ')}`);
  const lines = [];
  for (const text of texts) {
    const words = text.replace(/^\s*(npx )?cbr /, '').split(' ');
    const name = commands.has(words[0]!) ? words[0]! : `${words[0]} ${words[1]}`;
    if (!commands.has(name)) continue;
    lines.push({ command: name, options: [...text.matchAll(/--([a-z0-9][a-z0-9-]*)/g)].map((m) => m[1]!), text });
  }
  return lines;
}

describe('CLI help: declared once, README in step', () => {
  it('README shows every command, and only options its declaration has', async () => {
    const commands = await allCommands();
    const lines = await readmeCommandLines(commands);
    for (const name of commands.keys()) {
      assert.ok(
        lines.some((l) => l.command === name),
        `README shows no usage of cbr ${name}`,
      );
    }
    for (const l of lines) {
      const declared = commands.get(l.command)!.options;
      // --help is main's, for every command.
      for (const o of l.options) assert.ok(o === 'help' || Object.hasOwn(declared, o), `README: cbr ${l.command} has no option --${o} (${l.text.trim()})`);
    }
  });

  it('`cbr <command> --help` runs for every command and lists every declared option with its description', async () => {
    for (const [name, command] of await allCommands()) {
      const { io, cli } = fakeIO();
      assert.equal(await main([...name.split(' '), '--help'], cli), 0, name);
      assert.equal(io.err, '', name);
      assert.ok(io.out.startsWith(`usage: ${command.usage}\n`), `${name}: ${io.out.split('\n')[0]}`);
      for (const [option, spec] of Object.entries(command.options)) {
        assert.ok(spec.description.length > 0, `${name} --${option} has a description`);
        assert.ok(io.out.includes(`  ${flag(option, spec)}`), `${name} --help lists --${option}`);
        assert.ok(io.out.replace(/\s+/g, ' ').includes(spec.description.replace(/\s+/g, ' ')), `${name} --help describes --${option}`);
      }
    }
  });

  it('`cbr --help` lists every command with its summary; `cbr sandbox --help` every subcommand', async () => {
    const top = fakeIO();
    assert.equal(await main(['--help'], top.cli), 0);
    for (const [name, load] of Object.entries(COMMANDS)) assert.match(top.io.out, new RegExp(`^  ${name} +${escapeRegExp((await load()).summary)}$`, 'm'));
    const sandbox = fakeIO();
    assert.equal(await main(['sandbox', '--help'], sandbox.cli), 0);
    for (const verb of ['start', 'stop', 'status', 'rm', 'fetch']) assert.match(sandbox.io.out, new RegExp(`^  ${verb} `, 'm'));
  });

  it('refuses an unknown option with CBR_ERR_INVALID_ARGUMENT and the generated usage', async () => {
    const commands = await allCommands();
    for (const argv of [
      ['backup-list', '--bogus'],
      ['backup-create', 'n', '--no-such-option', 'x'],
      ['sandbox', 'stop', 'x', '--heap', '1G'],
    ]) {
      const { io, cli } = fakeIO();
      assert.equal(await main(argv, cli), 2, argv.join(' '));
      const name = commands.has(argv[0]!) ? argv[0]! : `${argv[0]} ${argv[1]}`;
      assert.match(io.err, /CBR_ERR_INVALID_ARGUMENT/);
      assert.ok(io.err.includes(`usage: ${commands.get(name)!.usage}\n`), io.err);
    }
    const json = fakeIO();
    assert.equal(await main(['status', '--bogus', '--json'], json.cli), 2);
    assert.equal(JSON.parse(json.io.out).error.code, 'CBR_ERR_INVALID_ARGUMENT');
    const verb = fakeIO();
    assert.equal(await main(['sandbox', 'explode'], verb.cli), 2);
    assert.match(verb.io.err, /unknown sandbox verb "explode"/);
  });

  it('an option given wins over its environment variable, which wins over its default', () => {
    const options = {
      storage: { type: 'string', env: 'T_STORAGE', default: 'local', description: 'd' },
      root: { type: 'string', env: 'T_ROOT', description: 'd' },
      set: { type: 'string', multiple: true, description: 'd' },
      force: { type: 'boolean', default: false, description: 'd' },
    } as const;
    const none = parse([], options, 'u', {});
    assert.deepEqual({ ...none.values }, { storage: 'local', force: false });
    const env = parse(['x'], options, 'u', { T_STORAGE: 'swift', T_ROOT: '/r' });
    assert.deepEqual({ ...env.values, positionals: env.positionals }, { storage: 'swift', root: '/r', force: false, positionals: ['x'] });
    const given = parse(['--storage', 's3', '--set', 'a=1', '--set', 'b=2', '--force'], options, 'u', { T_STORAGE: 'swift' });
    assert.deepEqual({ ...given.values }, { storage: 's3', set: ['a=1', 'b=2'], force: true });
  });

  it('generates the usage line from the declaration', () => {
    const c = defineCommand('thing', { summary: 's', args: '<name>', options: { x: { type: 'string', description: 'x' } }, run: async () => 0 });
    assert.equal(c.usage, 'cbr thing <name> [options]');
    assert.equal(defineCommand('bare', { summary: 's', options: {}, run: async () => 0 }).usage, 'cbr bare');
  });
});

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
