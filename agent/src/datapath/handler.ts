// The seam between the datapath and whatever decides about a handshake packet (a pass-through
// test handler, the identity handshake). The datapath owns parsing, rewriting and verdicts;
// a handler only fills in a Decision, which is reused across packets.
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { ParsedPacket } from './packet.ts';
import type { Reason } from './reasons.ts';

export type Direction = 'ingress' | 'egress';
export type Stage = 'syn' | 'syn-ack' | 'ack';

export function stageOf(packet: ParsedPacket): Stage {
  if (packet.isSyn) return 'syn';
  if (packet.isSynAck) return 'syn-ack';
  return 'ack';
}

/**
 * A packet whose verdict waits in the kernel queue: it overtook the packet that decides its
 * connection. Exactly one of accept or drop takes effect; later calls do nothing.
 */
export interface HeldPacket {
  /** Lets it through and releases its connection. */
  accept(reason: Reason): void;
  drop(reason: Reason): void;
}

export class Decision {
  accept = true;
  /** Closed-set reason, used verbatim as a metric label. */
  reason: Reason = 'ok';
  /**
   * Token body to attach on egress (null: send the packet as it is). The engine copies it into
   * the packet before the next packet is decided, so a handler may hand over a reused buffer.
   */
  token: Uint8Array | null = null;
  tokenLength = 0;
  /** Mark the connection as one whose handshake the agent follows. */
  track = false;
  /** Release the connection: no further packet of it reaches user space. */
  release = false;
  /** The verified peer identity, if the handler learned one (for the flow log and whois). */
  peer: VerifiedIdentity | null = null;
  /** The policy rule that decided, its policy revision, and an observe-mode would-be drop. */
  rule: string | null = null;
  revision: string | null = null;
  wouldDrop: string | null = null;
  /** Attributes of the local workload the decision was about (for the flow log). */
  local: Readonly<Record<string, string>> | null = null;
  /**
   * A dropped SYN-ACK from a local server: reset the server's half-open connection too (as from
   * the client), so that it does not retransmit the SYN-ACK for a minute.
   */
  resetServer = false;
  /** Set by hold(): no verdict now; the receiver gets the packet to decide later. */
  holdReceiver: ((held: HeldPacket) => void) | null = null;

  reset(): void {
    this.accept = true;
    this.reason = 'ok';
    this.token = null;
    this.tokenLength = 0;
    this.track = false;
    this.release = false;
    this.peer = null;
    this.rule = null;
    this.revision = null;
    this.wouldDrop = null;
    this.local = null;
    this.resetServer = false;
    this.holdReceiver = null;
  }

  drop(reason: Reason): void {
    this.accept = false;
    this.reason = reason;
  }

  hold(receiver: (held: HeldPacket) => void): void {
    this.holdReceiver = receiver;
  }
}

export interface PacketInfo {
  direction: Direction;
  stage: Stage;
  packet: ParsedPacket;
  /** The token body carried by an ingress packet, as a view into the queue buffer; null if none. */
  token: Uint8Array | null;
  /** Owner of the local socket that sent the packet, or -1 (ingress, forwarded, SYN-ACK). */
  uid: number;
  gid: number;
}

/** How full one of the agent's bounded tables is (synpass_table_entries / _capacity). */
export interface TableSize {
  entries: number;
  capacity: number;
}

export interface HandshakeHandler {
  /** Decides synchronously; must not throw for any packet (the datapath drops and counts if it does). */
  decide(info: PacketInfo, decision: Decision): void;
}

/** The final outcome of one judged packet, after any rewrite. */
export interface VerdictEvent {
  direction: Direction;
  stage: Stage;
  accepted: boolean;
  reason: Reason;
  packet: ParsedPacket;
  peer: VerifiedIdentity | null;
  rule: string | null;
  revision: string | null;
  wouldDrop: string | null;
  local: Readonly<Record<string, string>> | null;
  /** From the packet's batch reaching the agent to its verdict being sent to the kernel. */
  latencyMicroseconds: number;
}
