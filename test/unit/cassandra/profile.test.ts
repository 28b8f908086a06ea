import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { validateProfile } from '../../../src/cassandra/profile.ts';

const good = {
  version: 1,
  name: 'alpha',
  cassandraVersion: '5.0.6',
  cql: { host: '127.0.0.1', port: 9042, localDc: 'datacenter1', credentialsFile: '/etc/cbr/cql.json' },
  jmx: { host: '127.0.0.1', port: 7199 },
  java: { home: '/usr/lib/jvm/java-17', libDir: '/opt/cassandra/lib' },
  dataDirs: ['/var/lib/cassandra/data'],
  commitlogDir: '/var/lib/cassandra/commitlog',
  savedCachesDir: '/var/lib/cassandra/saved_caches',
  hintsDir: '/var/lib/cassandra/hints',
  cassandraYaml: '/etc/cassandra/cassandra.yaml',
  owner: { user: 'cassandra', group: 'cassandra', uid: 999, gid: 999 },
  service: { kind: 'systemd', unit: 'cassandra.service' },
};

describe('profiles', () => {
  it('takes a well-formed profile; the host id defaults to the name', () => {
    assert.equal(validateProfile(good).hostId, 'alpha');
    assert.equal(validateProfile({ ...good, hostId: 'node-1' }).hostId, 'node-1');
  });

  it('refuses a profile with CBR_ERR_CONFIG naming every field that is missing or invalid', () => {
    assert.throws(() => validateProfile(null, 'p.json'), { code: 'CBR_ERR_CONFIG', message: 'p.json is not an object' });
    const { cassandraYaml: _y, ...noYaml } = good;
    assert.throws(() => validateProfile({ ...noYaml, version: 2, dataDirs: [], cql: { ...good.cql, port: '9042' }, service: { kind: 'docker' } }, 'p.json'), {
      code: 'CBR_ERR_CONFIG',
      message: 'p.json is missing or has invalid: version (must be 1), cql.port, dataDirs, cassandraYaml, service.kind',
    });
  });

  it('takes a hand-written profile with only the fields earlier versions required, filling the rest', () => {
    const { cassandraVersion: _v, ...rest } = good;
    const minimal = { ...rest, jmx: { port: 7199 }, owner: { uid: 999 } };
    const p = validateProfile(minimal);
    assert.equal(p.cassandraVersion, '');
    assert.equal(p.jmx.host, '127.0.0.1');
    assert.deepEqual(p.owner, { user: '', group: '', uid: 999, gid: 999 });
  });
});
