import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { KernelDropLedger, SETTLE_LAG } from '../../../agent/src/kernel/drop-ledger.ts';
import { FAST_COUNTERS, type FastCounter } from '../../../agent/src/kernel/layouts.ts';

function counters(values: Partial<Record<FastCounter, number>> = {}): Record<FastCounter, number> {
  return Object.fromEntries(FAST_COUNTERS.map((name) => [name, values[name] ?? 0])) as Record<FastCounter, number>;
}

/** Calls settle `times` times with the same counters; what it wrote in all, per cause. */
function settleTimes(ledger: KernelDropLedger, totals: Record<FastCounter, number>, times: number): Partial<Record<FastCounter, number>> {
  const written: Partial<Record<FastCounter, number>> = {};
  for (let i = 0; i < times; i++) for (const [cause, drops] of ledger.settle(totals)) written[cause] = (written[cause] ?? 0) + drops;
  return written;
}

describe('KernelDropLedger', () => {
  it('writes the tail of a burst whose folded drops no later report carries, once, after the lag', () => {
    const ledger = new KernelDropLedger(counters());
    // 5,000 drops in under a second: the kernel reported the first and holds 4,999 folded.
    assert.equal(ledger.reported('synNoIdentity', 1), 1);
    const totals = counters({ synNoIdentity: 5_000 });
    assert.deepEqual(settleTimes(ledger, totals, SETTLE_LAG), {}, 'the source still has time to report its own');
    assert.deepEqual(settleTimes(ledger, totals, 5), { synNoIdentity: 4_999 });
    // The source drops again much later: its report carries the 4,999 already written, and one new.
    const totalsLater = counters({ synNoIdentity: 5_001 });
    assert.equal(ledger.reported('synNoIdentity', 1 + 4_999), 1);
    assert.deepEqual(settleTimes(ledger, totalsLater, SETTLE_LAG + 2), {});
  });

  it('leaves a sustained flood to its per-source reports (one a second)', () => {
    const ledger = new KernelDropLedger(counters());
    let total = 0;
    let written = 0;
    for (let second = 0; second < 10; second++) {
      // The report for the previous second arrives, then this second's drops are counted.
      const folded = second === 0 ? 0 : 999;
      written += ledger.reported('synNoIdentity', 1 + folded);
      total += 1_000;
      for (const drops of ledger.settle(counters({ synNoIdentity: total })).values()) written += drops;
    }
    assert.ok(written <= total && total - written <= 1_000 * SETTLE_LAG, `${written} of ${total}`);
    assert.equal(written, 1 + 9 * 1_000, 'each second reported by the source itself, none by "*"');
  });

  it('writes drops whose reports were lost (a full ring buffer), and ignores counts from before it started', () => {
    const ledger = new KernelDropLedger(counters({ synBadProof: 70, synAccepted: 9 }));
    const totals = counters({ synBadProof: 100, synReplayed: 3, synAccepted: 500, synSent: 40 });
    assert.deepEqual(settleTimes(ledger, totals, SETTLE_LAG + 1), { synBadProof: 30, synReplayed: 3 });
  });
});
