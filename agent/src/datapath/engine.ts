// The per-packet loop: parse each queued packet in place, ask the handler, rewrite, verdict.
// Everything here runs once per handshake packet, so it reuses one ParsedPacket, one Decision
// and one output buffer, and counts outcomes in preallocated arrays. Bookkeeping (metrics, flow
// log, whois) waits until the queue is drained (`onDrained`): the next packet of a handshake is
// often already waiting, queued by the reinjection of the verdict just sent.
import type { Decision, Direction, HandshakeHandler, HeldPacket, PacketInfo, Stage, VerdictEvent } from './handler.ts';
import { Decision as DecisionImpl, stageOf } from './handler.ts';
import { performance } from 'node:perf_hooks';
import { DatapathError } from './errors.ts';
import type { ConnectionMarks } from './marks.ts';
import {
  HOOK_FORWARD,
  HOOK_POST_ROUTING,
  HOOK_LOCAL_OUT,
  Meta,
  META_FLAG_CHECKSUM_PARTIAL,
  META_FLAG_CHECKSUM_UNVERIFIED,
  META_FLAG_TRUNCATED,
  NF_DROP,
  NF_REPEAT,
  NO_OWNER,
  type NativeQueue,
  type QueueBuffers,
} from '../native/addon.ts';
import { tcpChecksum, readUint16 } from './checksum.ts';
import { ParsedPacket, parsePacket, type ParseStatus } from './packet.ts';
import { parseFailureReason, type Reason } from './reasons.ts';
import { attachToken, detachToken } from './rewrite.ts';

export type MalformedPolicy = 'drop' | 'accept';

export interface EngineOptions {
  marks: ConnectionMarks;
  mtu: number;
  /** What to do with a queued packet the agent cannot parse. Default (documented): drop. */
  onMalformed: MalformedPolicy;
  /** Hears the final outcome of every packet the handler judged (flow log). */
  onVerdict?: (event: VerdictEvent) => void;
  /** Sends the reset a dropped SYN-ACK of a local server asks for (Decision.resetServer). */
  onServerReset?: (synAck: ParsedPacket) => void;
}

export interface VerdictCount {
  direction: Direction;
  action: 'accept' | 'drop';
  reason: Reason;
  count: number;
}

/** One row per (direction, action, reason), counts of rows with the same labels added up. */
export function sumVerdicts(rows: Iterable<VerdictCount>): VerdictCount[] {
  const summed = new Map<string, VerdictCount>();
  for (const row of rows) {
    const label = `${row.direction}|${row.action}|${row.reason}`;
    const sum = summed.get(label);
    if (sum) sum.count += row.count;
    else summed.set(label, { ...row });
  }
  return [...summed.values()];
}

/** Counts verdicts by direction, action and reason; labels come from closed sets. */
export class VerdictCounters {
  private readonly counts = new Map<Reason, number[]>();

  add(direction: Direction, accepted: boolean, reason: Reason): void {
    let row = this.counts.get(reason);
    if (row === undefined) {
      row = [0, 0, 0, 0];
      this.counts.set(reason, row);
    }
    row[(direction === 'ingress' ? 0 : 2) + (accepted ? 0 : 1)]! += 1;
  }

  snapshot(): VerdictCount[] {
    const rows: VerdictCount[] = [];
    for (const [reason, row] of this.counts) {
      row.forEach((count, index) => {
        if (count === 0) return;
        rows.push({
          direction: index < 2 ? 'ingress' : 'egress',
          action: index % 2 === 0 ? 'accept' : 'drop',
          reason,
          count,
        });
      });
    }
    return rows;
  }

  get(direction: Direction, action: 'accept' | 'drop', reason: Reason): number {
    const row = this.counts.get(reason);
    return row?.[(direction === 'ingress' ? 0 : 2) + (action === 'accept' ? 0 : 1)] ?? 0;
  }
}

/**
 * A verdict event waiting for the queue to drain. The addon receives the next batch into the
 * same buffer, so the packet's bytes are copied here; the copy is reused by later reports.
 */
interface PendingReport {
  bytes: Uint8Array;
  length: number;
  event: VerdictEvent;
}

