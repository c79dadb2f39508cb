// Per-source token buckets for the one piece of work a stranger can force on the agent: the
// signature check of a first-contact SYN. A source is an IPv4 address or an IPv6 /64 (one host
// owns a whole /64). Buckets hold one second's worth; the table is bounded, and a source pushed
// out of it only starts again with a full bucket, which is generous, never wrong.

/** Buckets kept at once; past it the oldest goes. */
export const SOURCE_BUDGET_CAPACITY = 16_384;

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** The bucket key of an address in the form sourceAddress() writes (IPv6: 8 groups). */
export function sourcePrefix(address: string): string {
  if (!address.includes(':')) return address;
  let end = -1;
  for (let groups = 0; groups < 4; groups++) end = address.indexOf(':', end + 1);
  return address.slice(0, end);
}

export class SourceBudget {
  private readonly buckets = new Map<string, Bucket>();

  /** `perSecond` 0 turns the budget off. */
  constructor(
    readonly perSecond: number,
    readonly capacity = SOURCE_BUDGET_CAPACITY,
  ) {}

  /** Takes one unit of `address`'s budget; false when the source has spent it. */
  take(address: string, nowMs: number): boolean {
    if (this.perSecond === 0) return true;
    const key = sourcePrefix(address);
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (this.buckets.size >= this.capacity) {
        const oldest = this.buckets.keys().next().value;
        if (oldest !== undefined) this.buckets.delete(oldest);
      }
      bucket = { tokens: this.perSecond, updatedMs: nowMs };
      this.buckets.set(key, bucket);
    } else {
      const refill = ((nowMs - bucket.updatedMs) / 1000) * this.perSecond;
      bucket.tokens = Math.min(this.perSecond, bucket.tokens + Math.max(0, refill));
      bucket.updatedMs = nowMs;
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  get size(): number {
    return this.buckets.size;
  }
}
