import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { claimSlot, releaseSlots, SLOTS_DIR } from '../../../src/sandbox/sandbox.ts';
import { scratch } from '../../helpers/tmp.ts';

/** Port slots are claimed machine-wide with create-only files (src/sandbox/sandbox.ts); slots far above real use. */
describe('sandbox port slots', () => {
  const slots = [397, 398, 399];
  after(() => {
    for (const s of slots) rmSync(join(SLOTS_DIR, String(s)), { force: true });
  });

  it('one claimant wins a free slot; its own claim is its own again; a live holder keeps it', async () => {
    const [a, b] = [scratch('cbr-slot-a-'), scratch('cbr-slot-b-')];
    const won = await Promise.all([claimSlot(397, a), claimSlot(397, b)]);
    assert.deepEqual(won.filter(Boolean).length, 1, `exactly one wins: ${won}`);
    const holder = readFileSync(join(SLOTS_DIR, '397'), 'utf8');
    assert.equal(await claimSlot(397, holder), true);
    assert.equal(await claimSlot(397, holder === a ? b : a), false);
    await releaseSlots(holder);
    assert.equal(await claimSlot(397, b), true, 'released, it is free again');
  });

  it('a claim whose folder is gone is taken over after a minute, by exactly one of many at once', async () => {
    const gone = join(scratch('cbr-slot-gone-'), 'removed');
    mkdirSync(SLOTS_DIR, { recursive: true });
    const file = join(SLOTS_DIR, '398');
    writeFileSync(file, gone);
    assert.equal(await claimSlot(398, scratch('cbr-slot-early-')), false, 'a fresh claim may belong to a folder about to be made');
    const old = new Date(Date.now() - 120_000);
    utimesSync(file, old, old);
    const owners = Array.from({ length: 20 }, (_, i) => scratch(`cbr-slot-${i}-`));
    const won = await Promise.all(owners.map((o) => claimSlot(398, o)));
    assert.equal(won.filter(Boolean).length, 1, `exactly one takes it over: ${won}`);
    assert.equal(readFileSync(file, 'utf8'), owners[won.indexOf(true)]);
  });
});