/** Time the agent spent judging one kind of packet (direction and stage), and how many. */
export interface StageJudging {
  direction: Direction;
  stage: Stage;
  packets: number;
  microsecondsPerPacket: number;
}

const STAGES: readonly Stage[] = ['syn', 'syn-ack', 'ack'];

function stageIndex(direction: Direction, stage: Stage): number {
  return (direction === 'ingress' ? 0 : STAGES.length) + STAGES.indexOf(stage);
}

/** Reports held back at most before bookkeeping runs anyway: bounds memory under a long burst. */
const MAX_PENDING_REPORTS = 1024;
/** Room a report's copy starts with: handshake packets with a token fit. */
const REPORT_COPY_BYTES = 2048;

export class DatapathEngine {
  readonly verdicts = new VerdictCounters();
  private readonly packet = new ParsedPacket();
  private readonly decision: Decision = new DecisionImpl();
  private readonly info: PacketInfo = { direction: 'ingress', stage: 'syn', packet: this.packet, token: null, uid: -1, gid: -1 };
  private readonly output = new Uint8Array(65536);
  private readonly reportedPacket = new ParsedPacket();
  /** Packets judged whose verdict events wait until the queue is drained. */
  private readonly pending: PendingReport[] = [];
  private pendingCount = 0;
  private queue: NativeQueue | null = null;

  constructor(
    private readonly buffers: QueueBuffers,
    private readonly handler: HandshakeHandler,
    private readonly options: EngineOptions,
  ) {}

  attach(queue: NativeQueue): void {
    this.queue = queue;
  }

  /** Time spent judging batches, and how many packets: the agent's own share of a trip. */
  busyMicroseconds = 0;
  judged = 0;
  // The same per kind of packet, which tells the handshake's steps apart (a first contact's
  // verifications fall on the SYN in and the SYN-ACK in). Malformed packets have no kind.
  private readonly stageMicroseconds = new Float64Array(STAGES.length * 2);
  private readonly stagePackets = new Float64Array(STAGES.length * 2);
  private stageOfPacket = -1;

  /** Called by the addon with the number of packets now described in the meta array. */
  readonly onBatch = (count: number): void => {
    const started = performance.now();
    // Reports before this one belong to earlier batches not yet drained.
    const firstReport = this.pendingCount;
    const meta = this.buffers.meta;
    const stride = this.buffers.metaStride;
    let packetStarted = started;
    for (let i = 0; i < count; i++) {
      const base = i * stride;
      this.stageOfPacket = -1;
      this.handlePacket(
        meta[base + Meta.PacketId]!,
        meta[base + Meta.Queue]!,
        meta[base + Meta.Hook]!,
        meta[base + Meta.Mark]!,
        meta[base + Meta.Offset]!,
        meta[base + Meta.Length]!,
        meta[base + Meta.Flags]!,
        meta[base + Meta.Uid]!,
        meta[base + Meta.Gid]!,
      );
      const packetEnded = performance.now();
      if (this.stageOfPacket >= 0) {
        this.stageMicroseconds[this.stageOfPacket]! += (packetEnded - packetStarted) * 1000;
        this.stagePackets[this.stageOfPacket]! += 1;
      }
      packetStarted = packetEnded;
    }
    this.judged += count;
    this.busyMicroseconds += (packetStarted - started) * 1000;
    // Verdicts leave before any bookkeeping: metrics, flow log and whois are off the packets' path.
    this.queue?.flush();
    const latencyMicroseconds = (performance.now() - started) * 1000;
    for (let i = firstReport; i < this.pendingCount; i++) this.pending[i]!.event.latencyMicroseconds = latencyMicroseconds;
    if (this.pendingCount >= MAX_PENDING_REPORTS) this.onDrained();
  };

  /** Called by the addon once the queue has no packet waiting: the batches' verdict events. */
  readonly onDrained = (): void => {
    const listener = this.options.onVerdict;
    const count = this.pendingCount;
    this.pendingCount = 0;
    if (listener === undefined) return;
    for (let i = 0; i < count; i++) {
      const slot = this.pending[i]!;
      const event = slot.event;
      parsePacket(slot.bytes, 0, slot.length, this.reportedPacket);
      try {
        listener(event);
      } catch {
        // A failing log sink must never change a verdict already sent.
      }
      event.peer = null;
      event.local = null;
    }
  };

