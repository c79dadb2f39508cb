// Verified peer identities of accepted connections, keyed by the connection's two ends as this
// host sees them ("local|remote"). Bounded; entries go when their connection is gone.
import type { VerifiedIdentity } from '../token/identity-token.ts';

export function connectionKey(local: string, remote: string): string {
  return `${local}|${remote}`;
}

export class PeerRegistry {
  private readonly entries = new Map<string, VerifiedIdentity>();

  constructor(readonly limit = 65_536) {}

  record(local: string, remote: string, identity: VerifiedIdentity): void {
    const key = connectionKey(local, remote);
    this.entries.delete(key);
    if (this.entries.size >= this.limit) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, identity);
  }

  get(local: string, remote: string): VerifiedIdentity | undefined {
    return this.entries.get(connectionKey(local, remote));
  }

  /** Drops every entry whose connection is not in `live` (keys of connections that exist). */
  retain(live: ReadonlySet<string>): void {
    for (const key of this.entries.keys()) if (!live.has(key)) this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }
}
