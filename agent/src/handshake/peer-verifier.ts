// Verifies a peer's credential, reads its token, and derives the pair key, each at most once per
// distinct value: results are cached until they expire, so a known peer costs no asymmetric
// operation. Expiry is this agent's clock against `exp`, with no leeway, whether the result is
// fresh or cached (and as the kernel's entries expire): the token layer's clock-skew leeway is
// kept for times in the future (`iat`, `nbf`, a peer's clock ahead), never to accept a credential
// past its end. A token's own signature is never verified here: the message's SYN signature or
// pair-key proof covers the token's digest, and a token enters the cache once the caller has
// checked that. Caches are bounded; the oldest entry goes first.
import type { KeyObject } from 'node:crypto';
import { verifyCredential, type VerifiedCredential } from '../token/credential.ts';
import type { TrustBundle } from '../token/trust-bundle.ts';
import { TokenError } from '../token/errors.ts';
import { denialOf, EMPTY_DENY_LIST, type DenyList } from '../token/deny-list.ts';
import { readIdentityToken, type VerifiedIdentity } from '../token/identity-token.ts';
import { derivePairKey } from '../protocol/proofs.ts';
import { tokenDigest } from '../protocol/token-digest.ts';
import { credentialReason, refuse, Refusal, tokenReason } from './reasons.ts';
import { packJws, unpackJws, type PackedJws } from '../protocol/wire.ts';
import type { TableSize } from '../datapath/handler.ts';

/** A cached result with the exact bytes it was computed from. */
interface Verified<V> {
  bytes: Buffer;
  value: V;
}

/** A token a checked signature or proof covered, with the digest that check bound. */
interface ProvenToken extends Verified<VerifiedIdentity> {
  digest: Buffer;
}

/**
 * A cache key from the signature's first 48 bits, read without allocating: signatures are
 * uniformly random, and every hit is confirmed byte for byte, so a collision is only a miss.
 */
function signatureKey(packed: PackedJws): number {
  const signature = packed.signature;
  let key = 0;
  for (let i = 0; i < 6 && i < signature.length; i++) key = key * 256 + signature[i]!;
  return key;
}

function sameBytes(stored: Buffer, packed: PackedJws): boolean {
  return stored.equals(packed.bytes);
}

class BoundedCache<V> {
  private readonly entries = new Map<number, V>();
  hits = 0;
  misses = 0;
  constructor(readonly limit: number) {}
  get(key: number): V | undefined {
    const value = this.entries.get(key);
    if (value === undefined) this.misses += 1;
    else this.hits += 1;
    return value;
  }
  set(key: number, value: V): void {
    if (this.entries.size >= this.limit) {
      const oldest = this.entries.keys().next().value;
      if (oldest !== undefined) this.entries.delete(oldest);
    }
    this.entries.set(key, value);
  }
  delete(key: number): void {
    this.entries.delete(key);
  }
  clear(): void {
    this.entries.clear();
  }
  get size(): number {
    return this.entries.size;
  }
}

const CREDENTIAL_CACHE_SIZE = 4096;
const TOKEN_CACHE_SIZE = 8192;

export interface OwnKeys {
  kex: KeyObject;
  kexRaw: Buffer;
}

/**
 * Pair keys between one own key and peers' credential keys, each derived once per credential.
 * As many as the credential cache holds: a key whose credential was evicted is derived again.
 */
export class PairKeys {
  /** Keyed by the cached credential object: a lookup is an identity hash, no string. */
  private readonly keys = new Map<VerifiedCredential, Buffer>();
  derived = 0;

  constructor(
    private readonly own: OwnKeys,
    readonly limit = CREDENTIAL_CACHE_SIZE,
  ) {}

  get(credential: VerifiedCredential): Buffer {
    let key = this.keys.get(credential);
    if (key === undefined) {
      key = derivePairKey(this.own.kex, this.own.kexRaw, credential.kexRaw);
      if (this.keys.size >= this.limit) {
        const oldest = this.keys.keys().next().value;
        if (oldest !== undefined) this.keys.delete(oldest);
      }
      this.keys.set(credential, key);
      this.derived += 1;
    }
    return key;
  }

  get size(): number {
    return this.keys.size;
  }
}


export interface VerifiedPeer {
  credential: VerifiedCredential;
  /** Claimed, not proven, while `tokenProven` is false. */
  identity: VerifiedIdentity;
  /** SHA-256 of the token's bytes: what the message's signature or proof must cover. */
  tokenDigest: Buffer;
  /**
   * The token was covered by a checked signature or proof before (it is cached). A new token's
   * identity is only claimed: the caller checks this message's signature or proof over
   * `tokenDigest` before it trusts the identity, then calls `rememberToken`.
   */
  tokenProven: boolean;
}

export class PeerVerifier {
  readonly credentials = new BoundedCache<Verified<VerifiedCredential>>(CREDENTIAL_CACHE_SIZE);
  readonly tokens = new BoundedCache<ProvenToken>(TOKEN_CACHE_SIZE);
  private pairKeys: PairKeys;
  /** Pair keys derived with own keys replaced since (the count survives reconfiguration). */
  private pairKeysDerivedBefore = 0;
  /** Checked on every handshake, cached credential or not: a revocation applies to the next SYN. */
  denyList: DenyList = EMPTY_DENY_LIST;

