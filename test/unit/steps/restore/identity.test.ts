import assert from 'node:assert/strict';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { CassandraYaml } from '../../../../src/cassandra/yaml.ts';
import { CbrError } from '../../../../src/core/errors.ts';
import { finalizeRestore } from '../../../../src/steps/restore/finalizeRestore.ts';
import { resetIdentity } from '../../../../src/steps/restore/resetIdentity.ts';
import { restoreConfig } from '../../../../src/steps/restore/restoreConfig.ts';
import { restorePaths } from '../../../../src/steps/restore/restoreDeps.ts';
import { startMaintenance } from '../../../../src/steps/restore/startMaintenance.ts';
import { startNode } from '../../../../src/steps/restore/startNode.ts';
import { verifyRestore } from '../../../../src/steps/restore/verifyRestore.ts';
import { writeFinalConfig } from '../../../../src/steps/restore/writeFinalConfig.ts';
import { removeFakeNodes, treeState } from '../../../fixtures/fakeNode.ts';
import { abortedSignal, liveSignal, type MadeBackup, makeBackup, NEW_PASSWORD, rejectsAborted, rejectsCoded, restoreUntil } from '../../../fixtures/stepKit.ts';

/**
 * The restore steps from the maintenance start to the end, and the rollback's restoreConfig: startMaintenance,
 * resetIdentity, writeFinalConfig, startNode, verifyRestore, finalizeRestore, on a FakeNode target (its
 * cassandra.yaml a real file; its CQL answering system.local, peers and roles from memory, with passwords
 * checked against the stored bcrypt hash). That Cassandra itself starts on the yaml written, and reads the
 * hash resetIdentity stores, is covered by test/integration/restore.
 */

after(removeFakeNodes);

let backup: MadeBackup;
before(async () => {
  backup = await makeBackup();
});

const yamlOf = (path: string) => CassandraYaml.parse(readFileSync(path, 'utf8'));

describe('startMaintenance', () => {
  it("keeps the operator's yaml, writes the maintenance one (source cluster name, no auth, loopback) and starts the node on it", async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const original = readFileSync(paths.yaml);
    await startMaintenance(deps, input, liveSignal());
    assert.deepEqual(readFileSync(paths.yamlOrig), original);
    const y = yamlOf(paths.yaml);
    assert.equal(y.get('cluster_name'), 'Source Cluster');
    assert.equal(y.componentClass('authenticator'), 'AllowAllAuthenticator');
    assert.equal(y.get('rpc_address'), '127.0.0.1');
    assert.equal(y.get('listen_address'), '127.0.0.1');
    assert.equal(y.get('num_tokens'), 4, "the source's data settings");
    assert.notEqual(y.get('native_transport_port'), target.profile.cql.port);
    assert.equal(target.running, true);
    assert.deepEqual(target.listening, { host: '127.0.0.1', port: y.get('native_transport_port') });
    assert.equal(statSync(paths.yaml).mode & 0o777, statSync(paths.yamlOrig).mode & 0o777);
  });

  it("run twice: the kept yaml is still the operator's, and the node runs on the maintenance yaml written last", async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const original = readFileSync(paths.yaml);
    await startMaintenance(deps, input, liveSignal());
    await startMaintenance(deps, input, liveSignal());
    assert.deepEqual(readFileSync(paths.yamlOrig), original);
    const y = yamlOf(paths.yaml);
    assert.equal(y.get('cluster_name'), 'Source Cluster');
    assert.deepEqual(target.listening, { host: '127.0.0.1', port: y.get('native_transport_port') });
  });

  it('an aborted signal writes nothing and starts nothing', async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup });
    const before = treeState(target.root);
    await rejectsAborted(startMaintenance(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
    assert.equal(target.running, false);
  });

  it('a start that fails is CBR_ERR_SERVICE_CONTROL_FAILED; the kept yaml is there for the rollback', async () => {
    const { deps, input, target } = await restoreUntil('startMaintenance', { backup });
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'systemctl start: failed'));
    await rejectsCoded(startMaintenance(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED');
    assert.ok(existsSync(restorePaths(target.profile, input.ctx.workflowId).yamlOrig));
  });
});

