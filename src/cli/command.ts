import { parseArgs } from 'node:util';
import { CbrError } from '../core/errors.ts';
import type { CliIO } from './io.ts';

/**
 * A command's options are declared once, each with its description: parsing (node:util parseArgs, strict), the
 * usage line, `cbr <command> --help` and the README drift test (test/unit/cli/help.test.ts) all read the same
 * declaration, so none of them can drift from what the command accepts.
 */
export interface OptionSpec {
  type: 'string' | 'boolean';
  description: string;
  default?: string | boolean;
  /** Repeatable: every occurrence is kept, in order. */
  multiple?: boolean;
  /** A string option's environment variable, read when the option is not given (before the default). */
  env?: string;
  /** How the value is written in usage and help: `<profile>`, `zstd|gzip|none`; default `<option name>`. */
  placeholder?: string;
  /** The heading --help lists the option under (set by optionGroup); the command's own options come first. */
  group?: string;
}

export type OptionSpecs = Record<string, OptionSpec>;

type Scalar<S> = S extends { type: 'boolean' } ? boolean : string;
type Value<S> = S extends { multiple: true } ? Scalar<S>[] : Scalar<S>;
/** What parsing yields: an option with a default is always there, any other may be undefined. */
export type Values<O extends OptionSpecs> = { -readonly [K in keyof O]: O[K] extends { default: string | boolean } ? Value<O[K]> : Value<O[K]> | undefined };

/** Keeps the literal types of a declaration (`type: 'boolean'`, which options have defaults) for Values. */
export function options<const O extends OptionSpecs>(specs: O): O {
  return specs;
}

/** A set of options several commands share, listed under its own heading in --help. */
export function optionGroup<const O extends OptionSpecs>(group: string, specs: O): O {
  return Object.fromEntries(Object.entries(specs).map(([k, s]) => [k, { ...s, group }])) as O;
}

/** Every command takes --json (and --help, which main answers). */
export const jsonOption = options({
  json: { type: 'boolean', default: false, description: 'print JSON instead of text (a failure as {"error": {code, message, retryable}})' },
});

export interface Command {
  /** As typed after `cbr`: `backup-create`, `sandbox start`. */
  name: string;
  /** One line for the list of commands. */
  summary: string;
  /** The usage line (without `usage: `). */
  usage: string;
  options: OptionSpecs;
  subcommands?: Readonly<Record<string, Command>>;
  /** The --help text; a command with subcommands gives the help of the one argv names. */
  help(argv?: readonly string[]): string;
  run(argv: string[], io: CliIO): Promise<number>;
}

export interface Parsed<O extends OptionSpecs> {
  values: Values<O>;
  positionals: string[];
  /** The generated usage line, for the command's own argument errors. */
  usage: string;
}

export interface CommandSpec<O extends OptionSpecs> {
  summary: string;
  /** What comes between the command's name and `[options]`: positionals, and options that are not optional. */
  args?: string;
  options: O;
  /** Lines after the option table: how options combine, where paths are resolved. */
  notes?: readonly string[];
  run(parsed: Parsed<O>, io: CliIO): Promise<number>;
}

export function defineCommand<const O extends OptionSpecs>(name: string, spec: CommandSpec<O>): Command {
  const usage = `cbr ${name}${spec.args ? ` ${spec.args}` : ''}${Object.keys(spec.options).length ? ' [options]' : ''}`;
  return {
    name,
    summary: spec.summary,
    usage,
    options: spec.options,
    help: () => renderHelp(usage, spec.summary, spec.options, spec.notes ?? []),
    run: (argv, io) => spec.run({ ...parse(argv, spec.options, `${usage}\n(cbr ${name} --help lists them)`, io.env), usage }, io),
  };
}

/**
 * A command whose first word picks a subcommand (`cbr sandbox start <name>`): each subcommand has its own
 * declaration and help; the word may come after options that take no value (`cbr sandbox --json status`).
 */
