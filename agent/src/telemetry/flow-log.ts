// The flow log: one JSON line per handshake verdict, with both identities, addresses, the
// deciding rule and policy revision, and the verdict latency. Sinks: the agent's log stream
// (stdout) or a file rotated by size (rotating-file-stream). Accepted connections can be sampled.
//
// Bounded under a flood: the first drop of a (source address, reason) pair in each second is
// written in full, and the rest of that second's become one line, "N more drops from X for
// reason R"; the pairs tracked at once are capped, and past the cap drops of a reason share one
// line for all sources. A record is written only while less than FLOW_LOG_MAX_PENDING_BYTES wait
// for the sink; past that it is dropped and counted, so errors and policy events, which share
// stdout, keep the rest of the log stream's room.
import { basename, dirname } from 'node:path';
import { createStream, type RotatingFileStream } from 'rotating-file-stream';
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import type { VerdictEvent } from '../datapath/handler.ts';
import type { z } from 'zod';
import type { FieldTypes } from '../config-fields.ts';
import type { Logger } from './log.ts';
import { verdictOf, type KernelEvent } from '../kernel/layouts.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';

/** The `telemetry.flowLog` section of the agent configuration. */
export function flowLogSection(t: FieldTypes) {
  return t.section({
    sink: t.choice(['stdout', 'file'], 'stdout', 'stdout: the agent log stream; file: JSON lines rotated by size'),
    file: t.optionalPath('the flow-log file (sink `file`)'),
    maxBytes: t.integer(4096, 2 ** 40, 50 * 1024 * 1024, 'rotate the file at this size', { defaultText: '50 MiB' }),
    maxFiles: t.integer(1, 1000, 5, 'rotated files kept'),
    sampleAccepted: t.number(0, 1, 1, 'fraction of accepted connections logged (drops are always logged or counted)'),
  });
}

export type FlowLogConfig = z.output<ReturnType<typeof flowLogSection>>;

/** What may wait for the sink before flow records are dropped (a quarter of the log stream's bound). */
export const FLOW_LOG_MAX_PENDING_BYTES = 2 * 1024 * 1024;
/** (source, reason) pairs aggregated at once; past this, a reason's drops from any source share one entry. */
export const FLOW_LOG_MAX_AGGREGATES = 1024;
export const FLOW_LOG_WINDOW_MS = 1000;
/** The source of the shared entry once FLOW_LOG_MAX_AGGREGATES pairs are tracked. */
export const ANY_SOURCE = '*';

export interface FlowRecord {
  event: 'handshake';
  direction: string;
  stage: string;
  verdict: 'accept' | 'drop';
  reason: string;
  source: string;
  destination: string;
  /** The local workload's identity, as policy saw it. */
  local: { subject: string | null; attributes: Readonly<Record<string, string>> } | null;
  peer: { subject: string; attributes: Readonly<Record<string, string>>; agent: string } | null;
  rule: string | null;
  policyRevision: string | null;
  wouldDrop: string | null;
  latencyMicroseconds: number;
  /** Judged by the kernel fast path (no queue trip): no rule, latency or local identity to tell. */
  path?: 'kernel';
}

/** Drops folded into one line: `count` more from `source` for `reason` since `since`. */
export interface DropSummary {
  event: 'drops';
  source: string;
  reason: string;
  count: number;
  since: string;
  until: string;
}

/** Why a record never became a line: the sink was behind ('backlog'). */
export type FlowLogDropReason = 'backlog';

export function flowRecord(event: VerdictEvent): FlowRecord {
  const packet = event.packet;
  const peer = event.peer;
  return {
    event: 'handshake',
    direction: event.direction,
    stage: event.stage,
    verdict: event.accepted ? 'accept' : 'drop',
    reason: event.reason,
    source: `${sourceAddress(packet)}:${packet.sourcePort}`,
    destination: `${destinationAddress(packet)}:${packet.destinationPort}`,
    local: event.local ? { subject: event.local['synpass.subject'] ?? null, attributes: event.local } : null,
    peer: peer ? { subject: peer.subject, attributes: peer.attributes, agent: peer.agent } : null,
    rule: event.rule,
    policyRevision: event.revision,
    wouldDrop: event.wouldDrop,
    latencyMicroseconds: Math.round(event.latencyMicroseconds),
  };
}

