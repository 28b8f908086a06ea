import { CbrError, ERRORS, toErrorInfo } from '../core/errors.ts';
import type { Command } from './command.ts';
import { type CliIO, processIO } from './io.ts';

/** Commands load lazily: `cbr sandbox status` does not pay for the backup code. */
export const COMMANDS: Readonly<Record<string, () => Promise<Command>>> = {
  agent: async () => (await import('./commands/agent.ts')).command,
  'backup-create': async () => (await import('./commands/backup-create.ts')).command,
  'backup-list': async () => (await import('./commands/backup-list.ts')).command,
  'backup-show': async () => (await import('./commands/backup-show.ts')).command,
  'backup-delete': async () => (await import('./commands/backup-delete.ts')).command,
  'backup-prune': async () => (await import('./commands/backup-prune.ts')).command,
  'backup-verify': async () => (await import('./commands/backup-verify.ts')).command,
  create: async () => (await import('./commands/create.ts')).command,
  drill: async () => (await import('./commands/drill.ts')).command,
  machines: async () => (await import('./commands/machines.ts')).command,
  resume: async () => (await import('./commands/resume.ts')).command,
  sandbox: async () => (await import('./commands/sandbox.ts')).command,
  status: async () => (await import('./commands/status.ts')).command,
  ui: async () => (await import('./commands/ui.ts')).command,
  watch: async () => (await import('./commands/watch.ts')).command,
};

export async function main(argv: string[], io: CliIO = processIO()): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    io.stdout(await help());
    return name ? 0 : 2;
  }
  const load = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!load) {
    io.stderr(`cbr: unknown command ${JSON.stringify(name)}\n${await help()}`);
    return ERRORS.CBR_ERR_INVALID_ARGUMENT.exit;
  }
  const json = rest.includes('--json');
  try {
    const command = await load();
    if (rest.includes('--help') || rest.includes('-h')) {
      io.stdout(command.help(rest));
      return 0;
    }
    return await command.run(rest, io);
  } catch (err) {
    const info = toErrorInfo(err);
    const details = err instanceof CbrError ? err.details : undefined;
    if (json) io.stdout(`${JSON.stringify({ error: { ...info, ...details } }, null, 2)}\n`);
    io.stderr(`cbr ${name}: ${info.code}: ${info.message}\n`);
    return err instanceof CbrError ? err.exitCode : ERRORS.CBR_ERR_INTERNAL.exit;
  }
}

async function help(): Promise<string> {
  const lines = ['usage: cbr <command> [options]', '', 'commands:'];
  for (const [name, load] of Object.entries(COMMANDS)) {
    const c = await load();
    lines.push(`  ${name.padEnd(16)} ${c.summary}`);
  }
  lines.push('', 'Every command takes --help (its options) and --json.');
  return `${lines.join('\n')}\n`;
}
