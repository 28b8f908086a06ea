import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createLogger } from '../../../src/core/log.ts';

describe('logger redaction', () => {
  it('redacts secret fields at any depth and keeps paths, ids and keys of objects', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'debug', sink: (l) => lines.push(l) }).child({ workflowId: 'w1' });
    log.info('x', {
      password: 'hunter2',
      nested: { credentials: { username: 'u', password: 'p' }, salted_hash: '$2a$10$abc', key: 'k3y' },
      signingKey: 'sig',
      passwordFile: '/etc/pw',
      objectKey: 'b1/archive.tar.zst',
      keyFingerprint: 'abcd',
      keyspace: 'ks',
    });
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.workflowId, 'w1');
    assert.equal(entry.password, '[redacted]');
    assert.equal(entry.nested.credentials, '[redacted]');
    assert.equal(entry.nested.salted_hash, '[redacted]');
    assert.equal(entry.nested.key, '[redacted]');
    assert.equal(entry.signingKey, '[redacted]');
    assert.equal(entry.passwordFile, '/etc/pw');
    assert.equal(entry.objectKey, 'b1/archive.tar.zst');
    assert.equal(entry.keyFingerprint, 'abcd');
    assert.equal(entry.keyspace, 'ks');
    assert.ok(!lines[0]!.includes('hunter2') && !lines[0]!.includes('k3y') && !lines[0]!.includes('$2a$'));
  });
});

