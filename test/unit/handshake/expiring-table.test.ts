import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { ExpiringTable } from '../../../agent/src/handshake/handshake-state.ts';

describe('expiring table', () => {
  it('holds about rate x lifetime entries: expired ones go as new ones come, long before the limit', () => {
    let now = 0;
    const table = new ExpiringTable<{ expiresAt: number }>(1_000_000, () => now);
    // 1,000 inserts a second, each living 60 s, for five minutes.
    for (let i = 0; i < 300_000; i++) {
      now = i;
      table.set(`k${String(i)}`, { expiresAt: now + 60_000 });
    }
    assert.ok(table.size <= 60_001, `${table.size} entries`);
    assert.ok(table.size >= 59_000);
  });

  it('a key set again moves to the newest end with its new lifetime; full of live entries it refuses', () => {
    let now = 0;
    const table = new ExpiringTable<{ expiresAt: number }>(3, () => now);
    assert.equal(table.set('a', { expiresAt: 100 }), true);
    assert.equal(table.set('b', { expiresAt: 100 }), true);
    assert.equal(table.set('a', { expiresAt: 500 }), true);
    assert.equal(table.set('c', { expiresAt: 100 }), true);
    assert.equal(table.set('d', { expiresAt: 100 }), false, 'full of live entries');
    now = 200;
    assert.equal(table.set('d', { expiresAt: 300 }), true);
    assert.equal(table.size, 3, 'b went; c waits behind a, which lives on');
    assert.equal(table.get('b'), undefined);
    assert.deepEqual(table.get('a'), { expiresAt: 500 });
    assert.equal(table.get('c'), undefined, 'an expired entry is never returned');
    assert.equal(table.size, 2);
  });
});