  constructor(
    private bundles: ReadonlyMap<string, TrustBundle>,
    own: OwnKeys,
    private readonly nowSeconds: () => number,
  ) {
    this.pairKeys = new PairKeys(own);
  }

  /** New bundles or own keys (rotation): cached results no longer prove anything. */
  reconfigure(bundles: ReadonlyMap<string, TrustBundle>, own: OwnKeys): void {
    this.bundles = bundles;
    this.credentials.clear();
    this.tokens.clear();
    this.pairKeysDerivedBefore += this.pairKeys.derived;
    this.pairKeys = new PairKeys(own);
  }

  /**
   * Caches are keyed by the JWS signature and hold the bytes it signed: a hit costs one memcmp,
   * and the same signature glued to other bytes is a miss, read afresh and proven afresh.
   */
  verify(credentialJws: PackedJws, tokenJws: PackedJws): VerifiedPeer | Refusal {
    const now = this.nowSeconds();
    const credential = this.credential(credentialJws, now);
    if (credential instanceof Refusal) return credential;
    const key = signatureKey(tokenJws);
    const cached = this.tokens.get(key);
    if (cached !== undefined && sameBytes(cached.bytes, tokenJws)) {
      if (cached.value.expiresAt <= now) {
        this.tokens.delete(key);
        return refuse('expired-token');
      }
      // A cached token presented with a different agent's credential.
      if (cached.value.agent !== credential.subject) return refuse('token-credential-mismatch');
      return { credential, identity: cached.value, tokenDigest: cached.digest, tokenProven: true };
    }
    try {
      const identity = readIdentityToken(unpackJws(tokenJws), credential, now);
      if (identity.expiresAt <= now) return refuse('expired-token');
      return { credential, identity, tokenDigest: tokenDigest(tokenJws), tokenProven: false };
    } catch (error) {
      // The token layer reports a bad token as a typed error; here it becomes a verdict.
      if (error instanceof TokenError) return refuse(tokenReason(error.code), error.message);
      throw error;
    }
  }

  /** Caches a token once the message's signature or proof over its digest checked out. */
  rememberToken(tokenJws: PackedJws, peer: VerifiedPeer): void {
    if (peer.tokenProven) return;
    this.tokens.set(signatureKey(tokenJws), { bytes: Buffer.from(tokenJws.bytes), value: peer.identity, digest: peer.tokenDigest });
    peer.tokenProven = true;
  }

  private credential(packed: PackedJws, now: number): VerifiedCredential | Refusal {
    const verified = this.verifiedCredential(packed, now);
    if (verified instanceof Refusal) return verified;
    const denial = denialOf(this.denyList, verified);
    return denial === null ? verified : refuse('revoked-credential', `${verified.subject}: ${denial === 'key' ? `key ${verified.signKid}` : `credential ${verified.jti ?? ''}`} is on the deny list`);
  }

  private verifiedCredential(packed: PackedJws, now: number): VerifiedCredential | Refusal {
    const key = signatureKey(packed);
    const cached = this.credentials.get(key);
    if (cached !== undefined && sameBytes(cached.bytes, packed)) {
      if (cached.value.expiresAt > now) return cached.value;
      this.credentials.delete(key);
      return refuse('expired-credential');
    }
    try {
      const credential = verifyCredential(unpackJws(packed), this.bundles, now);
      if (credential.expiresAt <= now) return refuse('expired-credential');
      this.credentials.set(key, { bytes: Buffer.from(packed.bytes), value: credential });
      return credential;
    } catch (error) {
      if (error instanceof TokenError) return refuse(credentialReason(error.code), error.message);
      throw error;
    }
  }

  /** A credential kept as text (the saved kernel table), checked as at a handshake: bundles, expiry, deny list. */
  verifyCredentialText(compact: string): VerifiedCredential | Refusal {
    let packed: PackedJws;
    try {
      packed = packJws(compact);
    } catch (error) {
      return refuse('malformed-token', (error as Error).message);
    }
    return this.credential(packed, this.nowSeconds());
  }

  pairKey(credential: VerifiedCredential): Buffer {
    return this.pairKeys.get(credential);
  }

  /** Entries and capacity of the verified-credential and verified-token caches and the pair keys. */
  tables(): Record<string, TableSize> {
    return {
      credentials: { entries: this.credentials.size, capacity: this.credentials.limit },
      tokens: { entries: this.tokens.size, capacity: this.tokens.limit },
      'pair-keys': { entries: this.pairKeys.size, capacity: this.pairKeys.limit },
    };
  }

  cacheStats(): Record<string, { hits: number; misses: number; size: number }> {
    const stat = (c: BoundedCache<unknown>) => ({ hits: c.hits, misses: c.misses, size: c.size });
    return { credentials: stat(this.credentials), tokens: stat(this.tokens), pairKeysDerived: { hits: 0, misses: this.pairKeysDerivedBefore + this.pairKeys.derived, size: 0 } };
  }
}
