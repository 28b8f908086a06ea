import { defineCommand, jsonOption } from '../command.ts';
import { localRuntime, metricsOptions, textfileRecorder } from '../context.ts';
import { printJson } from '../io.ts';

export const command = defineCommand('resume', {
  summary: 'Resume (or compensate) every workflow on this host left unfinished by a crash.',
  options: { ...jsonOption, ...metricsOptions },
  async run({ values }, io) {
    const textfile = values['metrics-textfile'] ? textfileRecorder(values['metrics-textfile']) : null;
    const { runtime, state, bar } = localRuntime(io, values.json, textfile?.onEvent);
    try {
      const orphans = runtime.orphans();
      const outcomes = [];
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
      return outcomes.every((o) => o.state === 'completed') ? 0 : 1;
    } finally {
      await textfile?.write(state, io);
      state.close();
    }
  },
});