/** A kernel fast-path event as a flow record; null for an event that is no verdict. */
export function kernelFlowRecord(event: KernelEvent, peer: VerifiedIdentity | null): FlowRecord | null {
  const verdict = verdictOf(event.counter);
  if (verdict === undefined) return null;
  return {
    event: 'handshake',
    direction: verdict.direction,
    stage: event.counter.startsWith('synAck') ? 'syn-ack' : 'syn',
    verdict: verdict.action,
    reason: verdict.reason,
    source: `${event.source}:${event.sourcePort}`,
    destination: `${event.destination}:${event.destinationPort}`,
    local: null,
    peer: peer ? { subject: peer.subject, attributes: peer.attributes, agent: peer.agent } : null,
    rule: null,
    policyRevision: null,
    wouldDrop: null,
    latencyMicroseconds: 0,
    path: 'kernel',
  };
}

/** Where lines go, and how many bytes wait there. */
interface FlowSink {
  pendingBytes(): number;
  handshake(record: FlowRecord): void;
  drops(summary: DropSummary): void;
  close(): Promise<void>;
}

function logSink(log: Logger, pendingBytes: () => number): FlowSink {
  return {
    pendingBytes,
    handshake: (record) => {
      if (record.verdict === 'accept') log.info(record, 'handshake verdict');
      else log.warn(record, 'handshake verdict');
    },
    drops: (summary) => {
      log.warn(summary, `${summary.count} more drops from ${summary.source} for reason ${summary.reason}`);
    },
    close: () => Promise.resolve(),
  };
}

function fileSink(config: FlowLogConfig & { file: string }, log: Logger): FlowSink {
  const file: RotatingFileStream = createStream(
    (_time, index) => (index === undefined || index === 0 ? basename(config.file) : `${basename(config.file)}.${index}`),
    { path: dirname(config.file), size: `${Math.max(1, Math.floor(config.maxBytes / 1024))}K`, maxFiles: config.maxFiles },
  );
  file.on('error', (error) => {
    log.error({ err: error }, 'flow log file failed');
  });
  const line = (record: object): void => {
    file.write(`${JSON.stringify({ time: new Date().toISOString(), ...record })}\n`);
  };
  return {
    pendingBytes: () => file.writableLength,
    handshake: line,
    drops: line,
    close: () => new Promise((resolve) => file.end(() => { resolve(); })),
  };
}

interface Aggregate {
  source: string;
  reason: string;
  count: number;
  since: number;
}

export interface FlowLogCounters {
  /** Records that never became a line, by why. */
  dropped: Record<FlowLogDropReason, number>;
  /** Drops folded into a summary line instead of a line each. */
  aggregated: number;
  /** (source, reason) pairs being aggregated now. */
  aggregates: number;
}

export class FlowLog {
  readonly counters: FlowLogCounters = { dropped: { backlog: 0 }, aggregated: 0, aggregates: 0 };
  private readonly sink: FlowSink;
  /** This window's drops past the first of each (source, reason); keyed `source reason`. */
  private readonly windows = new Map<string, Aggregate>();
  /** Pairs whose first drop was written this window; cleared with it. */
  private readonly seen = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  /** Whether accepted connections get lines at all (the stdout sink logs them at info). */
  private readonly accepts: boolean;

  /** `logPendingBytes`: what waits in the log stream, for the stdout sink. */
  constructor(
    private readonly config: FlowLogConfig,
    log: Logger,
    logPendingBytes: () => number = () => 0,
    private readonly random: () => number = Math.random,
    private readonly now: () => number = Date.now,
  ) {
    this.sink = config.sink === 'file' && config.file !== null ? fileSink({ ...config, file: config.file }, log) : logSink(log, logPendingBytes);
    this.accepts = config.sink === 'file' || log.isLevelEnabled('info');
  }

