import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { SourceBudget, sourcePrefix } from '../../../agent/src/handshake/source-budget.ts';

describe('per-source budget', () => {
  it('keys IPv4 by address and IPv6 by /64', () => {
    assert.equal(sourcePrefix('10.0.0.7'), '10.0.0.7');
    assert.equal(sourcePrefix('fd00:1:2:3:4:5:6:7'), 'fd00:1:2:3');
  });

  it('spends one second of budget, refills with time, and never holds more than a second', () => {
    const budget = new SourceBudget(4);
    const taken = (address: string, now: number, count: number) => Array.from({ length: count }, () => budget.take(address, now)).filter(Boolean).length;
    assert.equal(taken('10.0.0.1', 0, 10), 4);
    assert.equal(taken('10.0.0.2', 0, 10), 4, 'another source has its own');
    assert.equal(taken('10.0.0.1', 500, 10), 2);
    assert.equal(taken('10.0.0.1', 60_000, 10), 4);
    assert.equal(taken('fd00:1:2:3:0:0:0:1', 0, 3) + taken('fd00:1:2:3:ffff:0:0:2', 0, 3), 4, 'one /64, one bucket');
  });

  it('is bounded: past its capacity the oldest source goes, and 0 means no limit', () => {
    const budget = new SourceBudget(1, 100);
    for (let i = 0; i < 1_000; i++) budget.take(`10.1.${String(i >> 8)}.${String(i & 255)}`, 0);
    assert.equal(budget.size, 100);
    const unlimited = new SourceBudget(0);
    assert.ok(Array.from({ length: 10_000 }, () => unlimited.take('10.0.0.1', 0)).every(Boolean));
    assert.equal(unlimited.size, 0);
  });
});
