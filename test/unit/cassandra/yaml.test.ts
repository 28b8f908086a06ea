import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { finalYaml, maintenanceEndpoint, maintenanceYaml, sandboxYaml } from '../../../src/cassandra/configFiles.ts';
import type { DataSettings } from '../../../src/cassandra/dataSettings.ts';
import { CassandraYaml, parseSetting } from '../../../src/cassandra/yaml.ts';

/** The shapes of the stock 5.0 file: block components, a parameters key holding only comments, comments between. */
const OPERATOR = `# Operator's cassandra.yaml
cluster_name: 'Prod Cluster'
num_tokens: 16
allocate_tokens_for_local_replication_factor: 3
# initial_token:

# who may log in
authenticator:
  class_name: PasswordAuthenticator
authorizer:
  class_name: CassandraAuthorizer
role_manager:
  class_name: CassandraRoleManager
  parameters:
    # invalid_role_disconnect_task_period: 4h
network_authorizer:
  class_name: CassandraNetworkAuthorizer
cidr_authorizer:
  class_name: AllowAllCIDRAuthorizer
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "10.0.0.1:7000,10.0.0.2:7000"
listen_address: 10.0.0.5
broadcast_rpc_address: 10.0.0.5
rpc_address: 10.0.0.5
storage_port: 7000
native_transport_port: 9042
client_encryption_options:
  enabled: true
  keystore: conf/.keystore
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
storage_compatibility_mode: CASSANDRA_4
sstable:
  selected_format: big
# end of file
`;

const DATA: DataSettings = {
  numTokens: 4,
  tokens: ['-9', '-3', '2', '8'],
  partitioner: 'org.apache.cassandra.dht.Murmur3Partitioner',
  uuidSstableIdentifiers: true,
  sstableFormat: 'bti',
  storageCompatibilityMode: 'NONE',
};

describe('cassandra.yaml: structural edits', () => {
  it('maintenance start: block components switched to AllowAll, loopback on the given ports, nothing else lost', () => {
    const out = maintenanceYaml(OPERATOR, { clusterName: 'Prod Cluster', nativePort: 40001, storagePort: 40002, data: null });
    const y = parse(out);
    assert.deepEqual(y.authenticator, { class_name: 'AllowAllAuthenticator' });
    assert.deepEqual(y.authorizer, { class_name: 'AllowAllAuthorizer' });
    assert.deepEqual(y.network_authorizer, { class_name: 'AllowAllNetworkAuthorizer' });
    assert.deepEqual(y.role_manager, { class_name: 'CassandraRoleManager', parameters: null }, 'role manager kept');
    assert.equal(y.listen_address, '127.0.0.1');
    assert.equal(y.rpc_address, '127.0.0.1');
    assert.equal(y.broadcast_rpc_address, undefined);
    assert.equal(y.native_transport_port, 40001);
    assert.equal(y.storage_port, 40002);
    assert.equal(y.client_encryption_options.enabled, false);
    assert.equal(y.seed_provider[0].parameters[0].seeds, '127.0.0.1:40002');
    assert.deepEqual(maintenanceEndpoint(out), { host: '127.0.0.1', port: 40001 });
    for (const kept of ["# Operator's cassandra.yaml", '# who may log in', '# invalid_role_disconnect_task_period: 4h', '# end of file']) {
      assert.ok(out.includes(kept), `comment kept: ${kept}`);
    }
  });

  it('flat components stay flat', () => {
    const out = maintenanceYaml('authenticator: PasswordAuthenticator\nauthorizer: CassandraAuthorizer\n', {
      clusterName: 'x',
      nativePort: 1,
      storagePort: 2,
      data: null,
    });
    assert.match(out, /^authenticator: AllowAllAuthenticator$/m);
    assert.match(out, /^authorizer: AllowAllAuthorizer$/m);
    assert.doesNotMatch(out, /network_authorizer/, 'no component the operator did not configure');
  });

  it('final config: the operator file with only the cluster name and the data settings changed', () => {
    const { text, changes } = finalYaml(OPERATOR, 'New One', DATA);
    const y = parse(text);
    assert.equal(y.cluster_name, 'New One');
    assert.deepEqual(y.authenticator, { class_name: 'PasswordAuthenticator' });
    assert.equal(y.rpc_address, '10.0.0.5');
    assert.equal(y.num_tokens, 4);
    assert.equal(y.uuid_sstable_identifiers_enabled, true);
    assert.deepEqual(y.sstable, { selected_format: 'bti' });
    assert.equal(y.storage_compatibility_mode, 'NONE');
    assert.deepEqual(
      changes.map((c) => c.key),
      ['num_tokens', 'uuid_sstable_identifiers_enabled', 'sstable.selected_format', 'storage_compatibility_mode'],
    );
    assert.deepEqual(changes[0], { key: 'num_tokens', from: 16, to: 4 });
    // Every setting line of the operator's file but the changed ones is still there, in order; every comment
    // too (the library prints a comment that sat under an empty value, such as role_manager's parameters, on
    // that value's line).
    const changed = /^(cluster_name|num_tokens|storage_compatibility_mode| {2}selected_format):/;
    const comment = /^\s*#/;
    const kept = OPERATOR.split('\n').filter((l) => !changed.test(l) && !comment.test(l) && l !== '  parameters:');
    for (const c of OPERATOR.split('\n').filter((l) => comment.test(l))) assert.ok(text.includes(c.trim()), `comment kept: ${c}`);
    const outLines = text.split('\n');
    let at = 0;
    for (const line of kept) {
      const found = outLines.indexOf(line, at);
      assert.ok(found >= 0, `line kept in order: ${JSON.stringify(line)}`);
      at = found;
    }
  });

  it('initial_token follows the source tokens only where the target names it', () => {
    const withInitial = finalYaml('num_tokens: 1\ninitial_token: 0\n', 'c', DATA);
    assert.equal(parse(withInitial.text).initial_token, '-9,-3,2,8');
    assert.equal(parse(finalYaml('num_tokens: 4\n', 'c', DATA).text).initial_token, undefined);
  });

  it('quotes every cluster name so YAML 1.1 reads it back as that string', () => {
    for (const name of ['null', 'yes', 'No', 'on', '2024', '1e3', '0x1F', '~', "it's", 'say "hi"', 'a: b', '#x', '- y', 'Ünïcode ✓', '12:30']) {
      const { text } = finalYaml(OPERATOR, name, null);
      assert.equal(parse(text, { version: '1.1' }).cluster_name, name, `YAML 1.1 reads back ${JSON.stringify(name)}`);
    }
  });

  it('refuses cluster names with newlines or control characters', () => {
    for (const name of ['a\nb', 'a\rb', 'tab\there', 'nul\0', '', 'x'.repeat(300)]) {
      assert.throws(() => finalYaml(OPERATOR, name, null), /CBR_ERR_INVALID_ARGUMENT|control character|too long/, JSON.stringify(name));
    }
  });

  it('refuses a file that is not YAML with a coded error', () => {
    assert.throws(
      () => CassandraYaml.parse('a: [\n', 'x.yaml'),
      (e: Error & { code?: string }) => e.code === 'CBR_ERR_CONFIG',
    );
    assert.throws(
      () => CassandraYaml.parse('- a\n- b\n', 'x.yaml'),
      (e: Error & { code?: string }) => e.code === 'CBR_ERR_CONFIG',
    );
  });
});

