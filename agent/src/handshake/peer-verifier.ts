// Verifies a peer's credential and token, and derives the pair key, each at most once per
// distinct value: results are cached until they expire, so a known peer costs no asymmetric
// operation. Caches are bounded; the oldest entry goes first.
import type { KeyObject } from 'node:crypto';
import { verifyCredential, type VerifiedCredential } from '../identity/credential.ts';
import type { TrustBundle } from '../identity/trust-bundle.ts';
import { TokenError } from '../token/errors.ts';
import { verifyIdentityToken, type VerifiedIdentity } from '../token/identity-token.ts';
import { derivePairKey } from './proofs.ts';
import { credentialReason, HandshakeReject, tokenReason } from './reasons.ts';

class BoundedCache<V> {
  private readonly entries = new Map<string, V>();
  hits = 0;
  misses = 0;
  constructor(private readonly limit: number) {}
  get(key: string): V | undefined {
    const value = this.entries.get(key);
    if (value === undefined) this.misses += 1;
    else this.hits += 1;
    return value;
  }
  set(key: string, value: V): void {
    if (this.entries.size >= this.limit) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, value);
  }
  delete(key: string): void {
    this.entries.delete(key);
  }
  clear(): void {
    this.entries.clear();
  }
  get size(): number {
    return this.entries.size;
  }
}

export interface OwnKeys {
  kex: KeyObject;
  kexRaw: Buffer;
}

export interface VerifiedPeer {
  credential: VerifiedCredential;
  identity: VerifiedIdentity;
}

export class PeerVerifier {
  readonly credentials = new BoundedCache<VerifiedCredential>(4096);
  readonly tokens = new BoundedCache<VerifiedIdentity>(16384);
  readonly pairKeys = new BoundedCache<Buffer>(4096);

  constructor(
    private bundles: ReadonlyMap<string, TrustBundle>,
    private own: OwnKeys,
    private readonly nowSeconds: () => number,
  ) {}

  /** New bundles or own keys (rotation): cached results no longer prove anything. */
  reconfigure(bundles: ReadonlyMap<string, TrustBundle>, own: OwnKeys): void {
    this.bundles = bundles;
    this.own = own;
    this.credentials.clear();
    this.tokens.clear();
    this.pairKeys.clear();
  }

  verify(credentialCompact: string, tokenCompact: string): VerifiedPeer {
    const now = this.nowSeconds();
    const credential = this.credential(credentialCompact, now);
    let identity = this.tokens.get(tokenCompact);
    if (identity !== undefined && identity.expiresAt <= now) {
      this.tokens.delete(tokenCompact);
      throw new HandshakeReject('expired-token');
    }
    if (identity === undefined) {
      try {
        identity = verifyIdentityToken(tokenCompact, credential, now);
      } catch (error) {
        if (error instanceof TokenError) throw new HandshakeReject(tokenReason(error.code), error.message);
        throw error;
      }
      this.tokens.set(tokenCompact, identity);
    } else if (identity.agent !== credential.subject) {
      // A cached token presented with a different agent's credential.
      throw new HandshakeReject('token-credential-mismatch');
    }
    return { credential, identity };
  }

  private credential(compact: string, now: number): VerifiedCredential {
    const cached = this.credentials.get(compact);
    if (cached !== undefined) {
      if (cached.expiresAt > now) return cached;
      this.credentials.delete(compact);
      throw new HandshakeReject('expired-credential');
    }
    try {
      const credential = verifyCredential(compact, this.bundles, now);
      this.credentials.set(compact, credential);
      return credential;
    } catch (error) {
      if (error instanceof TokenError) throw new HandshakeReject(credentialReason(error.code), error.message);
      throw error;
    }
  }

  pairKey(credential: VerifiedCredential): Buffer {
    const id = credential.kexRaw.toString('base64');
    let key = this.pairKeys.get(id);
    if (key === undefined) {
      key = derivePairKey(this.own.kex, this.own.kexRaw, credential.kexKey, credential.kexRaw);
      this.pairKeys.set(id, key);
    }
    return key;
  }

  cacheStats(): Record<string, { hits: number; misses: number; size: number }> {
    const stat = (c: BoundedCache<unknown>) => ({ hits: c.hits, misses: c.misses, size: c.size });
    return { credentials: stat(this.credentials), tokens: stat(this.tokens), pairKeys: stat(this.pairKeys) };
  }
}