describe('resetIdentity', () => {
  it("sets the new cluster name, forgets the source's peers, makes the superuser, flushes and stops", async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const out = await resetIdentity(deps, input, liveSignal());
    assert.deepEqual(out, { superusers: ['admin', 'cassandra'] });
    assert.equal(target.clusterName, 'Restored Cluster');
    assert.deepEqual(target.peers, []);
    assert.deepEqual(target.peersV2, []);
    const admin = target.roles.get('admin')!;
    assert.ok(admin.superuser && admin.login);
    assert.match(admin.hash!, /^\$2a\$10\$/, "jBCrypt's prefix and cost");
    assert.ok(bcrypt.compareSync(NEW_PASSWORD, admin.hash!));
    assert.ok(target.calls.includes('nodetool flush'));
    assert.equal(target.running, false);
    assert.equal(target.openSessions, 0);
    // Every statement went to the maintenance endpoint, without credentials.
    assert.ok(target.calls.filter((c) => c.startsWith('cql connect')).every((c) => !c.includes(' as ')));
  });

  it('run twice (a re-run after a crash): the node is started again and the same identity results', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const first = await resetIdentity(deps, input, liveSignal());
    const second = await resetIdentity(deps, input, liveSignal());
    assert.deepEqual(second, first);
    assert.equal(target.clusterName, 'Restored Cluster');
    assert.deepEqual(target.peers, []);
    assert.ok(bcrypt.compareSync(NEW_PASSWORD, target.roles.get('admin')!.hash!));
    assert.equal(target.running, false);
  });

  it('an aborted signal changes nothing on the node', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const clusterName = target.clusterName;
    await rejectsAborted(resetIdentity(deps, input, abortedSignal()));
    assert.equal(target.clusterName, clusterName);
    assert.equal(target.peers.length, 2);
    assert.ok(!target.roles.has('admin'));
  });

  it('a node that does not answer once is restarted once; twice is CBR_ERR_CQL_FAILED', async () => {
    const once = await restoreUntil('resetIdentity', { backup });
    once.target.fail('cql.execute', new CbrError('CBR_ERR_CQL_FAILED', 'CQL failed: timeout'), { times: 1, match: /^UPDATE system\.local/ });
    assert.deepEqual(await resetIdentity(once.deps, once.input, liveSignal()), { superusers: ['admin', 'cassandra'] });
    assert.ok(once.deps.log.lines.some((l) => l.level === 'warn' && /restarting it once/.test(l.msg)));
    assert.equal(once.target.openSessions, 0);

    const twice = await restoreUntil('resetIdentity', { backup });
    twice.target.fail('cql.execute', new CbrError('CBR_ERR_CQL_FAILED', 'CQL failed: timeout'), { match: /^UPDATE system\.local/ });
    await rejectsCoded(resetIdentity(twice.deps, twice.input, liveSignal()), 'CBR_ERR_CQL_FAILED', /timeout/);
    assert.equal(twice.target.calls.filter((c) => c === 'service stop').length, 1, 'one restart, then no more');

    const flush = await restoreUntil('resetIdentity', { backup });
    flush.target.fail('nodetool.flush', new CbrError('CBR_ERR_NODETOOL_FAILED', 'nodetool flush failed'));
    await rejectsCoded(resetIdentity(flush.deps, flush.input, liveSignal()), 'CBR_ERR_NODETOOL_FAILED');
  });

  it('a start refused for the cluster name a killed reset already saved takes that name into the maintenance yaml', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const { yaml } = restorePaths(target.profile, input.ctx.workflowId);
    target.fail(
      'service.start',
      new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'Cassandra exited: Saved cluster name Restored Cluster != configured name Source Cluster'),
      { times: 1 },
    );
    await resetIdentity(deps, input, liveSignal());
    assert.equal(yamlOf(yaml).get('cluster_name'), 'Restored Cluster');
    assert.equal(target.clusterName, 'Restored Cluster');
  });

  it('a saved cluster name this restore does not know is left alone', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const { yaml } = restorePaths(target.profile, input.ctx.workflowId);
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'Saved cluster name Elsewhere != configured name Source Cluster'));
    await rejectsCoded(resetIdentity(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED', /Elsewhere/);
    assert.equal(yamlOf(yaml).get('cluster_name'), 'Source Cluster');
  });
});