describe('cbr sandbox --set', () => {
  it('reads values as YAML, nested keys with dots, empty removes', () => {
    assert.deepEqual(parseSetting('num_tokens=256'), { path: 'num_tokens', value: 256, remove: false });
    assert.deepEqual(parseSetting('sstable.selected_format=bti'), { path: 'sstable.selected_format', value: 'bti', remove: false });
    assert.deepEqual(parseSetting('uuid_sstable_identifiers_enabled=true'), { path: 'uuid_sstable_identifiers_enabled', value: true, remove: false });
    assert.deepEqual(parseSetting('authenticator.class_name=PasswordAuthenticator').value, 'PasswordAuthenticator');
    assert.deepEqual(parseSetting('initial_token='), { path: 'initial_token', value: undefined, remove: true });
    assert.throws(() => parseSetting('novalue'), /key=value/);
    assert.throws(() => parseSetting('a..b=1'), /invalid cassandra.yaml key/);
  });

  it('applies settings, then the instance settings on top, to the defaults or a whole file', () => {
    const instance = {
      clusterName: 'yes',
      dataDirs: ['/d/1', '/d/2'],
      commitlogDir: '/c',
      savedCachesDir: '/s',
      hintsDir: '/h',
      cdcDir: '/cdc',
      address: '127.0.0.2',
      cqlPort: 21002,
      storagePort: 21000,
    };
    const sets = [parseSetting('sstable.selected_format=bti'), parseSetting('num_tokens=256'), parseSetting('native_transport_port=1')];
    const def = parse(sandboxYaml(instance, undefined, sets), { version: '1.1' });
    assert.equal(def.cluster_name, 'yes');
    assert.equal(def.num_tokens, 256);
    assert.equal(def.initial_token, undefined, 'the single generated token goes with num_tokens');
    assert.deepEqual(def.sstable, { selected_format: 'bti' });
    assert.equal(def.native_transport_port, 21002, 'instance ports win over --set');
    assert.deepEqual(def.data_file_directories, ['/d/1', '/d/2']);
    assert.equal(def.seed_provider[0].parameters[0].seeds, '127.0.0.2:21000');
    const node = parse(sandboxYaml({ ...instance, seeds: '127.0.0.1:21000' }), { version: '1.1' });
    assert.equal(node.seed_provider[0].parameters[0].seeds, '127.0.0.1:21000', "a cluster node's seed is the first node");

    const file = parse(sandboxYaml(instance, OPERATOR, [parseSetting('authenticator.class_name=AllowAllAuthenticator')]), { version: '1.1' });
    assert.deepEqual(file.authenticator, { class_name: 'AllowAllAuthenticator' });
    assert.equal(file.num_tokens, 16);
    assert.equal(file.rpc_address, '127.0.0.2');
    assert.equal(file.broadcast_rpc_address, undefined);
  });
});
