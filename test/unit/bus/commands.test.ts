import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, it } from 'node:test';
import { canonicalJson, parseCommand, signCommand, type Command } from '../../../src/bus/commands.ts';
import { malformedCommands, validCommand } from '../../helpers/malformed.ts';

const host = 'node-1';

describe('bus command validation', () => {
  it('accepts a well-formed command of each type', () => {
    const payloads = {
      'backup.create': { name: 'nightly', compression: 'gzip', encryptKeyFile: '/etc/cbr/k', minFreePercent: 5, rateLimit: 1 << 20 },
      'backup.delete': { backupId: 'b-1' },
      'restore.create': { backupId: 'b-1', instanceName: 'bravo', clusterName: 'Bravo', force: true, superuser: 'admin' },
      'workflow.cancel': { workflowId: 'w-1' },
    };
    for (const [type, payload] of Object.entries(payloads)) {
      const cmd = parseCommand(Buffer.from(JSON.stringify(validCommand(host, { type, payload }))), { hostId: host });
      assert.equal(cmd.type, type);
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
    const signed = signCommand(base, key);
    assert.equal(parseCommand(Buffer.from(JSON.stringify(signed)), { hostId: host, signingKey: key }).id, base.id);
    const reject = (body: unknown, label: string) =>
      assert.throws(() => parseCommand(Buffer.from(JSON.stringify(body)), { hostId: host, signingKey: key }), { code: 'CBR_ERR_COMMAND_UNAUTHORIZED' }, label);
    reject(base, 'unsigned');
    reject({ ...signed, payload: { ...signed.payload, backupId: 'b2' } }, 'tampered payload');
    reject(signCommand(base, randomBytes(32)), 'wrong key');
    reject(signCommand({ ...base, issuedAt: new Date(Date.now() - 10 * 60_000).toISOString() }, key), 'stale');
  });

  it('signs canonical JSON: key order does not matter', () => {
    assert.equal(canonicalJson({ b: 1, a: { d: [1, { y: 2, x: 1 }], c: null } }), '{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}');
  });
});