  private handlePacket(
    id: number,
    queueNumber: number,
    hook: number,
    mark: number,
    offset: number,
    length: number,
    flags: number,
    uid: number,
    gid: number,
  ): void {
    const queue = this.queue;
    if (queue === null) return;
    const direction: Direction =
      hook === HOOK_POST_ROUTING || hook === HOOK_LOCAL_OUT || hook === HOOK_FORWARD ? 'egress' : 'ingress';
    const packet = this.packet;
    if ((flags & META_FLAG_TRUNCATED) !== 0) {
      // Only part of the packet reached us; a rewrite would lose the rest.
      this.malformed(queue, id, queueNumber, mark, direction, 'truncated-capture');
      return;
    }
    if (!parsePacket(this.buffers.input, offset, length, packet)) {
      this.malformed(queue, id, queueNumber, mark, direction, parseFailureReason(packet.status as Exclude<ParseStatus, 'ok'>));
      return;
    }
    if (
      direction === 'ingress' &&
      packet.hasMarker &&
      (flags & META_FLAG_CHECKSUM_UNVERIFIED) !== 0 &&
      (flags & META_FLAG_CHECKSUM_PARTIAL) === 0 &&
      !checksumValid(packet)
    ) {
      // Detach recomputes the checksum, which would otherwise launder a corrupted packet.
      this.drop(queue, id, queueNumber, mark, direction, 'bad-checksum');
      return;
    }
    const decision = this.decision;
    const info = this.info;
    decision.reset();
    info.direction = direction;
    info.stage = stageOf(packet);
    this.stageOfPacket = stageIndex(direction, info.stage);
    info.uid = uid === NO_OWNER ? -1 : uid;
    info.gid = gid === NO_OWNER ? -1 : gid;
    info.token = packet.tokenOffset >= 0 ? packet.buf.subarray(packet.tokenOffset, packet.tokenOffset + packet.tokenLength) : null;
    try {
      this.handler.decide(info, decision);
    } catch {
      decision.drop('handler-error');
    }
    info.token = null;
    if (decision.holdReceiver !== null && decision.accept) {
      decision.holdReceiver(this.held(id, queueNumber, mark, direction, info.stage, offset, length));
      return;
    }
    if (!decision.accept) {
      this.drop(queue, id, queueNumber, mark, direction, decision.reason);
      if (decision.resetServer) this.options.onServerReset?.(packet);
      this.deferReport(false, decision.reason, offset, length);
      return;
    }
    let rewrittenLength = -1;
    try {
      if (direction === 'ingress' && packet.hasMarker) {
        // A marker never reaches the kernel's TCP: the token bytes would become stream data.
        rewrittenLength = detachToken(packet, this.output);
      } else if (direction === 'egress' && decision.token !== null) {
        rewrittenLength = attachToken(packet, decision.token, decision.tokenLength, this.output, this.options.mtu);
      }
    } catch (error) {
      const reason = error instanceof DatapathError ? error.code : 'handler-error';
      this.drop(queue, id, queueNumber, mark, direction, reason);
      this.deferReport(false, reason, offset, length);
      return;
    }
    const marks = this.options.marks;
    let newMark = (mark & ~marks.all) | marks.pass;
    if (decision.track) newMark |= marks.track;
    if (decision.release) newMark |= marks.release;
    newMark >>>= 0;
    if (rewrittenLength >= 0) queue.verdict(id, queueNumber, NF_REPEAT, newMark, this.output, rewrittenLength);
    else queue.verdict(id, queueNumber, NF_REPEAT, newMark);
    this.verdicts.add(direction, true, decision.reason);
    this.deferReport(true, decision.reason, offset, length);
  }

  /** Judging time by kind of packet, for the kinds seen so far. */
  judgingByStage(): StageJudging[] {
    const rows: StageJudging[] = [];
    for (const direction of ['egress', 'ingress'] as const) {
      for (const stage of STAGES) {
        const index = stageIndex(direction, stage);
        const packets = this.stagePackets[index]!;
        if (packets > 0) rows.push({ direction, stage, packets, microsecondsPerPacket: this.stageMicroseconds[index]! / packets });
      }
    }
    return rows;
  }

