// The flow log: one JSON line per handshake verdict, with both identities, addresses, the
// deciding rule and policy revision, and the verdict latency. Every drop is written; accepted
// connections can be sampled. Sinks: the agent's log stream (stdout) or a file rotated by size
// (rotating-file-stream).
import { basename, dirname } from 'node:path';
import { createStream, type RotatingFileStream } from 'rotating-file-stream';
import { destinationAddress, sourceAddress } from '../datapath/addresses.ts';
import type { VerdictEvent } from '../datapath/handler.ts';
import type { FlowLogConfig } from '../runtime/config.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { Logger } from './log.ts';

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
}

export function flowRecord(event: VerdictEvent): FlowRecord {
  const packet = event.packet;
  const peer = event.peer as VerifiedIdentity | null;
  return {
    event: 'handshake',
    direction: event.direction,
    stage: event.stage,
    verdict: event.accepted ? 'accept' : 'drop',
    reason: event.reason === '' ? 'ok' : event.reason,
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

export class FlowLog {
  private readonly file: RotatingFileStream | null;

  constructor(
    private readonly config: FlowLogConfig,
    private readonly log: Logger,
    private readonly random: () => number = Math.random,
  ) {
    this.file =
      config.sink === 'file' && config.file !== null
        ? createStream(
            (_time, index) => (index === undefined || index === 0 ? basename(config.file!) : `${basename(config.file!)}.${index}`),
            { path: dirname(config.file), size: `${Math.max(1, Math.floor(config.maxBytes / 1024))}K`, maxFiles: config.maxFiles },
          )
        : null;
    this.file?.on('error', (error) => {
      log.error({ err: error }, 'flow log file failed');
    });
  }

  /** Called for every judged packet; writes connection verdicts (not accepted ACKs). */
  write(event: VerdictEvent): void {
    if (event.accepted && event.stage === 'ack') return;
    if (event.accepted && (this.config.sampleAccepted < 1 && this.random() >= this.config.sampleAccepted)) return;
    if (this.file === null) {
      if (event.accepted && !this.log.isLevelEnabled('info')) return;
      const record = flowRecord(event);
      if (event.accepted) this.log.info(record, 'handshake verdict');
      else this.log.warn(record, 'handshake verdict');
      return;
    }
    this.file.write(`${JSON.stringify({ time: new Date().toISOString(), ...flowRecord(event) })}\n`);
  }

  close(): Promise<void> {
    const file = this.file;
    if (file === null) return Promise.resolve();
    return new Promise((resolve) => file.end(() => { resolve(); }));
  }
}
