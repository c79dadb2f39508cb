// Verified peer identities of accepted connections, keyed by the connection's two ends as this
// host sees them ("local|remote"). Bounded; entries go when their connection is gone.
import type { VerifiedIdentity } from '../token/identity-token.ts';

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

  /** Drops every entry whose connection is not in `live` (keys of connections that exist). */
  retain(live: ReadonlySet<string>): void {
    for (const key of this.entries.keys()) if (!live.has(key)) this.entries.delete(key);
    this.recordedSinceSweep = 0;
  }

  get size(): number {
    return this.entries.size;
  }
}
