import { type Document, isMap, isNode, isScalar, parse, parseDocument, Scalar, YAMLMap } from 'yaml';
import { CbrError } from '../core/errors.ts';

/**
 * Structural edits of cassandra.yaml that keep the operator's comments and layout: the file is parsed into a
 * YAML document (the `yaml` package's Document API), changed node by node and printed again. The schema is
 * YAML 1.1, the one Cassandra's SnakeYAML reads, so a string such as `yes`, `null` or `2024` is quoted where
 * 1.1 would read it as a boolean, null or number.
 */
export class CassandraYaml {
  private readonly doc: Document;

  private constructor(doc: Document) {
    this.doc = doc;
  }

  static parse(text: string, source = 'cassandra.yaml'): CassandraYaml {
    const doc = parseDocument(text, { version: '1.1', keepSourceTokens: false });
    const problem = doc.errors[0];
    if (problem) throw new CbrError('CBR_ERR_CONFIG', `${source} is not valid YAML: ${problem.message.split('\n')[0]}`);
    if (doc.contents !== null && !isMap(doc.contents)) throw new CbrError('CBR_ERR_CONFIG', `${source} is not a YAML mapping`);
    if (doc.contents === null) doc.contents = new YAMLMap() as unknown as typeof doc.contents;
    return new CassandraYaml(doc);
  }

  /** The value at a dotted path (`sstable.selected_format`) as plain JS, or undefined when absent. */
  get(path: string): unknown {
    const node = this.doc.getIn(splitPath(path), true);
    if (node === undefined || node === null) return node;
    if (isScalar(node)) return node.value;
    return isNode(node) ? node.toJSON() : node;
  }

  has(path: string): boolean {
    return this.doc.hasIn(splitPath(path));
  }

  /** Sets a value at a dotted path, turning a missing, null or scalar parent into a mapping. */
  set(path: string, value: unknown): void {
    const keys = splitPath(path);
    for (let i = 1; i < keys.length; i++) {
      const parent = this.doc.getIn(keys.slice(0, i), true);
      if (!isMap(parent)) this.doc.setIn(keys.slice(0, i), new YAMLMap());
    }
    this.doc.setIn(keys, this.doc.createNode(value));
  }

  /** Sets a value inside existing sequences (`['seed_provider', 0, ...]`); the path must exist up to the last key. */
  setSeq(keys: readonly (string | number)[], value: string): void {
    const node = new Scalar(value);
    node.type = Scalar.QUOTE_DOUBLE;
    this.doc.setIn(keys, node);
  }

  /** A string written double-quoted, whatever it holds (names, addresses, paths). */
  setString(path: string, value: string): void {
    const node = new Scalar(value);
    node.type = Scalar.QUOTE_DOUBLE;
    this.set(path, node);
  }

  delete(path: string): void {
    this.doc.deleteIn(splitPath(path));
  }

  /**
   * The class of a pluggable component (`authenticator`, `authorizer`, `role_manager`, ...), written either flat
   * (`authenticator: PasswordAuthenticator`) or as a block with `class_name:` (the stock 5.0 file).
   */
  componentClass(key: string): string | undefined {
    const v = this.get(key);
    if (typeof v === 'string') return v;
    if (v && typeof v === 'object' && 'class_name' in v) return String((v as { class_name: unknown }).class_name);
    return undefined;
  }

  /** Sets a component's class in the form the file already uses; the old class's parameters go with it. */
  setComponentClass(key: string, className: string): void {
    const node = this.doc.get(key, true);
    if (isMap(node)) {
      node.set('class_name', className);
      node.delete('parameters');
    } else {
      this.doc.set(key, className);
    }
  }

  toString(): string {
    return this.doc.toString({ lineWidth: 0 });
  }
}

function splitPath(path: string): string[] {
  const keys = path.split('.');
  if (keys.some((k) => !/^[A-Za-z0-9_]+$/.test(k))) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `invalid cassandra.yaml key ${JSON.stringify(path)}`);
  return keys;
}

/**
 * `key=value` from `--set`: the key a dotted path, the value read as YAML 1.1 (so `true`, `256`, `[a, b]` and
 * `{k: v}` have their types); an empty value removes the key.
 */
export function parseSetting(arg: string): { path: string; value: unknown; remove: boolean } {
  const eq = arg.indexOf('=');
  if (eq <= 0) throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--set needs key=value (got ${JSON.stringify(arg.slice(0, 80))})`);
  const path = arg.slice(0, eq).trim();
  splitPath(path);
  const text = arg.slice(eq + 1);
  if (text.trim() === '') return { path, value: undefined, remove: true };
  let value: unknown;
  try {
    value = parse(text, { version: '1.1' });
  } catch (err) {
    throw new CbrError('CBR_ERR_INVALID_ARGUMENT', `--set ${path}: the value is not valid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  return { path, value, remove: false };
}

export function applySettings(y: CassandraYaml, settings: readonly { path: string; value: unknown; remove: boolean }[]): void {
  for (const s of settings) {
    if (s.remove) y.delete(s.path);
    else y.set(s.path, s.value);
  }
}

/** A cluster name Cassandra, cqlsh and a YAML file all take: printable, one line, at most 256 characters. */
export function checkClusterName(name: string): string {
  if (name.length === 0 || name.length > 256 || /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(name)) {
    throw new CbrError(
      'CBR_ERR_INVALID_ARGUMENT',
      `cluster name ${JSON.stringify(name.slice(0, 80))} is empty, too long or holds a newline or control character`,
    );
  }
  return name;
}
