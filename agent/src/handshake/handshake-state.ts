// Per-connection handshake state and the SYN replay cache, both bounded and expiring.
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { SynMessage } from '../protocol/wire.ts';

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
  expiresAt: number;
}

/** Connection key from the client's point of view. */
export function flowKey(clientAddress: string, clientPort: number, serverAddress: string, serverPort: number): string {
  return `${clientAddress}|${clientPort}|${serverAddress}|${serverPort}`;
}

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
    if (!this.entries.has(key) && this.entries.size >= this.limit) {
      this.sweep();
      if (this.entries.size >= this.limit) return false;
    }
    this.entries.set(key, value);
    return true;
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

export interface SeenNonce {
  flow: string;
  clientIsn: number;
  expiresAt: number;
}
