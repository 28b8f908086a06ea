import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { findJavaHome } from '../../../src/cassandra/java.ts';
import { compileJmxClient, JMX_MAIN, JMX_SOURCE } from '../../../src/cassandra/jmx/compile.ts';
import { scratch } from '../../helpers/tmp.ts';

describe("compiling cbr's JMX client (the JDK's javac)", () => {
  it('two first uses at once end with one complete folder keyed by the source; an edited source compiles anew', async () => {
    const javaHome = await findJavaHome();
    const cache = scratch('cbr-jmx-cache-');
    const edited = join(scratch('cbr-jmx-src-'), 'CbrJmx.java');
    await writeFile(edited, `${await readFile(JMX_SOURCE, 'utf8')}\n// edited\n`);
    const [a, b, c] = await Promise.all([
      compileJmxClient(javaHome, cache, JMX_SOURCE),
      compileJmxClient(javaHome, cache, JMX_SOURCE),
      compileJmxClient(javaHome, cache, edited),
    ]);
    assert.equal(a, b);
    assert.notEqual(c, a);
    for (const dir of [a, c]) assert.ok(existsSync(join(dir, `${JMX_MAIN}.class`)));
    assert.deepEqual(readdirSync(cache).sort(), [a, c].map((d) => d.slice(cache.length + 1)).sort(), 'no temporary folder left behind');
    assert.equal(await compileJmxClient(javaHome, cache, JMX_SOURCE), a, 'compiled once');
  });

  it('a JRE without javac is CBR_ERR_JAVA_NOT_FOUND naming the way out', async () => {
    const cache = scratch('cbr-jmx-cache-');
    await assert.rejects(compileJmxClient(join(cache, 'no-jdk'), cache, JMX_SOURCE), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'CBR_ERR_JAVA_NOT_FOUND');
      assert.match(e.message, /jmx\.client/);
      return true;
    });
  });
});
