// The addon describes its shared-memory layout; the agent's copy of it (the constants the
// per-packet path reads) is checked against that description when the addon loads.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { layoutMismatch, loadBinding, META_STRIDE, NF_REPEAT, queueBuffers, type AddonLayout } from '../../../agent/src/native/addon.ts';

describe('native addon layout', () => {
  const binding = loadBinding();

  it('the addon reports the layout the agent uses', () => {
    assert.equal(layoutMismatch(binding.LAYOUT, binding.META_STRIDE), null);
    assert.equal(binding.META_STRIDE, META_STRIDE);
    assert.equal(queueBuffers(3, binding.SLOT_SIZE).meta.length, 3 * binding.META_STRIDE);
  });

  it('a layout that differs is named', () => {
    const swapped: AddonLayout = { ...binding.LAYOUT, meta: [...binding.LAYOUT.meta].reverse() };
    assert.match(layoutMismatch(swapped, binding.META_STRIDE) ?? '', /^meta fields /);
    assert.match(layoutMismatch({ ...binding.LAYOUT, counters: binding.LAYOUT.counters.slice(1) }, binding.META_STRIDE) ?? '', /^counters /);
    assert.match(layoutMismatch({ ...binding.LAYOUT, flags: { ...binding.LAYOUT.flags, truncated: 1 << 9 } }, binding.META_STRIDE) ?? '', /^flag truncated/);
    assert.match(layoutMismatch(binding.LAYOUT, binding.META_STRIDE + 1) ?? '', /^meta fields/);
  });

  it('verdict() refuses arguments of the wrong type or range instead of sending them', () => {
    const buffers = queueBuffers(1, binding.SLOT_SIZE);
    const queue = new binding.NfQueue({ queues: [65000], maxLength: 1, failOpen: false, socketBufferBytes: 1 << 16, ...buffers, onBatch: () => undefined });
    // Not started: a well-formed call is refused for that, a malformed one for its arguments first.
    const verdict = queue.verdict.bind(queue) as (...args: unknown[]) => void;
    assert.throws(() => { verdict('1', 0, NF_REPEAT, 0); }, TypeError);
    assert.throws(() => { verdict(1, 0, NF_REPEAT); }, TypeError);
    assert.throws(() => { verdict(1, 0, NF_REPEAT, 0, [1, 2, 3], 3); }, TypeError);
    assert.throws(() => { verdict(1, 0, 7, 0); }, RangeError);
    assert.throws(() => { verdict(1, 0, NF_REPEAT, -1); }, RangeError);
    assert.throws(() => { verdict(1, 0, NF_REPEAT, 0); }, /not started/);
  });
});
