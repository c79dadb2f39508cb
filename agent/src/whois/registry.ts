// Verified peer identities of accepted connections, keyed by the connection's two ends as the
// handshake showed them ("local|remote"). Bounded; entries go when their connection is gone.
import type { VerifiedIdentity } from '../token/identity-token.ts';
import type { ConnectionEnds } from './translation.ts';

export function connectionKey(local: string, remote: string): string {
  return `${local}|${remote}`;
}

/** New entries after which a sweep is due at once, rather than at the next periodic one. */
export const SWEEP_AFTER_RECORDS = 1_024;

export class PeerRegistry {
  private readonly entries = new Map<string, VerifiedIdentity>();
  private recordedSinceSweep = 0;
  /** Asked for connections the queue never saw (the kernel fast path accepted them). */
  fallback: ((local: string, remote: string) => VerifiedIdentity | undefined) | null = null;

  constructor(readonly limit = 65_536) {}

  record(local: string, remote: string, identity: VerifiedIdentity): void {
    const key = connectionKey(local, remote);
    this.entries.delete(key);
    if (this.entries.size >= this.limit) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, identity);
    this.recordedSinceSweep += 1;
  }

  get(local: string, remote: string): VerifiedIdentity | undefined {
    return this.entries.get(connectionKey(local, remote)) ?? this.fallback?.(local, remote);
  }

  /**
   * Under a high connection rate a fixed sweep period would let the table grow by rate x period,
   * so a sweep is also due once SWEEP_AFTER_RECORDS connections were recorded since the last.
   */
  get sweepDue(): boolean {
    return this.recordedSinceSweep >= SWEEP_AFTER_RECORDS;
  }

  has(local: string, remote: string): boolean {
    return this.entries.has(connectionKey(local, remote));
  }

  /**
   * Drops every entry whose connection is gone, `live` being the sockets that exist. An entry no
   * socket has is kept while a socket with no entry of its own shares one end with it, an end no
   * other socket has: a NAT on this host gave that socket other addresses than the handshake
   * (whois finds the entry through conntrack, translation.ts). Such an end is a connecting
   * socket's own (a DNAT changed the other), or an accepting socket's peer (a redirect changed
   * its own); a listener's end, shared by its connections, keeps nothing.
   */
  retain(live: readonly ConnectionEnds[]): void {
    const keys = new Set(live.map((socket) => connectionKey(socket.local, socket.remote)));
    const holders = new Map<string, number>();
    for (const socket of live) {
      holders.set(`l${socket.local}`, (holders.get(`l${socket.local}`) ?? 0) + 1);
      holders.set(`r${socket.remote}`, (holders.get(`r${socket.remote}`) ?? 0) + 1);
    }
    const unrecordedEnds = new Set<string>();
    for (const socket of live) {
      if (this.has(socket.local, socket.remote)) continue;
      if (holders.get(`l${socket.local}`) === 1) unrecordedEnds.add(`l${socket.local}`);
      if (holders.get(`r${socket.remote}`) === 1) unrecordedEnds.add(`r${socket.remote}`);
    }
    for (const key of this.entries.keys()) {
      if (keys.has(key)) continue;
      const [local, remote] = key.split('|') as [string, string];
      if (!unrecordedEnds.has(`l${local}`) && !unrecordedEnds.has(`r${remote}`)) this.entries.delete(key);
    }
    this.recordedSinceSweep = 0;
  }

  get size(): number {
    return this.entries.size;
  }
}
