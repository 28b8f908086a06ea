import { recoverDeadClusterRestores } from '../clusterRecovery.ts';
import { defineCommand, jsonOption } from '../command.ts';
import { cliLogger, localRuntime, metricsOptions, textfileRecorder } from '../context.ts';
import { printJson } from '../io.ts';

export const command = defineCommand('resume', {
  summary: 'Resume (or compensate) every workflow on this host left unfinished by a crash.',
  options: { ...jsonOption, ...metricsOptions },
  async run({ values }, io) {
    const textfile = values['metrics-textfile'] ? textfileRecorder(values['metrics-textfile']) : null;
    const { runtime, state, bar } = localRuntime(io, values.json, textfile?.onEvent);
    try {
      const outcomes = [];
      // Cluster restores first: their `cbr create` process is gone, each node's restore is rolled back (journal.ts).
      for (const r of await recoverDeadClusterRestores(io.env, cliLogger(io))) {
        const state = r.warnings.length ? 'failed' : r.action === 'finalize' ? 'completed' : 'rolled back';
        const error = r.warnings.length ? { code: 'CBR_ERR_CLUSTER_RESTORE_FAILED', message: r.warnings.join('; '), retryable: true } : null;
        outcomes.push({ id: r.journal.runId, kind: 'cluster-restore', from: r.journal.phase, state, error });
      }
      const orphans = runtime.orphans();
      for (const w of orphans) {
        const running = await runtime.resume(w.id);
        const o = await running.done;
        outcomes.push({ id: w.id, kind: w.kind, from: w.state, state: o.state, error: o.error });
      }
      bar?.end();
      if (values.json) printJson(io, outcomes);
      else
        io.stdout(
          outcomes.length
            ? `${outcomes.map((o) => `${o.kind} ${o.id}: ${o.from} -> ${o.state}${o.error ? ` (${o.error.code})` : ''}`).join('\n')}\n`
            : 'nothing to resume\n',
        );
      // A cluster restore rolled back is resume's job done; the ordinary workflow it never finished ends failed (1).
      return outcomes.every((o) => o.state === 'completed' || o.state === 'rolled back') ? 0 : 1;
    } finally {
      await textfile?.write(state, io);
      state.close();
    }
  },
});
