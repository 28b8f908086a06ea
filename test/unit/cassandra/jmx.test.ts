import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { type ChildSpec, JmxSession } from '../../../src/cassandra/jmx/session.ts';
import { jmxClientKind, jmxNodetool, parseInfoId, parseJmxStatus, parseStatus, readJmxPassword } from '../../../src/cassandra/nodetool.ts';
import type { Profile } from '../../../src/cassandra/profile.ts';
import { rejectsCoded } from '../../fixtures/stepKit.ts';
import { scratch } from '../../helpers/tmp.ts';

const FAKE = fileURLToPath(new URL('../../fixtures/fakeJmxChild.ts', import.meta.url));

function fakeSession(hello: Record<string, unknown> = {}, idleMs?: number): JmxSession {
  const spec = async (): Promise<ChildSpec> => ({ command: process.execPath, args: [FAKE], hello: { host: '127.0.0.1', port: 7199, ...hello } });
  return new JmxSession(spec, idleMs);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function gone(pid: number): Promise<void> {
  while (alive(pid)) await new Promise((r) => setTimeout(r, 20));
}

describe('JMX client session (a fake child speaking the protocol)', () => {
  it('serves every request from one child, and the password goes on its stdin, not its command line', async () => {
    const s = fakeSession({ user: 'cassandra', password: 's3cret' });
    try {
      const first = await s.request('pid');
      const echo = (await s.request('echo', { tag: 'b1' })) as Record<string, unknown>;
      assert.equal(echo['tag'], 'b1');
      assert.equal(echo['op'], 'echo');
      const { hello, argv } = (await s.request('hello')) as { hello: Record<string, unknown>; argv: string[] };
      assert.equal(hello['password'], 's3cret');
      assert.ok(!argv.join(' ').includes('s3cret'));
      assert.equal(await s.request('pid'), first, 'one child for all the calls');
    } finally {
      s.close();
    }
  });

  it("maps a failure the child reports to the operation's coded error with its reason, and keeps serving", async () => {
    const status = { hostId: 'h1', live: true, state: 'Normal', mode: 'NORMAL' };
    const errors = { snapshot: 'IOException: Snapshot b1 already exists.', flush: 'ConnectException: Connection refused' };
    const nt = jmxNodetool(fakeSession({ answers: { status }, errors }));
    try {
      await rejectsCoded(nt.snapshot('b1'), 'CBR_ERR_SNAPSHOT_FAILED', /^JMX snapshot failed: IOException: Snapshot b1 already exists\.$/);
      await rejectsCoded(nt.flush(), 'CBR_ERR_NODETOOL_FAILED', /Connection refused/);
      assert.deepEqual(await nt.status(), status);
    } finally {
      nt.close();
    }
  });

  it('Nodetool ops: snapshot failures are CBR_ERR_SNAPSHOT_FAILED, status ones CBR_ERR_NODETOOL_FAILED, bad answers too', async () => {
    const failing = jmxNodetool(fakeSession({ answers: { status: { hostId: 'h1', live: 'yes' }, listSnapshots: 'b1' } }));
    try {
      await rejectsCoded(failing.status(), 'CBR_ERR_NODETOOL_FAILED', /unexpected shape/);
      await rejectsCoded(failing.listSnapshots(), 'CBR_ERR_SNAPSHOT_FAILED', /list of tags/);
      await rejectsCoded(failing.snapshot('bad tag'), 'CBR_ERR_INVALID_ARGUMENT');
      await rejectsCoded(failing.flush('bad-keyspace'), 'CBR_ERR_INVALID_ARGUMENT');
      assert.deepEqual(await jmxNodetool(fakeSession({ answers: { listSnapshots: ['b2', 'b1'] } })).listSnapshots(), ['b1', 'b2']);
    } finally {
      failing.close();
    }
  });

  it('a child that dies mid-request is a coded error with its reason, and the next request starts a new one', async () => {
    const s = fakeSession({ dieOn: 'snapshot', answers: { listSnapshots: ['b1'] } });
    const nt = jmxNodetool(s);
    try {
      const pid = (await s.request('pid')) as number;
      await rejectsCoded(nt.snapshot('b1'), 'CBR_ERR_SNAPSHOT_FAILED', /exited \(status 3\).*OutOfMemoryError/);
      assert.deepEqual(await nt.listSnapshots(), ['b1']);
      assert.notEqual(await s.request('pid'), pid);
      await gone(pid);
    } finally {
      nt.close();
    }
  });

  it('an abort in flight kills the child (CBR_ERR_ABORTED) and the next request gets a new one', async () => {
    const s = fakeSession();
    const nt = jmxNodetool(s);
    try {
      const pid = (await s.request('pid')) as number;
      const ac = new AbortController();
      const hanging = s.request('hang', {}, ac.signal);
      setImmediate(() => ac.abort());
      await assert.rejects(hanging, (e: { aborted?: boolean }) => e.aborted === true);
      await gone(pid);
      const next = (await s.request('pid')) as number;
      assert.notEqual(next, pid);

      const ac2 = new AbortController();
      const snap = nt.snapshot('b1', ac2.signal);
      ac2.abort();
      await rejectsCoded(snap, 'CBR_ERR_ABORTED');
      await rejectsCoded(nt.flush(undefined, undefined, AbortSignal.abort()), 'CBR_ERR_ABORTED');
    } finally {
      nt.close();
    }
  });

  it('an aborted queued request is never sent; the one in flight finishes', async () => {
    const s = fakeSession();
    try {
      const ac = new AbortController();
      const slow = s.request('slow', { ms: 200 });
      const queued = s.request('echo', { tag: 'never' }, ac.signal);
      ac.abort();
      await assert.rejects(queued, (e: { aborted?: boolean }) => e.aborted === true);
      assert.equal(await slow, 'slow done');
      assert.deepEqual(await s.request('seen'), ['slow', 'seen']);
    } finally {
      s.close();
    }
  });

  it('close ends the child and refuses further requests; an idle child ends by itself', async () => {
    const s = fakeSession();
    const pid = (await s.request('pid')) as number;
    s.close();
    await gone(pid);
    await assert.rejects(s.request('pid'), /closed/);

    const idle = fakeSession({}, 50);
    const idlePid = (await idle.request('pid')) as number;
    await gone(idlePid);
    assert.notEqual(await idle.request('pid'), idlePid, 'a new child after the idle one ended');
    idle.close();
  });

  it('an idle child does not keep its owner process alive, and dies with it', async () => {
    const dir = scratch('cbr-jmx-');
    const script = join(dir, 'owner.ts');
    const session = fileURLToPath(new URL('../../../src/cassandra/jmx/session.ts', import.meta.url));
    await writeFile(
      script,
      `import { JmxSession } from ${JSON.stringify(session)};\n` +
        `const s = new JmxSession(async () => ({ command: process.execPath, args: [${JSON.stringify(FAKE)}], hello: {} }));\n` +
        'console.log(await s.request("pid"));\n',
    );
    // Resolves only if the owner exits on its own with the child idle (no close, no timeout left running).
    const { stdout } = await promisify(execFile)(process.execPath, [script], { timeout: 60_000 });
    const pid = Number(stdout.trim());
    assert.ok(pid > 0);
    await gone(pid);
  });
});

describe('status, nodetool output and the password file', () => {
  it("finds this node's row of nodetool status by the host id nodetool info prints", () => {
    const info = 'ID                     : 37b7365a-93fd-404e-bae8-59db44ccf112\nGossip active          : true\n';
    const status = [
      'Datacenter: datacenter1',
      '--  Address    Load       Tokens  Owns (effective)  Host ID                               Rack',
      'UN  127.0.0.2  1.2 MiB    16      100.0%            aaaaaaaa-93fd-404e-bae8-59db44ccf112  rack1',
      'UJ  127.0.0.1  1.2 MiB    16      100.0%            37b7365a-93fd-404e-bae8-59db44ccf112  rack1',
    ].join('\n');
    const id = parseInfoId(info);
    assert.deepEqual(parseStatus(status, id), { hostId: id, live: true, state: 'Joining', mode: '' });
    assert.deepEqual(parseStatus(status.replace('UJ', 'DN'), id), { hostId: id, live: false, state: 'Normal', mode: '' });
    assert.throws(() => parseStatus(status, 'other'), { code: 'CBR_ERR_NODETOOL_FAILED' });
    assert.throws(() => parseInfoId('nothing'), { code: 'CBR_ERR_NODETOOL_FAILED' });
  });

  it('checks the JMX client status answer', () => {
    assert.deepEqual(parseJmxStatus({ hostId: 'h', live: true, state: 'Moving', mode: 'MOVING' }), {
      hostId: 'h',
      live: true,
      state: 'Moving',
      mode: 'MOVING',
    });
    assert.throws(() => parseJmxStatus({ hostId: 'h', live: true, state: 'Up' }), { code: 'CBR_ERR_NODETOOL_FAILED' });
  });

  it("reads the user's password from a nodetool -pwf file, and never echoes the file", async () => {
    const dir = scratch('cbr-jmx-');
    const file = join(dir, 'jmx.password');
    await writeFile(file, '# comment\nmonitor  ro-pass\ncassandra  has spaces inside \n');
    assert.equal(await readJmxPassword(file, 'cassandra'), 'has spaces inside');
    assert.equal(await readJmxPassword(file, 'monitor'), 'ro-pass');
    await assert.rejects(readJmxPassword(file, 'nobody'), (e: { code: string; message: string }) => {
      assert.equal(e.code, 'CBR_ERR_CONFIG');
      assert.ok(!e.message.includes('ro-pass'));
      return true;
    });
    await assert.rejects(readJmxPassword(join(dir, 'missing'), 'x'), { code: 'CBR_ERR_CONFIG' });
  });
});

describe('which JMX client a profile gets', () => {
  it('builtin with a JDK; nodetool when asked, or when java.home has no javac (a JRE-only node keeps working)', async () => {
    const jdk = scratch('cbr-jdk-');
    const jre = scratch('cbr-jre-');
    await mkdir(join(jdk, 'bin'));
    await mkdir(join(jre, 'bin'));
    for (const f of [join(jdk, 'bin', 'java'), join(jdk, 'bin', 'javac'), join(jre, 'bin', 'java')]) await writeFile(f, '');
    const profile = (home: string, client: 'builtin' | 'nodetool' = 'builtin') => ({ java: { home }, jmx: { client } }) as unknown as Profile;
    assert.equal(jmxClientKind(profile(jdk), {}), 'builtin');
    assert.equal(jmxClientKind(profile(jre), {}), 'nodetool');
    assert.equal(jmxClientKind(profile(jdk, 'nodetool'), {}), 'nodetool');
    assert.equal(jmxClientKind(profile(jdk), { CBR_JMX_CLIENT: 'nodetool' }), 'nodetool');
    assert.throws(() => jmxClientKind(profile(jdk), { CBR_JMX_CLIENT: 'jconsole' }), /CBR_JMX_CLIENT must be builtin or nodetool/);
  });
});