function capture(level: 'debug' | 'info' | 'warn' | 'error' = 'debug') {
  const lines: string[] = [];
  const log = createLogger({ level, sink: (l) => lines.push(l) });
  return { log, lines, entries: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe('logger lines', () => {
  it('writes one JSON line per call with an ISO time, the level by name, msg and the fields', () => {
    const { log, lines, entries } = capture();
    log.debug('d');
    log.info('i', { n: 1 });
    log.warn('w', { ok: true });
    log.error('e', { list: ['a'] });
    assert.equal(lines.length, 4);
    assert.ok(lines.every((l) => !l.endsWith('\n')));
    const [d, i, w, e] = entries();
    assert.deepEqual([d?.['level'], i?.['level'], w?.['level'], e?.['level']], ['debug', 'info', 'warn', 'error']);
    assert.equal(i?.['msg'], 'i');
    assert.equal(i?.['n'], 1);
    assert.deepEqual(e?.['list'], ['a']);
    assert.equal(new Date(String(d?.['time'])).toISOString(), d?.['time']);
  });

  it('leaves a message with % signs as it is', () => {
    const { log, entries } = capture();
    log.info('disk 100%d full %s', { x: 1 });
    assert.equal(entries()[0]?.['msg'], 'disk 100%d full %s');
  });

  it('drops lines below the level', () => {
    const { log, entries } = capture('warn');
    log.debug('no');
    log.info('no');
    log.child({ step: 's' }).info('no');
    log.warn('yes');
    log.child({ step: 's' }).error('yes too');
    assert.deepEqual(
      entries().map((e) => [e['level'], e['msg']]),
      [
        ['warn', 'yes'],
        ['error', 'yes too'],
      ],
    );
  });

  it('takes its level from CBR_LOG_LEVEL when none is given, and info for an unknown one', () => {
    const before = process.env['CBR_LOG_LEVEL'];
    try {
      for (const [env, written] of [
        ['error', ['error']],
        ['nonsense', ['info', 'warn', 'error']],
      ] as const) {
        process.env['CBR_LOG_LEVEL'] = env;
        const lines: string[] = [];
        const log = createLogger({ sink: (l) => lines.push(l) });
        log.debug('m');
        log.info('m');
        log.warn('m');
        log.error('m');
        assert.deepEqual(
          lines.map((l) => JSON.parse(l).level),
          written,
        );
      }
    } finally {
      if (before === undefined) delete process.env['CBR_LOG_LEVEL'];
      else process.env['CBR_LOG_LEVEL'] = before;
    }
  });

  it('carries the bindings of every ancestor, and a field overrides a binding when read back', () => {
    const lines: string[] = [];
    const log = createLogger({ level: 'info', sink: (l) => lines.push(l), bindings: { host: 'h1' } });
    log.child({ workflowId: 'w1' }).child({ step: 'takeSnapshot' }).info('m', { step: 'other' });
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.host, 'h1');
    assert.equal(entry.workflowId, 'w1');
    assert.equal(entry.step, 'other');
  });
});

describe('logger redaction, beyond flat fields', () => {
  it('redacts inside arrays and arrays of objects', () => {
    const { log, lines, entries } = capture();
    log.info('m', { nodes: [{ host: 'a', password: 'pw-in-array' }, [{ token: 'tok-in-nested-array' }]], keys: ['k1'] });
    const entry = entries()[0]!;
    assert.deepEqual(entry['nodes'], [{ host: 'a', password: '[redacted]' }, [{ token: '[redacted]' }]]);
    assert.deepEqual(entry['keys'], ['k1']);
    assert.ok(!lines[0]!.includes('pw-in-array') && !lines[0]!.includes('tok-in-nested-array'));
  });

  it('redacts deep inside nested objects, and cuts what is nested deeper still instead of writing it', () => {
    const { log, lines } = capture();
    const deep = { a: { b: { c: { d: { e: { f: { g: { h: { password: 'very-deep' } } } } } } } } };
    log.info('m', { config: { storage: { swift: { auth: { passphrase: 'nested-pass', user: 'u' } } } }, deep });
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.config.storage.swift.auth.passphrase, '[redacted]');
    assert.equal(entry.config.storage.swift.auth.user, 'u');
    assert.ok(!lines[0]!.includes('nested-pass') && !lines[0]!.includes('very-deep'));
  });

  it('writes a cyclic object without throwing', () => {
    const { log, lines } = capture();
    const loop: Record<string, unknown> = { name: 'loop', secret: 's3cr3t' };
    loop['self'] = loop;
    log.info('m', { loop });
    assert.equal(JSON.parse(lines[0]!).loop.name, 'loop');
    assert.ok(!lines[0]!.includes('s3cr3t'));
  });

  it('redacts secrets in child bindings, at the root and in every child', () => {
    const lines: string[] = [];
    const root = createLogger({ level: 'info', sink: (l) => lines.push(l), bindings: { host: 'h', token: 'root-token' } });
    root
      .child({ workflowId: 'w', credentials: { username: 'u', password: 'child-pw' } })
      .child({ step: 's', auth: { apiKey: 'grandchild-key' } })
      .info('m');
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.host, 'h');
    assert.equal(entry.token, '[redacted]');
    assert.equal(entry.workflowId, 'w');
    assert.equal(entry.credentials, '[redacted]');
    assert.equal(entry.auth.apiKey, '[redacted]');
    assert.equal(entry.step, 's');
    for (const s of ['root-token', 'child-pw', 'grandchild-key']) assert.ok(!lines[0]!.includes(s), s);
  });

  it('writes an Error with its message and stack, and redacts its secret-named properties and those of its cause', () => {
    const { log, lines } = capture();
    const cause = Object.assign(new Error('socket hang up'), { authorization: 'Bearer cause-secret' });
    const err = Object.assign(new Error('upload failed', { cause }), {
      code: 'E_UPLOAD',
      password: 'err-pw',
      request: { url: 'https://swift/v1/c/o', headers: { Authorization: 'Bearer header-secret', 'x-trans-id': 't1' } },
    });
    log.error('step failed', { err, error: err });
    const entry = JSON.parse(lines[0]!);
    for (const e of [entry.err, entry.error]) {
      assert.equal(e.type, 'Error');
      assert.equal(e.message, 'upload failed');
      assert.match(e.stack, /^Error: upload failed\n/);
      assert.equal(e.code, 'E_UPLOAD');
      assert.equal(e.password, '[redacted]');
      assert.equal(e.request.url, 'https://swift/v1/c/o');
      assert.equal(e.request.headers.Authorization, '[redacted]');
      assert.equal(e.request.headers['x-trans-id'], 't1');
      assert.equal(e.cause.message, 'socket hang up');
      assert.equal(e.cause.authorization, '[redacted]');
    }
    for (const s of ['err-pw', 'header-secret', 'cause-secret']) assert.ok(!lines[0]!.includes(s), s);
  });

  it('redacts the errors inside an AggregateError', () => {
    const { log, lines } = capture();
    log.warn('m', { error: new AggregateError([Object.assign(new Error('a'), { secret: 'agg-secret' })], 'both failed') });
    const entry = JSON.parse(lines[0]!);
    assert.equal(entry.error.message, 'both failed');
    assert.equal(entry.error.errors[0].secret, '[redacted]');
    assert.ok(!lines[0]!.includes('agg-secret'));
  });
});
