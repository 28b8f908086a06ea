/**
 * Malformed, unknown, oversized and unauthorised commands, each with the code the agent must reject it with.
 * Shared by the unit test of the validator and the integration test against the real broker.
 */
export function validCommand(host: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    version: 1,
    id: `ok-${Math.random().toString(36).slice(2)}`,
    type: 'backup.create',
    host,
    issuedAt: new Date().toISOString(),
    payload: { name: 'n' },
    ...over,
  };
}

export function malformedCommands(host: string): { label: string; body: Buffer; code: 'CBR_ERR_COMMAND_INVALID' | 'CBR_ERR_COMMAND_UNAUTHORIZED' }[] {
  const j = (v: unknown) => Buffer.from(JSON.stringify(v));
  const c = (over: Record<string, unknown>) => j(validCommand(host, over));
  const p = (type: string, payload: Record<string, unknown>) => c({ type, payload });
  const invalid = 'CBR_ERR_COMMAND_INVALID' as const;
  const list: [string, Buffer][] = [
    ['empty body', Buffer.alloc(0)],
    ['not JSON', Buffer.from('backup please')],
    ['truncated JSON', Buffer.from('{"version":1,"id":"x"')],
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])],
    ['JSON array', j([1, 2, 3])],
    ['JSON string', j('backup.create')],
    ['JSON null', j(null)],
    ['oversized (70 KiB)', c({ payload: { name: 'n', description: 'x'.repeat(70 * 1024) } })],
    ['wrong version', c({ version: 2 })],
    ['missing version', j({ ...validCommand(host), version: undefined })],
    ['missing id', j({ ...validCommand(host), id: undefined })],
    ['id with path characters', c({ id: '../../etc' })],
    ['id too long', c({ id: 'a'.repeat(65) })],
    ['unknown type', c({ type: 'cluster.drop' })],
    ['type not a string', c({ type: 42 })],
    ['other host', c({ host: 'another-host' })],
    ['host missing', j({ ...validCommand(host), host: undefined })],
    ['issuedAt not a date', c({ issuedAt: 'yesterday' })],
    ['payload missing', j({ ...validCommand(host), payload: undefined })],
    ['payload an array', c({ payload: [] })],
    ['unknown envelope field', c({ sudo: true })],
    ['signature not hex', c({ signature: 'zz' })],
    ['backup.create without name', p('backup.create', {})],
    ['backup.create name not a string', p('backup.create', { name: 7 })],
    ['backup.create name with control characters', p('backup.create', { name: 'a\u0001b' })],
    ['backup.create unknown compression', p('backup.create', { name: 'n', compression: 'lz4' })],
    ['backup.create relative key file', p('backup.create', { name: 'n', encryptKeyFile: 'keys/k' })],
    ['backup.create key file with ..', p('backup.create', { name: 'n', encryptKeyFile: '/etc/../root/k' })],
    ['backup.create both key sources', p('backup.create', { name: 'n', encryptKeyFile: '/k', encryptKeyEnv: 'K' })],
    ['backup.create minFreePercent out of range', p('backup.create', { name: 'n', minFreePercent: 150 })],
    ['backup.create rateLimit not a number', p('backup.create', { name: 'n', rateLimit: '50M' })],
    ['backup.create unknown payload field', p('backup.create', { name: 'n', keyspaces: ['a'] })],
    ['backup.create unknown strategy', p('backup.create', { name: 'n', strategy: 'differential' })],
    ['backup.create incremental as a payload field', p('backup.create', { name: 'n', incremental: true })],
    ['backup.create parent traversal', p('backup.create', { name: 'n', strategy: 'incremental', parent: '../other' })],
    ['backup.create parent with strategy full', p('backup.create', { name: 'n', strategy: 'full', parent: 'b-1' })],
    ['backup.create concurrency 0', p('backup.create', { name: 'n', concurrency: 0 })],
    ['backup.create concurrency over 64', p('backup.create', { name: 'n', concurrency: 65 })],
    ['backup.create concurrency not whole', p('backup.create', { name: 'n', concurrency: 2.5 })],
    ['backup.delete without backupId', p('backup.delete', {})],
    ['backup.delete backupId traversal', p('backup.delete', { backupId: '../x' })],
    ['restore.create without instanceName', p('restore.create', { backupId: 'b1' })],
    ['restore.create bad instanceName', p('restore.create', { backupId: 'b1', instanceName: 'rm -rf /' })],
    ['restore.create force not boolean', p('restore.create', { backupId: 'b1', instanceName: 'x', force: 'yes' })],
    ['restore.create superuser injection', p('restore.create', { backupId: 'b1', instanceName: 'x', superuser: "x' OR '1'='1" })],
    ['restore.create cluster name too long', p('restore.create', { backupId: 'b1', instanceName: 'x', clusterName: 'c'.repeat(257) })],
    ['workflow.cancel without workflowId', p('workflow.cancel', {})],
    ['backup.prune with no keep rule', p('backup.prune', { dryRun: true })],
    ['backup.prune keepDaily 0', p('backup.prune', { keepDaily: 0 })],
    ['backup.prune keepLast not whole', p('backup.prune', { keepLast: 1.5 })],
    ['backup.prune keepWithin malformed', p('backup.prune', { keepWithin: '7 days' })],
    ['backup.prune unknown groupBy', p('backup.prune', { keepLast: 1, groupBy: 'cluster' })],
  ];
  return list.map(([label, body]) => ({ label, body, code: invalid }));
}
