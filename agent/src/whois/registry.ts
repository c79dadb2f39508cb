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
   * socket has is kept while a socket with no entry of its own could be its connection under
   * addresses a NAT on this host changed (whois finds the entry through conntrack,
   * translation.ts): the socket shares the entry's local end (a DNAT changed the remote one), or
   * its remote end (a redirect changed the local one), either an end no other socket has; or
   * the remote end and the local port (a source NAT that kept the port). A listener's end, which
   * its connections share, keeps nothing.
   */
  retain(live: readonly ConnectionEnds[]): void {
    const keys = new Set(live.map((socket) => connectionKey(socket.local, socket.remote)));
    const holders = new Map<string, number>();
    const hold = (end: string) => holders.set(end, (holders.get(end) ?? 0) + 1);
    for (const socket of live) {
      hold(`local ${socket.local}`);
      hold(`remote ${socket.remote}`);
    }
    const portOf = (end: string) => end.slice(end.lastIndexOf(':') + 1);
    const translatable = new Set<string>();
    for (const socket of live) {
      if (this.has(socket.local, socket.remote)) continue;
      for (const end of [`local ${socket.local}`, `remote ${socket.remote}`]) if (holders.get(end) === 1) translatable.add(end);
      translatable.add(`remote ${socket.remote} port ${portOf(socket.local)}`);
    }
    for (const key of this.entries.keys()) {
      if (keys.has(key)) continue;
      const [local, remote] = key.split('|') as [string, string];
      const kept = translatable.has(`local ${local}`) || translatable.has(`remote ${remote} port ${portOf(local)}`) || translatable.has(`remote ${remote}`);
      if (!kept) this.entries.delete(key);
    }
    this.recordedSinceSweep = 0;
  }

  get size(): number {
    return this.entries.size;
  }
}
