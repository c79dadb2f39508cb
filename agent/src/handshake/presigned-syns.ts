// First-contact SYN signatures made between handshakes rather than inside one. The signature
// covers the nonce, the time and the token's digest, nothing of the packet, so it can be made
// before the connect that carries it: a first contact then spends no signing on its way out.
// One is kept ready per workload token that made a first contact, made again once a handshake
// of this agent has ended (its last verdict sent): made right after the SYN left, the signing
// held up the server's agent, which the kernel often wakes on the same CPU, as long as it saved.
import type { KeyObject } from 'node:crypto';
import { signSyn } from '../protocol/syn-signature.ts';
import { tokenDigest } from '../protocol/token-digest.ts';
import type { NoncePool } from '../protocol/proofs.ts';
import type { PackedJws } from '../protocol/wire.ts';

export interface PresignedSyn {
  nonce: Buffer;
  /** Unix seconds, as the SYN carries it. */
  time: number;
  signature: Buffer;
}

/** Tokens waiting for their next signature at most: a refill never grows past it, whatever the pods. */
const MAX_PENDING = 64;

export class PresignedSyns {
  /** Keyed by the token object: a renewed or rotated identity's tokens are new objects, so they never meet a signature of the old key. */
  private readonly ready = new WeakMap<PackedJws, PresignedSyn>();
  private readonly pending = new Map<PackedJws, KeyObject>();
  private scheduled = false;

  /**
   * `maxAgeSeconds`: how old a ready signature's time may be when taken. The server accepts a SYN
   * time within its replay window of its clock; a ready signature spends part of that margin.
   */
  constructor(
    private readonly nonces: NoncePool,
    private readonly now: () => number,
    private readonly maxAgeSeconds: number,
  ) {}

  /** The ready signature for `token` if it is fresh enough (each is used once); a new one is made after the next handshake that ends. */
  take(signKey: KeyObject, token: PackedJws): PresignedSyn | null {
    const ready = this.ready.get(token);
    this.ready.delete(token);
    if (this.pending.size < MAX_PENDING) this.pending.set(token, signKey);
    if (ready === undefined) return null;
    const age = this.nowSeconds() - ready.time;
    return age >= 0 && age <= this.maxAgeSeconds ? ready : null;
  }

  /** A handshake ended: the signatures taken since are made again once the verdicts in hand have left. */
  handshakeEnded(): void {
    if (this.scheduled || this.pending.size === 0) return;
    this.scheduled = true;
    setImmediate(() => {
      this.refill();
    });
  }

  private nowSeconds(): number {
    return Math.floor(this.now() / 1000);
  }

  private refill(): void {
    this.scheduled = false;
    const time = this.nowSeconds();
    for (const [token, signKey] of this.pending) {
      const nonce = this.nonces.next();
      this.ready.set(token, { nonce, time, signature: signSyn(signKey, nonce, time, tokenDigest(token)) });
    }
    this.pending.clear();
  }
}
