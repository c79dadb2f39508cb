// Runs the real DatapathEngine without the kernel: a packet goes in as the addon would hand it
// over, and the verdict comes back as the addon would send it. No root, no namespaces.
import { DatapathEngine } from '../../agent/src/datapath/engine.ts';
import type { HandshakeHandler, VerdictEvent } from '../../agent/src/datapath/handler.ts';
import { connectionMarks } from '../../agent/src/datapath/marks.ts';
import { HOOK_POST_ROUTING, HOOK_PRE_ROUTING, Meta, NF_DROP, NO_OWNER, type NativeQueue, type NfVerdict } from '../../agent/src/datapath/nfqueue.ts';

export const MARKS = connectionMarks(0x100000);
const STRIDE = 10;

export interface Verdict {
  verdict: NfVerdict;
  mark: number;
  /** The packet as it leaves the agent (rewritten, or as it came). */
  bytes: Uint8Array;
  dropped: boolean;
  tracked: boolean;
  released: boolean;
}

export class VirtualQueue {
  readonly engine: DatapathEngine;
  private readonly input = new Uint8Array(70_000);
  private readonly meta = new Uint32Array(STRIDE * 4);
  private last: Verdict | null = null;
  private current: Uint8Array = new Uint8Array(0);

  constructor(handler: HandshakeHandler, onVerdict?: (event: VerdictEvent) => void) {
    this.engine = new DatapathEngine(
      { input: this.input, meta: this.meta, counters: new Float64Array(12), slotSize: 66_560, metaStride: STRIDE },
      handler,
      { marks: MARKS, mtu: 1500, onMalformed: 'drop', ...(onVerdict ? { onVerdict } : {}) },
    );
    const queue: NativeQueue = {
      start: () => undefined,
      flush: () => undefined,
      close: () => undefined,
      verdict: (_id, _queue, verdict, mark, payload, length) => {
        this.last = {
          verdict,
          mark,
          bytes: payload ? payload.slice(0, length) : this.current.slice(),
          dropped: verdict === NF_DROP,
          tracked: (mark & MARKS.track) !== 0,
          released: (mark & MARKS.release) !== 0,
        };
      },
    };
    this.engine.attach(queue);
  }

  /** Hands one packet to the engine; `direction` picks the hook the kernel would report. */
  deliver(bytes: Uint8Array, direction: 'ingress' | 'egress', flags = 0, uid = -1): Verdict {
    this.input.set(bytes, 0);
    this.current = bytes;
    this.meta.fill(0);
    this.meta[Meta.PacketId] = 1;
    this.meta[Meta.Hook] = direction === 'egress' ? HOOK_POST_ROUTING : HOOK_PRE_ROUTING;
    this.meta[Meta.Offset] = 0;
    this.meta[Meta.Length] = bytes.length;
    this.meta[Meta.OriginalLength] = bytes.length;
    this.meta[Meta.Flags] = flags;
    this.meta[Meta.Uid] = uid < 0 ? NO_OWNER : uid;
    this.meta[Meta.Gid] = uid < 0 ? NO_OWNER : uid;
    this.last = null;
    this.engine.onBatch(1);
    if (this.last === null) throw new Error('engine gave no verdict');
    return this.last;
  }
}
