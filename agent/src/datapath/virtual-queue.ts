// Runs the real DatapathEngine without the kernel: a packet goes in as the addon would hand it
// over, and the verdict comes back as the addon would send it. No root, no namespaces: the
// agent's first-contact rehearsal (handshake/rehearsal.ts), unit tests and benchmarks.
import { DatapathEngine } from './engine.ts';
import type { HandshakeHandler, VerdictEvent } from './handler.ts';
import { connectionMarks } from './marks.ts';
import { HOOK_POST_ROUTING, HOOK_PRE_ROUTING, Meta, NF_DROP, NO_OWNER, queueBuffers, type NativeQueue, type NfVerdict } from '../native/addon.ts';

export const MARKS = connectionMarks(0x100000);

export interface Verdict {
  /** The packet id the engine was given (verdicts of held packets arrive later, by id). */
  id: number;
  /** No verdict yet: the handler holds the packet (see verdictOf). */
  held: boolean;
  verdict: NfVerdict;
  mark: number;
  /** The packet as it leaves the agent (rewritten, or as it came). */
  bytes: Uint8Array;
  dropped: boolean;
  tracked: boolean;
  released: boolean;
  /** The engine asked for a reset to the local server whose SYN-ACK this was (Decision.resetServer). */
  resetServer: boolean;
}

export class VirtualQueue {
  readonly engine: DatapathEngine;
  private readonly buffers = queueBuffers(4, 70_000);
  private readonly verdicts = new Map<number, Verdict>();
  private readonly delivered = new Map<number, Uint8Array>();
  private nextId = 1;
  private resetAsked = false;

  constructor(handler: HandshakeHandler, onVerdict?: (event: VerdictEvent) => void) {
    this.engine = new DatapathEngine(
      this.buffers,
      handler,
      {
        marks: MARKS,
        mtu: 1500,
        onMalformed: 'drop',
        onServerReset: () => {
          this.resetAsked = true;
        },
        ...(onVerdict ? { onVerdict } : {}),
      },
    );
    const queue: NativeQueue = {
      start: () => undefined,
      flush: () => undefined,
      close: () => undefined,
      verdict: (id, _queue, verdict, mark, payload, length) => {
        this.verdicts.set(id, {
          id,
          held: false,
          verdict,
          mark,
          bytes: payload ? payload.slice(0, length) : (this.delivered.get(id) ?? new Uint8Array(0)).slice(),
          dropped: verdict === NF_DROP,
          tracked: (mark & MARKS.track) !== 0,
          released: (mark & MARKS.release) !== 0,
          resetServer: false,
        });
        this.delivered.delete(id);
      },
    };
    this.engine.attach(queue);
  }

  /** Hands one packet to the engine; `direction` picks the hook the kernel would report. */
  deliver(bytes: Uint8Array, direction: 'ingress' | 'egress', flags = 0, uid = -1): Verdict {
    const id = this.nextId++;
    this.buffers.input.set(bytes, 0);
    this.delivered.set(id, bytes);
    this.buffers.meta.fill(0);
    this.buffers.meta[Meta.PacketId] = id;
    this.buffers.meta[Meta.Hook] = direction === 'egress' ? HOOK_POST_ROUTING : HOOK_PRE_ROUTING;
    this.buffers.meta[Meta.Offset] = 0;
    this.buffers.meta[Meta.Length] = bytes.length;
    this.buffers.meta[Meta.OriginalLength] = bytes.length;
    this.buffers.meta[Meta.Flags] = flags;
    this.buffers.meta[Meta.Uid] = uid < 0 ? NO_OWNER : uid;
    this.buffers.meta[Meta.Gid] = uid < 0 ? NO_OWNER : uid;
    this.resetAsked = false;
    this.engine.onBatch(1);
    // As the addon does when the socket is empty again.
    this.engine.onDrained();
    const verdict = this.verdictOf(id);
    verdict.resetServer = this.resetAsked;
    // Only a held packet's verdict is asked for again (verdictOf): the queue keeps no other, so
    // an agent's rehearsal through it holds nothing per packet.
    if (!verdict.held) this.verdicts.delete(id);
    return verdict;
  }

  /** The verdict on a packet `deliver` returned held: `held` until the handler settles it. */
  verdictOf(id: number): Verdict {
    return this.verdicts.get(id) ?? { id, held: true, verdict: NF_DROP, mark: 0, bytes: new Uint8Array(0), dropped: false, tracked: false, released: false, resetServer: false };
  }
}
