import { it } from 'node:test';
import assert from 'node:assert/strict';
import { DatapathEngine } from '../../../agent/src/datapath/engine.ts';
import type { VerdictEvent } from '../../../agent/src/datapath/handler.ts';
import { HOOK_POST_ROUTING, HOOK_PRE_ROUTING, Meta, NO_OWNER, type NativeQueue } from '../../../agent/src/datapath/nfqueue.ts';
import { PassThroughHandler } from '../../../agent/src/handshake/pass-through.ts';
import { IPV4_SYN, IPV4_SYN_ACK, withValidChecksums } from '../../support/fixtures.ts';
import { MARKS } from '../../support/virtual-wire.ts';

const STRIDE = 10;
const SLOT = 2048;

it('sends a whole batch of verdicts before any verdict event is reported', () => {
  const input = new Uint8Array(SLOT * 2);
  const meta = new Uint32Array(STRIDE * 2);
  const calls: string[] = [];
  const events: { direction: string; reason: string; sourcePort: number; accepted: boolean }[] = [];
  const engine = new DatapathEngine(
    { input, meta, counters: new Float64Array(12), slotSize: SLOT, metaStride: STRIDE },
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
  // Slot 0: our SYN leaving (egress); slot 1: a SYN-ACK arriving without a token (ingress).
  const packets = [
    { bytes: withValidChecksums(IPV4_SYN), hook: HOOK_POST_ROUTING },
    { bytes: withValidChecksums(IPV4_SYN_ACK), hook: HOOK_PRE_ROUTING },
  ];
  packets.forEach(({ bytes, hook }, index) => {
    input.set(bytes, index * SLOT);
    const base = index * STRIDE;
    meta[base + Meta.PacketId] = index + 1;
    meta[base + Meta.Hook] = hook;
    meta[base + Meta.Offset] = index * SLOT;
    meta[base + Meta.Length] = bytes.length;
    meta[base + Meta.OriginalLength] = bytes.length;
    meta[base + Meta.Uid] = NO_OWNER;
    meta[base + Meta.Gid] = NO_OWNER;
  });

  engine.onBatch(2);

  assert.deepEqual(calls, ['verdict', 'verdict', 'flush', 'report', 'report']);
  assert.deepEqual(events, [
    { direction: 'egress', reason: 'ok', sourcePort: 0x6496, accepted: true },
    { direction: 'ingress', reason: 'no-token', sourcePort: 0x1b58, accepted: true },
  ]);
});