  /** Packets held for a later verdict and not yet settled. */
  heldNow = 0;

  /**
   * A packet kept in the kernel queue. Its bytes are copied (the batch buffer is reused), so its
   * verdict event can be reported when it is settled; it is accepted as it came, never rewritten.
   */
  private held(id: number, queueNumber: number, mark: number, direction: Direction, stage: Stage, offset: number, length: number): HeldPacket {
    const bytes = this.buffers.input.slice(offset, offset + length);
    let settled = false;
    this.heldNow += 1;
    const settle = (accepted: boolean, reason: Reason): void => {
      if (settled) return;
      settled = true;
      this.heldNow -= 1;
      const queue = this.queue;
      if (queue === null) return;
      const marks = this.options.marks;
      if (accepted) queue.verdict(id, queueNumber, NF_REPEAT, ((mark & ~marks.all) | marks.pass | marks.release) >>> 0);
      else queue.verdict(id, queueNumber, NF_DROP, mark);
      this.verdicts.add(direction, accepted, reason);
      const listener = this.options.onVerdict;
      if (listener === undefined) return;
      const packet = new ParsedPacket();
      parsePacket(bytes, 0, bytes.length, packet);
      const event = blankEvent(packet);
      event.direction = direction;
      event.stage = stage;
      event.accepted = accepted;
      event.reason = reason;
      try {
        listener(event);
      } catch {
        // As for every other packet: a failing log sink never changes a verdict.
      }
    };
    return {
      accept: (reason) => {
        settle(true, reason);
      },
      drop: (reason) => {
        settle(false, reason);
      },
    };
  }

  /** Copies what the verdict event needs, the packet's bytes included; it is parsed again on report. */
  private deferReport(accepted: boolean, reason: Reason, offset: number, length: number): void {
    if (this.options.onVerdict === undefined) return;
    let slot = this.pending[this.pendingCount];
    if (slot === undefined) {
      slot = { bytes: new Uint8Array(REPORT_COPY_BYTES), length: 0, event: blankEvent(this.reportedPacket) };
      this.pending.push(slot);
    }
    this.pendingCount += 1;
    if (slot.bytes.length < length) slot.bytes = new Uint8Array(length);
    slot.bytes.set(this.buffers.input.subarray(offset, offset + length));
    slot.length = length;
    const event = slot.event;
    const decision = this.decision;
    event.direction = this.info.direction;
    event.stage = this.info.stage;
    event.accepted = accepted;
    event.reason = reason;
    event.peer = decision.peer;
    event.rule = decision.rule;
    event.revision = decision.revision;
    event.wouldDrop = decision.wouldDrop;
    event.local = decision.local;
  }

  private malformed(
    queue: NativeQueue,
    id: number,
    queueNumber: number,
    mark: number,
    direction: Direction,
    reason: Reason,
  ): void {
    if (this.options.onMalformed === 'accept') {
      // Accepted untouched: a malformed packet is never rewritten.
      const marks = this.options.marks;
      queue.verdict(id, queueNumber, NF_REPEAT, ((mark & ~marks.all) | marks.pass) >>> 0);
      this.verdicts.add(direction, true, reason);
      return;
    }
    this.drop(queue, id, queueNumber, mark, direction, reason);
  }

  private drop(queue: NativeQueue, id: number, queueNumber: number, mark: number, direction: Direction, reason: Reason): void {
    queue.verdict(id, queueNumber, NF_DROP, mark);
    this.verdicts.add(direction, false, reason);
  }
}

function blankEvent(packet: ParsedPacket): VerdictEvent {
  return {
    direction: 'ingress',
    stage: 'syn',
    accepted: true,
    reason: 'ok',
    packet,
    peer: null,
    rule: null,
    revision: null,
    wouldDrop: null,
    local: null,
    latencyMicroseconds: 0,
  };
}

function checksumValid(packet: ParsedPacket): boolean {
  const tcpLength = packet.start + packet.length - packet.tcpOffset;
  const expected = tcpChecksum(packet.buf, packet.ipVersion, packet.sourceOffset, packet.tcpOffset, tcpLength);
  return expected === readUint16(packet.buf, packet.tcpOffset + 16);
}
