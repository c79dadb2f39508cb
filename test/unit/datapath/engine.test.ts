import { it } from 'node:test';
import assert from 'node:assert/strict';
import { DatapathEngine } from '../../../agent/src/datapath/engine.ts';
import type { VerdictEvent } from '../../../agent/src/datapath/handler.ts';
import { HOOK_POST_ROUTING, HOOK_PRE_ROUTING, Meta, META_STRIDE, NO_OWNER, queueBuffers, type NativeQueue } from '../../../agent/src/native/addon.ts';
import { PassThroughHandler } from '../../../agent/src/handshake/pass-through.ts';
import { IPV4_SYN, IPV4_SYN_ACK, withValidChecksums } from '../../../scripts/lib/fixtures.ts';
import { MARKS } from '../../../agent/src/datapath/virtual-queue.ts';

const SLOT = 2048;

interface Recorded {
  direction: string;
  reason: string;
  sourcePort: number;
  accepted: boolean;
}

/** An engine on buffers of two slots, recording the addon calls and the verdict events. */
function recordingEngine(): { engine: DatapathEngine; input: Uint8Array; meta: Uint32Array; calls: string[]; events: Recorded[] } {
  const buffers = queueBuffers(2, SLOT);
  const { input, meta } = buffers;
  const calls: string[] = [];
  const events: Recorded[] = [];
  const engine = new DatapathEngine(
    buffers,
    new PassThroughHandler(),
    {
      marks: MARKS,
      mtu: 1500,
      onMalformed: 'drop',
      onVerdict: (event: VerdictEvent) => {
        calls.push('report');
        events.push({ direction: event.direction, reason: event.reason, sourcePort: event.packet.sourcePort, accepted: event.accepted });
      },
    },
  );
  const queue: NativeQueue = {
    start: () => undefined,
    close: () => undefined,
    flush: () => calls.push('flush'),
    verdict: () => calls.push('verdict'),
  };
  engine.attach(queue);
  return { engine, input, meta, calls, events };
}

/** Puts packets into the slots as the addon would describe a batch. */
function describeBatch(input: Uint8Array, meta: Uint32Array, packets: { bytes: Uint8Array; hook: number }[]): void {
  packets.forEach(({ bytes, hook }, index) => {
    input.fill(0, index * SLOT, (index + 1) * SLOT);
    input.set(bytes, index * SLOT);
    const base = index * META_STRIDE;
    meta[base + Meta.PacketId] = index + 1;
    meta[base + Meta.Hook] = hook;
    meta[base + Meta.Offset] = index * SLOT;
    meta[base + Meta.Length] = bytes.length;
    meta[base + Meta.OriginalLength] = bytes.length;
    meta[base + Meta.Uid] = NO_OWNER;
    meta[base + Meta.Gid] = NO_OWNER;
  });
}

// Slot 0: our SYN leaving (egress); slot 1: a SYN-ACK arriving without a token (ingress).
const SYN_OUT = { bytes: withValidChecksums(IPV4_SYN), hook: HOOK_POST_ROUTING };
const SYN_ACK_IN = { bytes: withValidChecksums(IPV4_SYN_ACK), hook: HOOK_PRE_ROUTING };
const SYN_OUT_EVENT = { direction: 'egress', reason: 'ok', sourcePort: 0x6496, accepted: true };
const SYN_ACK_IN_EVENT = { direction: 'ingress', reason: 'no-token', sourcePort: 0x1b58, accepted: true };

it('sends a whole batch of verdicts, and reports verdict events only once the queue is drained', () => {
  const { engine, input, meta, calls, events } = recordingEngine();
  describeBatch(input, meta, [SYN_OUT, SYN_ACK_IN]);

  engine.onBatch(2);
  assert.deepEqual(calls, ['verdict', 'verdict', 'flush']);
  engine.onDrained();

  assert.deepEqual(calls, ['verdict', 'verdict', 'flush', 'report', 'report']);
  assert.deepEqual(events, [SYN_OUT_EVENT, SYN_ACK_IN_EVENT]);
});

it('reports each packet of earlier batches as it was, though the next batch reused its buffer', () => {
  const { engine, input, meta, calls, events } = recordingEngine();
  describeBatch(input, meta, [SYN_OUT]);
  engine.onBatch(1);
  // The addon receives the next packet into the same slot before the queue is drained.
  describeBatch(input, meta, [SYN_ACK_IN]);
  engine.onBatch(1);
  engine.onDrained();
  engine.onDrained();

  assert.deepEqual(calls, ['verdict', 'flush', 'verdict', 'flush', 'report', 'report']);
  assert.deepEqual(events, [SYN_OUT_EVENT, SYN_ACK_IN_EVENT]);
});

it('accounts judging time by kind of packet; a packet it cannot parse counts in the total only', () => {
  const { engine, input, meta } = recordingEngine();
  describeBatch(input, meta, [SYN_OUT, SYN_ACK_IN]);
  engine.onBatch(2);
  describeBatch(input, meta, [SYN_OUT, { bytes: SYN_OUT.bytes.subarray(0, 30), hook: HOOK_POST_ROUTING }]);
  engine.onBatch(2);

  assert.equal(engine.judged, 4);
  const rows = engine.judgingByStage();
  assert.deepEqual(rows.map(({ direction, stage, packets }) => ({ direction, stage, packets })), [
    { direction: 'egress', stage: 'syn', packets: 2 },
    { direction: 'ingress', stage: 'syn-ack', packets: 1 },
  ]);
  assert.ok(rows.every((row) => row.microsecondsPerPacket > 0));
  const byStage = rows.reduce((sum, row) => sum + row.packets * row.microsecondsPerPacket, 0);
  assert.ok(byStage <= engine.busyMicroseconds, 'the kinds share the total');
});