  /** Whether accepted connections are written at all (the kernel samples its accepts by this and sampleAccepted). */
  get logsAccepts(): boolean {
    return this.accepts;
  }

  /** Called for every judged packet; writes connection verdicts (not accepted ACKs). */
  write(event: VerdictEvent): void {
    if (event.accepted) {
      if (event.stage === 'ack' || !this.accepts) return;
      if (this.config.sampleAccepted < 1 && this.random() >= this.config.sampleAccepted) return;
    } else if (this.aggregate(sourceAddress(event.packet), event.reason)) {
      return;
    }
    this.emit(flowRecord(event));
  }

  /**
   * A verdict of the kernel fast path. Its accepts arrive already sampled; its drops at most once
   * a second per source and cause, with `folded` more behind them, and they are folded here as
   * the queue's are.
   */
  writeKernel(record: FlowRecord, sourceAddress: string, folded: number): void {
    if (record.verdict === 'accept') {
      if (this.accepts) this.emit(record);
      return;
    }
    if (!this.aggregate(sourceAddress, record.reason)) this.emit(record);
    if (folded > 0) this.aggregate(sourceAddress, record.reason, folded);
  }

  /** Kernel drops of `reason` no per-source report covered in time (kernel/drop-ledger.ts): folded under source "*". */
  writeKernelTail(reason: string, drops: number): void {
    this.count(`${ANY_SOURCE} ${reason}`, ANY_SOURCE, reason, drops);
  }

  private emit(record: FlowRecord): void {
    if (this.sink.pendingBytes() >= FLOW_LOG_MAX_PENDING_BYTES) {
      this.counters.dropped.backlog += 1;
      return;
    }
    this.sink.handshake(record);
  }

  /**
   * Whether the drop (or `drops` already seen, from the kernel) was folded into its pair's window
   * rather than written: the first drop of a pair in a window is written, the rest are counted.
   */
  private aggregate(source: string, reason: string, drops = 1): boolean {
    const key = `${source} ${reason}`;
    if (!this.seen.has(key)) {
      if (this.seen.size < FLOW_LOG_MAX_AGGREGATES) {
        this.seen.add(key);
        this.startWindow();
        if (drops === 1) return false;
        return this.count(key, source, reason, drops);
      }
      return this.count(`${ANY_SOURCE} ${reason}`, ANY_SOURCE, reason, drops);
    }
    return this.count(key, source, reason, drops);
  }

  private count(key: string, source: string, reason: string, drops: number): true {
    const entry = this.windows.get(key);
    if (entry === undefined) this.windows.set(key, { source, reason, count: drops, since: this.now() });
    else entry.count += drops;
    this.counters.aggregated += drops;
    this.counters.aggregates = this.windows.size;
    this.startWindow();
    return true;
  }

  private startWindow(): void {
    if (this.timer !== null) return;
    this.timer = setInterval(() => { this.closeWindow(); }, FLOW_LOG_WINDOW_MS);
    this.timer.unref();
  }

  /** One line per aggregated pair; a quiet window stops the timer. */
  private closeWindow(): void {
    const until = new Date(this.now()).toISOString();
    for (const entry of this.windows.values()) {
      if (this.sink.pendingBytes() >= FLOW_LOG_MAX_PENDING_BYTES) {
        this.counters.dropped.backlog += entry.count;
        continue;
      }
      this.sink.drops({ event: 'drops', source: entry.source, reason: entry.reason, count: entry.count, since: new Date(entry.since).toISOString(), until });
    }
    const quiet = this.windows.size === 0 && this.seen.size === 0;
    this.windows.clear();
    this.seen.clear();
    this.counters.aggregates = 0;
    if (quiet && this.timer !== null) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  /** Writes the open window's summaries, then closes the file (SIGTERM). */
  close(): Promise<void> {
    this.closeWindow();
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    return this.sink.close();
  }
}