describe('writeFinalConfig', () => {
  it("writes the operator's yaml with the new cluster name and the settings the data needs, and says what changed", async () => {
    const { deps, input, target } = await restoreUntil('writeFinalConfig', { backup });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const out = await writeFinalConfig(deps, input, liveSignal());
    const y = yamlOf(paths.yaml);
    assert.equal(y.get('cluster_name'), 'Restored Cluster');
    assert.equal(y.get('rpc_address'), 'localhost', "the operator's address again");
    assert.equal(y.get('native_transport_port'), yamlOf(paths.yamlOrig).get('native_transport_port'), "the operator's port again");
    assert.deepEqual(
      out.changes.map((c) => c.key),
      ['num_tokens', 'uuid_sstable_identifiers_enabled', 'sstable.selected_format', 'storage_compatibility_mode'],
    );
    assert.ok(deps.log.lines.some((l) => /setting changed/.test(l.msg) && l.fields?.['key'] === 'num_tokens'));
    assert.equal(statSync(paths.yaml).mode & 0o777, statSync(paths.yamlOrig).mode & 0o777);
  });

  it('run twice: the same file and the same changes', async () => {
    const { deps, input, target } = await restoreUntil('writeFinalConfig', { backup });
    const first = await writeFinalConfig(deps, input, liveSignal());
    const once = treeState(target.root);
    assert.deepEqual(await writeFinalConfig(deps, input, liveSignal()), first);
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal, or a cluster name no yaml can carry (CBR_ERR_INVALID_ARGUMENT), leaves the yaml as it was', async () => {
    const { deps, input, target } = await restoreUntil('writeFinalConfig', { backup });
    const before = treeState(target.root);
    await rejectsAborted(writeFinalConfig(deps, input, abortedSignal()));
    await rejectsCoded(writeFinalConfig(deps, { ...input, ctx: { ...input.ctx, clusterName: 'a\u2028b' } }, liveSignal()), 'CBR_ERR_INVALID_ARGUMENT');
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('startNode', () => {
  it('starts the node where its profile says CQL answers; twice leaves it running', async () => {
    const { deps, input, target } = await restoreUntil('startNode', { backup });
    await startNode(deps, input, liveSignal());
    await startNode(deps, input, liveSignal());
    assert.equal(target.running, true);
    assert.deepEqual(target.listening, { host: target.profile.cql.host, port: target.profile.cql.port });
  });

  it('an aborted signal starts nothing; a failing start is CBR_ERR_SERVICE_CONTROL_FAILED', async () => {
    const { deps, input, target } = await restoreUntil('startNode', { backup });
    await rejectsAborted(startNode(deps, input, abortedSignal()));
    assert.equal(target.running, false);
    target.fail('service.start', new CbrError('CBR_ERR_SERVICE_CONTROL_FAILED', 'CQL did not answer in 300 s'));
    await rejectsCoded(startNode(deps, input, liveSignal()), 'CBR_ERR_SERVICE_CONTROL_FAILED');
  });
});

describe('verifyRestore', () => {
  it('passes, twice, on a node that takes the new password and has the cluster name and keyspaces', async () => {
    const { deps, input, target } = await restoreUntil('verifyRestore', { backup });
    await verifyRestore(deps, input, liveSignal());
    await verifyRestore(deps, input, liveSignal());
    assert.ok(target.calls.includes(`cql connect ${target.profile.cql.host}:${target.profile.cql.port} as admin`));
    assert.equal(target.openSessions, 0);
  });

  it('a wrong cluster name or a missing keyspace is CBR_ERR_RESTORE_VERIFY_FAILED at once', async () => {
    const { deps, input, target } = await restoreUntil('verifyRestore', { backup });
    await rejectsCoded(
      verifyRestore(deps, { ...input, plan: { ...input.plan, keyspaces: ['shop', 'gone'] } }, liveSignal()),
      'CBR_ERR_RESTORE_VERIFY_FAILED',
      /gone/,
    );
    target.clusterName = 'Source Cluster';
    await rejectsCoded(verifyRestore(deps, input, liveSignal()), 'CBR_ERR_RESTORE_VERIFY_FAILED', /cluster_name is Source Cluster/);
    assert.equal(target.openSessions, 0);
  });

  it('a login that fails is tried again; an abort during the waits stops it', async () => {
    const { deps, input, target } = await restoreUntil('verifyRestore', { backup });
    target.fail('cql.connect', new CbrError('CBR_ERR_CQL_FAILED', 'Provided username and/or password are incorrect'), { times: 1 });
    await verifyRestore(deps, input, liveSignal());

    const ac = new AbortController();
    target.fail('cql.connect', () => {
      setTimeout(() => ac.abort(), 50);
      return new CbrError('CBR_ERR_CQL_FAILED', 'Provided username and/or password are incorrect');
    });
    await rejectsAborted(verifyRestore(deps, input, ac.signal));
    await rejectsAborted(verifyRestore(deps, input, abortedSignal()));
  });
});

describe('finalizeRestore', () => {
  it('stores the new credentials for the profile, then removes the old directories, the kept yaml and the stagings; twice is the same', async () => {
    const { deps, input, target } = await restoreUntil('finalizeRestore', { backup });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    await finalizeRestore(deps, input, liveSignal());
    assert.deepEqual(JSON.parse(readFileSync(target.profile.cql.credentialsFile, 'utf8')), { username: 'admin', password: NEW_PASSWORD });
    assert.equal(statSync(target.profile.cql.credentialsFile).mode & 0o777, 0o600);
    for (const { old } of paths.moves) assert.ok(!existsSync(old));
    for (const { staging } of paths.stagings) assert.ok(!existsSync(staging));
    assert.ok(!existsSync(paths.yamlOrig));
    const once = treeState(target.root);
    await finalizeRestore(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal removes nothing', async () => {
    const { deps, input, target } = await restoreUntil('finalizeRestore', { backup });
    const before = treeState(target.root);
    await rejectsAborted(finalizeRestore(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});

describe('restoreConfig', () => {
  it("puts the operator's yaml back, byte for byte and with its mode; twice is the same as once", async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const paths = restorePaths(target.profile, input.ctx.workflowId);
    const original = readFileSync(paths.yamlOrig);
    const mode = statSync(paths.yamlOrig).mode & 0o777;
    await restoreConfig(deps, input, liveSignal());
    assert.deepEqual(readFileSync(paths.yaml), original);
    assert.equal(statSync(paths.yaml).mode & 0o777, mode);
    assert.ok(!existsSync(paths.yamlOrig));
    const once = treeState(target.root);
    await restoreConfig(deps, input, liveSignal());
    assert.deepEqual(treeState(target.root), once);
  });

  it('an aborted signal leaves both files as they are', async () => {
    const { deps, input, target } = await restoreUntil('resetIdentity', { backup });
    const before = treeState(target.root);
    await rejectsAborted(restoreConfig(deps, input, abortedSignal()));
    assert.deepEqual(treeState(target.root), before);
  });
});
