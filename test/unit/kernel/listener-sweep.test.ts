import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../../../scripts/lib/lab.ts';
import { refusedSweep, summarizeSweep } from '../../../agent/src/kernel/listener-sweep.ts';
import { SweepOutcome } from '../../../agent/src/native/addon.ts';

describe('listener sweep outcome', () => {
  it('reads the outcomes as native/bpf/fast_path.h numbers them', () => {
    const header = readFileSync(join(ROOT, 'native/bpf/fast_path.h'), 'utf8');
    const numbered: Record<string, number> = Object.fromEntries([...header.matchAll(/SWEEP_([A-Z]+) = (\d+)/g)].map((match) => [match[1]!, Number(match[2])]));
    assert.deepEqual(numbered, { ENABLED: SweepOutcome.Enabled, ALREADY: SweepOutcome.Already, UNSUPPORTED: SweepOutcome.Unsupported });
  });

  it('names each port it put on the fast path once, in order, and counts those already on it', () => {
    const sweep = summarizeSweep([
      { port: 8443, family: 4, outcome: SweepOutcome.Enabled },
      { port: 7000, family: 4, outcome: SweepOutcome.Enabled },
      { port: 7000, family: 6, outcome: SweepOutcome.Enabled },
      { port: 8080, family: 6, outcome: SweepOutcome.Already },
    ]);
    assert.deepEqual(sweep, { enabled: [7000, 8443], alreadyEnabled: 1, notRun: null });
  });

  it('says so when the kernel let it set nothing (before Linux 6.12)', () => {
    const sweep = summarizeSweep([{ port: 7000, family: 4, outcome: SweepOutcome.Unsupported }]);
    assert.deepEqual(sweep.enabled, []);
    assert.match(sweep.notRun ?? '', /Linux 6\.12/);
  });

  it('met no listener: nothing to say', () => {
    assert.deepEqual(summarizeSweep([]), { enabled: [], alreadyEnabled: 0, notRun: null });
  });

  it('a refusal by the kernel names the missing capability, or carries the error', () => {
    assert.match(refusedSweep(Object.assign(new Error('load: Operation not permitted'), { errno: 1 })).notRun ?? '', /CAP_PERFMON/);
    assert.deepEqual(refusedSweep(Object.assign(new Error('load: Invalid argument'), { errno: 22 })), { enabled: [], alreadyEnabled: 0, notRun: 'load: Invalid argument' });
  });
});
