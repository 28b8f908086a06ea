import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { type OptionSpecs, parse } from '../../../../src/cli/command.ts';
import { COMMANDS } from '../../../../src/cli/main.ts';
import { REPO } from '../../../helpers/paths.ts';

const DIR = join(REPO, 'deploy', 'systemd');
const JOBS = { backup: 'backup-create', prune: 'backup-prune', verify: 'backup-verify', drill: 'drill' };

describe('deploy/systemd: timers for those who prefer them to the agent schedule', () => {
  it('has a timer (Persistent=true) and a locked oneshot service per job, running the CLI', () => {
    assert.deepEqual(
      readdirSync(DIR).sort(),
      Object.keys(JOBS)
        .flatMap((j) => [`cbr-${j}.service`, `cbr-${j}.timer`])
        .sort(),
    );
    for (const [job, command] of Object.entries(JOBS)) {
      const timer = readFileSync(join(DIR, `cbr-${job}.timer`), 'utf8');
      assert.match(timer, /^Persistent=true$/m, `cbr-${job}.timer runs a missed run at the next boot`);
      assert.match(timer, /^OnCalendar=.+ UTC$/m, `cbr-${job}.timer: an explicit zone`);
      assert.match(timer, new RegExp(`^Unit=cbr-${job}\\.service$`, 'm'));
      const service = readFileSync(join(DIR, `cbr-${job}.service`), 'utf8');
      assert.match(service, /^Type=oneshot$/m);
      const exec = /^ExecStart=(.*)$/m.exec(service)?.[1] ?? '';
      assert.match(
        exec,
        new RegExp(
          `^/usr/bin/flock --nonblock --conflict-exit-code 75 /run/lock/cbr-${job}\\.lock /opt/cbr/node_modules/\\.bin/node /opt/cbr/bin/cbr\\.js ${command} \\$CBR_`,
        ),
      );
      assert.match(service, /^SuccessExitStatus=75$/m, 'a run skipped because the previous one holds the lock is no failure');
    }
  });

  it("each service's default arguments are accepted by the command it runs (the real CLI parser)", async () => {
    for (const [job, name] of Object.entries(JOBS)) {
      const service = readFileSync(join(DIR, `cbr-${job}.service`), 'utf8');
      const args = new RegExp(`^Environment="CBR_${job.toUpperCase()}_ARGS=(.*)"$`, 'm').exec(service)?.[1];
      assert.ok(args, `cbr-${job}.service sets CBR_${job.toUpperCase()}_ARGS`);
      const command = await COMMANDS[name]!();
      const { positionals } = parse(args.split(' '), command.options as OptionSpecs, name, {});
      if (job === 'backup') assert.deepEqual(positionals, ['nightly']);
      else assert.deepEqual(positionals, [], `${name} takes --latest or a policy, no fixed backup id`);
    }
  });

  it('passes systemd-analyze verify (with /opt/cbr pointing at this checkout)', (t) => {
    if (spawnSync('systemd-analyze', ['--version']).status !== 0) {
      t.skip('systemd-analyze is not available here');
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), 'cbr-systemd-'));
    try {
      const files = readdirSync(DIR).map((f) => {
        writeFileSync(join(dir, f), readFileSync(join(DIR, f), 'utf8').replaceAll('/opt/cbr', REPO));
        return join(dir, f);
      });
      // systemd-analyze exits non-zero on an error in a unit and warns on stderr; lines about the host's own units
      // (this machine's systemd) are not ours.
      const r = spawnSync('systemd-analyze', ['verify', ...files], { encoding: 'utf8' });
      const ours = `${r.stdout}${r.stderr}`.split('\n').filter((l) => l.includes('cbr-'));
      assert.deepEqual(ours, [], 'systemd-analyze says nothing about the cbr units');
      assert.equal(r.status, 0, r.stderr);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
