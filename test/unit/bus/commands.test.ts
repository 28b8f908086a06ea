import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { type Command, parseCommand } from '../../../src/bus/schemas/commands.ts';
import { canonicalJson, signCommand } from '../../../src/bus/signing.ts';
import { malformedCommands, validCommand } from '../../helpers/malformed.ts';

const host = 'node-1';

describe('bus command validation', () => {
  it('accepts a well-formed command of each type', () => {
    const payloads = {
      'backup.create': {
        name: 'nightly',
        compression: 'gzip',
        encryptKeyFile: '/etc/cbr/k',
        minFreePercent: 5,
        rateLimit: 1 << 20,
        strategy: 'incremental',
        parent: 'b-0',
        concurrency: 8,
      },
      'backup.delete': { backupId: 'b-1' },
      'restore.create': { backupId: 'b-1', instanceName: 'bravo', clusterName: 'Bravo', force: true, superuser: 'admin' },
      'workflow.cancel': { workflowId: 'w-1' },
      'backup.prune': { keepDaily: 7, keepWithin: '1y6m', groupBy: 'instance', instance: 'alpha', dryRun: true },
      'backup.drill': { latest: true, host: 'node-2', checks: [{ cql: 'SELECT v FROM ks.t WHERE id = 7', expect: 'v7' }], decryptKeyEnv: 'CBR_KEY' },
      'backup.release': { backupId: 'cb-1-2' },
      'backup.hold': { backupId: 'cb-1-2' },
      'cluster.backup': {
        name: 'nightly',
        cluster: 'Prod Cluster',
        hosts: ['node-1', 'node-2'],
        strategy: 'incremental',
        concurrency: 2,
        holdTimeoutMs: 60_000,
      },
    };
    for (const [type, payload] of Object.entries(payloads)) {
      const cmd = parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type, payload }))), { hostId: host });
      assert.equal(cmd.type, type);
    }
  });

  it('cluster backups: a held part, its release, the coordinator command; each field checked', () => {
    const parse = (type: string, payload: Record<string, unknown>) =>
      parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type, payload }))), { hostId: host });
    const part = parse('backup.create', { name: 'n', clusterBackupId: 'cb-1', hold: true, holdTimeoutMs: 5000 });
    assert.deepEqual(part.payload, { name: 'n', clusterBackupId: 'cb-1', hold: true, holdTimeoutMs: 5000 });
    assert.deepEqual(parse('cluster.backup', { name: 'n', cluster: 'ring' }).payload, { name: 'n', cluster: 'ring' });
    const refused: [string, Record<string, unknown>, RegExp][] = [
      ['backup.create', { name: 'n', holdTimeoutMs: 5000 }, /holdTimeoutMs goes with payload.hold: true/],
      ['backup.create', { name: 'n', hold: true, holdTimeoutMs: 10 }, /holdTimeoutMs/],
      ['backup.create', { name: 'n', hold: 'yes' }, /payload.hold/],
      ['backup.create', { name: 'n', clusterBackupId: 'x'.repeat(59) }, /clusterBackupId/],
      ['backup.release', {}, /backup.release: payload.backupId/],
      ['backup.release', { backupId: 'b', extra: 1 }, /unknown payload field "extra"/],
      ['cluster.backup', { name: 'n' }, /cluster.backup: payload.cluster/],
      ['cluster.backup', { name: 'n', cluster: 'c', hosts: [] }, /names at least one host/],
      ['cluster.backup', { name: 'n', cluster: 'c', hosts: ['../x'] }, /hosts\[\]/],
      ['cluster.backup', { name: 'n', cluster: 'c', strategy: 'differential' }, /strategy/],
      ['cluster.backup', { name: 'n', cluster: 'c', concurrency: 0 }, /concurrency/],
      ['cluster.backup', { name: 'n', cluster: 'c', parent: 'b-1' }, /unknown payload field "parent"/],
    ];
    for (const [type, payload, why] of refused)
      assert.throws(
        () => parse(type, payload),
        (err: Error & { code?: string }) => err.code === 'CBR_ERR_COMMAND_INVALID' && why.test(err.message),
        JSON.stringify(payload),
      );
  });

  it('backup.drill: one of backupId and latest, host only with latest, checks that are SELECTs', () => {
    const parse = (payload: Record<string, unknown>) =>
      parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type: 'backup.drill', payload }))), { hostId: host });
    assert.equal(parse({ backupId: 'b-1' }).type, 'backup.drill');
    const refused: [Record<string, unknown>, RegExp][] = [
      [{}, /backupId or payload.latest/],
      [{ backupId: 'b-1', latest: true }, /backupId or payload.latest/],
      [{ latest: false }, /backupId or payload.latest/],
      [{ backupId: 'b-1', host: 'node-2' }, /host goes with payload.latest/],
      [{ latest: true, checks: [{ cql: 'DROP KEYSPACE ks', expect: '' }] }, /checks\[\]\.cql has characters/],
      [{ latest: true, checks: [{ cql: 'SELECT 1' }] }, /checks\[\]\.expect must be a string/],
      [{ latest: true, checks: [{ cql: 'SELECT 1', expect: '1', x: 1 }] }, /unknown field "x"/],
      [{ latest: true, checks: Array.from({ length: 33 }, () => ({ cql: 'SELECT 1', expect: '1' })) }, /at most 32/],
      [{ latest: true, decryptKeyFile: '/k', decryptKeyEnv: 'K' }, /not both/],
      [{ latest: true, sample: '10%' }, /unknown payload field "sample"/],
    ];
    for (const [payload, why] of refused) {
      assert.throws(
        () => parse(payload),
        (err: { code: string; message: string }) => err.code === 'CBR_ERR_COMMAND_INVALID' && why.test(err.message),
        JSON.stringify(payload),
      );
    }
  });

  it('backup.verify: a fixed backupId or latest (of a host or of any), one of them', () => {
    const parse = (payload: Record<string, unknown>) =>
      parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type: 'backup.verify', payload }))), { hostId: host });
    assert.equal(parse({ backupId: 'b-1', deep: true, sample: '10%' }).type, 'backup.verify');
    assert.deepEqual(parse({ latest: true, host: 'node-2', deep: true, sample: '10%' }).payload, { latest: true, host: 'node-2', deep: true, sample: '10%' });
    assert.equal(parse({ latest: true }).type, 'backup.verify');
    const refused: [Record<string, unknown>, RegExp][] = [
      [{}, /backup.verify: give payload.backupId or payload.latest/],
      [{ backupId: 'b-1', latest: true }, /backupId or payload.latest/],
      [{ backupId: 'b-1', host: 'node-2' }, /host goes with payload.latest/],
      [{ latest: true, host: 'no spaces' }, /host/],
    ];
    for (const [payload, why] of refused) {
      assert.throws(
        () => parse(payload),
        (err: { code: string; message: string }) => err.code === 'CBR_ERR_COMMAND_INVALID' && why.test(err.message),
        JSON.stringify(payload),
      );
    }
  });

  const cases = malformedCommands(host);
  it(`rejects ${cases.length} kinds of malformed command, each with a reason`, () => {
    assert.ok(cases.length >= 30);
    const reasons = new Set<string>();
    for (const c of cases) {
      assert.throws(
        () => parseCommand(c.body, { hostId: host }),
        (err: { code: string; message: string }) => {
          assert.equal(err.code, c.code, c.label);
          assert.ok(err.message.length > 5, c.label);
          reasons.add(err.message);
          return true;
        },
        c.label,
      );
    }
    assert.ok(reasons.size >= 25, 'reasons say what is wrong, not one generic message');
  });

  it('with a signing key: accepts a signed command, refuses unsigned, tampered, wrong-key and stale ones', () => {
    const key = randomBytes(32);
    const base = validCommand(host, { type: 'restore.create', payload: { backupId: 'b1', instanceName: 'x', force: true } }) as unknown as Command;
    const signed = signCommand(base, key, '');
    assert.equal(parseCommand(Buffer.from(JSON.stringify(signed)), { hostId: host, signingKey: key }).id, base.id);
    const reject = (body: unknown, label: string) =>
      assert.throws(() => parseCommand(Buffer.from(JSON.stringify(body)), { hostId: host, signingKey: key }), { code: 'CBR_ERR_COMMAND_UNAUTHORIZED' }, label);
    reject(base, 'unsigned');
    reject({ ...signed, payload: { ...signed.payload, backupId: 'b2' } }, 'tampered payload');
    reject(signCommand(base, randomBytes(32), ''), 'wrong key');
    reject(signCommand({ ...base, issuedAt: new Date(Date.now() - 10 * 60_000).toISOString() }, key, ''), 'stale');
  });

  it('binds the signature to the bus prefix: a command signed for prefix A is refused under prefix B; v1 signatures are refused', () => {
    const key = randomBytes(32);
    const base = validCommand(host, { type: 'backup.delete', payload: { backupId: 'b-1' } }) as unknown as Command;
    const forA = Buffer.from(JSON.stringify(signCommand(base, key, 'a.')));
    assert.equal(parseCommand(forA, { hostId: host, signingKey: key, prefix: 'a.' }).id, base.id);
    for (const prefix of ['b.', '', 'a', 'a.b.']) {
      assert.throws(
        () => parseCommand(forA, { hostId: host, signingKey: key, prefix }),
        (err: { code: string; message: string }) => err.code === 'CBR_ERR_COMMAND_UNAUTHORIZED' && /another bus prefix/.test(err.message),
        `signed for a., consumed under ${JSON.stringify(prefix)}`,
      );
    }
    // The format of the old agents: a bare HMAC of the envelope, bound to no prefix.
    const { signature: _s, ...rest } = signCommand(base, key, 'a.');
    const v1 = { ...rest, signature: createHmac('sha256', key).update(canonicalJson(rest)).digest('hex') };
    assert.throws(
      () => parseCommand(Buffer.from(JSON.stringify(v1)), { hostId: host, signingKey: key, prefix: 'a.' }),
      (err: { code: string; message: string }) => err.code === 'CBR_ERR_COMMAND_UNAUTHORIZED' && /v1 signature/.test(err.message),
    );
  });

  it('refuses prototype keys (constructor, __proto__, hasOwnProperty, toString) as payload or envelope fields', () => {
    const good = validCommand(host, { type: 'backup.delete', payload: { backupId: 'b-1' } });
    const text = JSON.stringify(good);
    const bodies: [string, string][] = [];
    for (const k of ['constructor', '__proto__', 'hasOwnProperty', 'toString', 'valueOf']) {
      // Spliced into the JSON text, so that `__proto__` is an own key of the parsed object (as it is off the wire).
      bodies.push([`payload ${k}`, text.replace('"payload":{', `"payload":{"${k}":{},`)]);
      bodies.push([`payload ${k} (string)`, text.replace('"payload":{', `"payload":{"${k}":"x",`)]);
      bodies.push([`envelope ${k}`, text.replace(/^\{/, `{"${k}":{},`)]);
    }
    for (const type of ['backup.create', 'restore.create', 'workflow.cancel']) {
      const payload = type === 'backup.create' ? { name: 'n' } : type === 'restore.create' ? { backupId: 'b', instanceName: 'x' } : { workflowId: 'w' };
      const t = JSON.stringify(validCommand(host, { type, payload }));
      bodies.push([`${type} payload constructor`, t.replace('"payload":{', '"payload":{"constructor":{},')]);
      bodies.push([`${type} payload __proto__`, t.replace('"payload":{', '"payload":{"__proto__":{"force":true},')]);
    }
    const proto = JSON.parse(bodies.find(([label]) => label === 'payload __proto__')![1]) as { payload: object };
    assert.ok(Object.hasOwn(proto.payload, '__proto__'), 'the test really sends __proto__ as an own key');
    for (const [label, body] of bodies) {
      assert.notEqual(body, text, label);
      assert.throws(
        () => parseCommand(Buffer.from(body), { hostId: host }),
        (err: { code: string; message: string }) => err.code === 'CBR_ERR_COMMAND_INVALID' && /unknown (payload )?field/.test(err.message),
        label,
      );
    }
    // A type named after a prototype key is no command type either.
    for (const type of ['constructor', '__proto__', 'toString']) {
      assert.throws(() => parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type }))), { hostId: host }), { code: 'CBR_ERR_COMMAND_INVALID' }, type);
    }
  });

  it('signs canonical JSON: key order does not matter', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } }), '{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}');
  });
});
