// Per-connection handshake state and the SYN replay cache, both bounded and expiring.
import type { LocalIdentity } from '../identity/local-identity.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { SynMessage } from '../protocol/wire.ts';
import type { AdmittedClient, SocketOwner } from './kernel-path.ts';

export interface Flow {
  role: 'client' | 'server';
  clientNonce: Uint8Array;
  serverNonce: Uint8Array | null;
  clientIsn: number;
  serverIsn: number;
  pairKey: Buffer | null;
  peer: VerifiedIdentity | null;
  /** The SYN carried a valid proof: the handshake ends at the SYN-ACK. */
  fast: boolean;
  /** Client side: the SYN message, sent again unchanged (same nonce) with a retransmitted SYN. */
  syn: SynMessage | null;
  /** Client side: the local workload's attributes, for the egress decision at the SYN-ACK. */
  local: Readonly<Record<string, string>> | null;
  /**
   * The identity this end started the handshake under (the client's SYN carries its credential,
   * the server's pair key derives from its key). A renewal may swap keys before the handshake
   * ends; it ends under these.
   */
  ownIdentity?: LocalIdentity;
  /** Client side: the local workload whose token the SYN carries, or null for a pod known by address. */
  owner?: SocketOwner | null;
  /** Server side: the kernel path may take this client workload, if the listener's kernel signs (its SYN-ACK says). */
  kernelCandidate?: AdmittedClient | null;
  /** Server side: the kernel took this client workload; the SYN-ACK says so (FLAG_KERNEL). */
  kernel?: boolean;
  expiresAt: number;
}

/** Connection key from the client's point of view. */
export function flowKey(clientAddress: string, clientPort: number, serverAddress: string, serverPort: number): string {
  return `${clientAddress}|${clientPort}|${serverAddress}|${serverPort}`;
}

/** Entries of the oldest end looked at on every insert: enough to keep up, never a walk of all. */
const EXPIRED_PER_INSERT = 4;

/**
 * A bounded map whose entries expire. Expired entries go as new ones come: every insert first
 * drops up to EXPIRED_PER_INSERT expired entries from the oldest end (a Map iterates in insertion
 * order, and a key set again moves to the newest end), so the table holds about rate x lifetime
 * entries rather than filling to its limit before anything is swept.
 */
export class ExpiringTable<V extends { expiresAt: number }> {
  private readonly entries = new Map<string, V>();

  constructor(
    readonly limit: number,
    private readonly nowMs: () => number,
  ) {}

  get(key: string): V | undefined {
    const value = this.entries.get(key);
    if (value !== undefined && value.expiresAt <= this.nowMs()) {
      this.entries.delete(key);
      return undefined;
    }
    return value;
  }

  /** Returns false when the table is full of live entries (the caller fails closed). */
  set(key: string, value: V): boolean {
    this.expireOldest();
    const present = this.entries.delete(key);
    if (!present && this.entries.size >= this.limit) {
      this.sweep();
      if (this.entries.size >= this.limit) return false;
    }
    this.entries.set(key, value);
    return true;
  }

  private expireOldest(): void {
    const now = this.nowMs();
    let looked = 0;
    for (const [key, value] of this.entries) {
      if (value.expiresAt > now || ++looked > EXPIRED_PER_INSERT) return;
      this.entries.delete(key);
    }
  }

  delete(key: string): void {
    this.entries.delete(key);
  }

  sweep(): void {
    const now = this.nowMs();
    for (const [key, value] of this.entries) if (value.expiresAt <= now) this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}

/**
 * A SYN nonce seen, kept until its SYN time leaves the replay window. Nothing else: a retransmit
 * is told from a replay by the pending flow of its own connection, which holds nonce and ISN, so
 * a full replay cache costs a key and an expiry per entry (docs/operations.md, Memory).
 */
export interface SeenNonce {
  expiresAt: number;
}