export function defineCommandGroup(name: string, summary: string, subcommands: Record<string, Command>): Command {
  const usage = `cbr ${name} <${Object.keys(subcommands).join('|')}> ...`;
  const pick = (argv: readonly string[]) => {
    const at = argv.findIndex((a) => !a.startsWith('-'));
    const verb = at < 0 ? '' : argv[at]!;
    return { verb, sub: Object.hasOwn(subcommands, verb) ? subcommands[verb] : undefined, rest: argv.filter((_, i) => i !== at) };
  };
  return {
    name,
    summary,
    usage,
    options: {},
    subcommands,
    help(argv = []) {
      const { sub } = pick(argv);
      if (sub) return sub.help();
      const width = Math.max(...Object.keys(subcommands).map((k) => k.length));
      const lines = [`usage: ${usage}`, '', summary, '', 'commands:'];
      for (const [verb, c] of Object.entries(subcommands)) lines.push(`  ${verb.padEnd(width)}  ${c.summary}`);
      lines.push('', `cbr ${name} <command> --help lists its options.`);
      return `${lines.join('\n')}\n`;
    },
    run(argv, io) {
      const { verb, sub, rest } = pick(argv);
      if (!sub) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `unknown ${name} verb ${JSON.stringify(verb)}\nusage: ${usage}`);
      return sub.run(rest, io);
    },
  };
}

/** parseArgs with cbr's error (unknown or malformed options are CBR_ERR_INVALID_ARGUMENT with the usage), then env and defaults. */
export function parse<O extends OptionSpecs>(argv: string[], specs: O, usage: string, env: NodeJS.ProcessEnv): { values: Values<O>; positionals: string[] } {
  const config = Object.fromEntries(Object.entries(specs).map(([k, s]) => [k, s.multiple ? { type: s.type, multiple: true } : { type: s.type }]));
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({ args: argv, options: config, allowPositionals: true, strict: true });
  } catch (err) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `${(err as Error).message}\nusage: ${usage}`);
  }
  const values: Record<string, unknown> = { ...parsed.values };
  for (const [k, s] of Object.entries(specs)) {
    if (values[k] !== undefined) continue;
    const fromEnv = s.env && s.type === 'string' ? env[s.env] : undefined;
    if (fromEnv !== undefined) values[k] = fromEnv;
    else if (s.default !== undefined) values[k] = s.default;
  }
  return { values: values as Values<O>, positionals: parsed.positionals };
}

/** `--config <profile>`, `--force`, `--set <key=value> ...` */
export function flag(name: string, spec: OptionSpec): string {
  const value = spec.type === 'string' ? ` ${spec.placeholder ?? `<${name}>`}` : '';
  return `--${name}${value}${spec.multiple ? ' ...' : ''}`;
}

const WIDTH = 100;
const FLAG_COLUMN = 34;

function renderHelp(usage: string, summary: string, specs: OptionSpecs, notes: readonly string[]): string {
  const sections = new Map<string, [string, OptionSpec][]>([['options', []]]);
  for (const [name, spec] of Object.entries(specs)) {
    const heading = spec.group ?? 'options';
    sections.set(heading, [...(sections.get(heading) ?? []), [name, spec]]);
  }
  const lines = [`usage: ${usage}`, '', summary];
  for (const [heading, rows] of sections) {
    if (rows.length === 0) continue;
    lines.push('', `${heading}:`);
    for (const [name, spec] of rows) {
      const left = `  ${flag(name, spec)}`;
      const text = describe(spec);
      if (left.length + 2 > FLAG_COLUMN) lines.push(left, ...wrap(text, FLAG_COLUMN));
      else {
        const [first = '', ...more] = wrap(text, FLAG_COLUMN);
        lines.push(`${left.padEnd(FLAG_COLUMN)}${first.trimStart()}`, ...more);
      }
    }
  }
  if (notes.length) lines.push('', ...notes);
  return `${lines.join('\n')}\n`;
}

function describe(spec: OptionSpec): string {
  const extra = [
    spec.default !== undefined && spec.default !== false && spec.default !== '' ? `default ${spec.default}` : '',
    spec.env ? `env ${spec.env}` : '',
  ].filter(Boolean);
  return extra.length ? `${spec.description} [${extra.join('; ')}]` : spec.description;
}

/** Words into lines of at most WIDTH columns, each indented by `indent`. */
function wrap(text: string, indent: number): string[] {
  const lines: string[] = [];
  let line = '';
  for (const word of text.split(' ')) {
    if (line && indent + line.length + 1 + word.length > WIDTH) {
      lines.push(' '.repeat(indent) + line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  lines.push(' '.repeat(indent) + line);
  return lines;
}
