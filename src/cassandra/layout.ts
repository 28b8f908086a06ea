import { existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';

/**
 * The on-disk layout of Cassandra 5.0: `<data_dir>/<keyspace>/<table>-<table id hex>/` holding SSTables,
 * `snapshots/<tag>/` and `backups/`; secondary-index SSTables in subdirectories whose names start with '.'.
 */

export const TABLE_DIR_RE = /^([A-Za-z0-9_]+)-([0-9a-f]{32})$/;
export const KEYSPACE_RE = /^[A-Za-z0-9_]{1,48}$/;

export interface TableDir {
  keyspace: string;
  table: string;
  id: string;
  /** `<table>-<id>`, the directory name. */
  dirName: string;
  path: string;
  dataDir: string;
}

export interface SnapshotFile {
  /** Absolute path on disk. */
  path: string;
  /** Path inside the archive: `<ks>/<table>-<id>/<file>` (or `.../.<index>/<file>`), snapshot levels removed. */
  archivePath: string;
  size: number;
  keyspace: string;
  table: string;
}

export async function listKeyspaces(dataDirs: readonly string[]): Promise<string[]> {
  const names = new Set<string>();
  for (const dir of dataDirs) {
    if (!existsSync(dir)) continue;
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory() && KEYSPACE_RE.test(e.name)) names.add(e.name);
    }
  }
  return [...names].sort();
}

export async function listTableDirs(dataDirs: readonly string[]): Promise<TableDir[]> {
  const out: TableDir[] = [];
  for (const dataDir of dataDirs) {
    for (const keyspace of await listKeyspaces([dataDir])) {
      const ksPath = join(dataDir, keyspace);
      for (const e of await readdir(ksPath, { withFileTypes: true })) {
        const m = TABLE_DIR_RE.exec(e.name);
        if (!e.isDirectory() || !m) continue;
        out.push({ keyspace, table: m[1]!, id: m[2]!, dirName: e.name, path: join(ksPath, e.name), dataDir });
      }
    }
  }
  return out;
}

/**
 * Every file of snapshot `tag` in every table: all SSTable components, secondary-index subdirectories,
 * manifest.json and schema.cql. Sorted by archive path so archives are reproducible.
 */
export async function listSnapshotFiles(dataDirs: readonly string[], tag: string): Promise<SnapshotFile[]> {
  const files: SnapshotFile[] = [];
  for (const t of await listTableDirs(dataDirs)) {
    const snapDir = join(t.path, 'snapshots', tag);
    if (!existsSync(snapDir)) continue;
    for (const path of await walkFiles(snapDir)) {
      const rel = relative(snapDir, path).split(sep).join('/');
      const st = await stat(path);
      files.push({ path, archivePath: `${t.keyspace}/${t.dirName}/${rel}`, size: st.size, keyspace: t.keyspace, table: t.table });
    }
  }
  // With several data directories a table's snapshot is split between them, and each part carries its own
  // manifest.json and schema.cql: one of each goes into the archive (schema.cql is the same; the manifest
  // only serves snapshots). SSTable names are unique per table across directories.
  const seen = new Set<string>();
  const unique = files.filter((f) => {
    const meta = /\/(manifest\.json|schema\.cql)$/.test(f.archivePath);
    if (meta && seen.has(f.archivePath)) return false;
    seen.add(f.archivePath);
    return true;
  });
  files.length = 0;
  files.push(...unique);
  files.sort((a, b) => (a.archivePath < b.archivePath ? -1 : a.archivePath > b.archivePath ? 1 : 0));
  return files;
}

/** Live SSTable files of one table (for comparing a snapshot with its source). */
export async function listLiveFiles(table: TableDir): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(table.path, { withFileTypes: true })) {
    if (e.isFile()) out.push(join(table.path, e.name));
    else if (e.isDirectory() && e.name.startsWith('.')) out.push(...(await walkFiles(join(table.path, e.name))));
  }
  return out.sort();
}

async function walkFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walkFiles(p)));
    else if (e.isFile()) out.push(p);
  }
  return out;
}
