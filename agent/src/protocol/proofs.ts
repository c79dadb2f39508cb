// Pair keys and proofs. Two agents derive one symmetric key from a static X25519 agreement
// between their credential keys (HKDF-SHA256, RFC 5869), cached per pair, so after first
// contact a connection costs only HMACs. Proofs are HMAC-SHA256 truncated to 128 bits.
import { randomFillSync, timingSafeEqual, type KeyObject } from 'node:crypto';
import { loadBinding, type NativeBinding } from '../native/addon.ts';
import { rawKeyBytes } from '../token/curve25519-keys.ts';
import { TokenError } from '../token/errors.ts';
import { KEY_ID_BYTES, NONCE_BYTES, PROOF_BYTES, type SynMessage } from './wire.ts';

const PAIR_INFO = Buffer.from('synpass pair key v1');
const PAIR_KEY_BYTES = 32;
let hkdfSha256: NativeBinding['hkdfSha256'] | undefined;
let x25519: NativeBinding['x25519'] | undefined;
const shared = Buffer.alloc(32);

/**
 * The pair key of our X25519 key and a peer's raw public key. The agreement runs in the addon on
 * raw keys (libsodium): no key object to import per peer. A peer key of small order (its
 * credential's claim) is a TokenError `bad-claims`: every pair key with it would be public.
 */
export function derivePairKey(ownKex: KeyObject, ownKexRaw: Buffer, peerKexRaw: Buffer): Buffer {
  x25519 ??= loadBinding().x25519;
  if (!x25519(rawKeyBytes(ownKex), peerKexRaw, shared)) throw new TokenError('bad-claims', 'the credential\'s key-agreement key has small order');
  // Salt orders the two public keys so both ends derive the same key.
  const salt = Buffer.compare(ownKexRaw, peerKexRaw) <= 0 ? Buffer.concat([ownKexRaw, peerKexRaw]) : Buffer.concat([peerKexRaw, ownKexRaw]);
  const pairKey = Buffer.alloc(PAIR_KEY_BYTES);
  // OpenSSL's HKDF through the addon: hkdfSync cost about 40% of a pair key's derivation (hmac.cc).
  hkdfSha256 ??= loadBinding().hkdfSha256;
  hkdfSha256(shared, salt, PAIR_INFO, pairKey);
  shared.fill(0);
  return pairKey;
}

const PROBE_SCALAR = Buffer.alloc(32, 0x55);

/** Whether an X25519 public key has small order: its agreement with any key is all zeros (RFC 7748, section 6.1). */
export function hasSmallOrder(kexRaw: Uint8Array): boolean {
  x25519 ??= loadBinding().x25519;
  return !x25519(PROBE_SCALAR, kexRaw, shared);
}

/** Short identifier of an agent's key-agreement key, so a SYN can name the key it proved to. */
export function keyId(kexRaw: Buffer): Buffer {
  return kexRaw.subarray(0, KEY_ID_BYTES);
}

export type ProofLabel = 'syn' | 'syn-ack' | 'ack' | 'fast-key' | 'fast-id';

// One message buffer and one digest buffer, reused: the MAC of these few dozen bytes costs less
// than creating anything per proof. The HMAC runs in the addon because node:crypto's createHmac
// (a context, a key object and an algorithm lookup per call) cost 5-20 us a proof in the agent.
const scratch = Buffer.alloc(256);
const digest = Buffer.alloc(32);
const truncated = digest.subarray(0, PROOF_BYTES);
const LABELS: Record<ProofLabel, Uint8Array> = {
  syn: Buffer.from('syn'),
  'syn-ack': Buffer.from('syn-ack'),
  ack: Buffer.from('ack'),
  'fast-key': Buffer.from('fast-key'),
  'fast-id': Buffer.from('fast-id'),
};
let hmacSha256: NativeBinding['hmacSha256'] | undefined;

/** Leaves the HMAC of the label and parts in `digest`. */
function mac(pairKey: Buffer, label: ProofLabel, parts: readonly (Uint8Array | number)[]): void {
  const labelBytes = LABELS[label];
  scratch.set(labelBytes, 0);
  let offset = labelBytes.length;
  for (const part of parts) {
    if (typeof part === 'number') offset = scratch.writeUInt32BE(part >>> 0, offset);
    else {
      scratch.set(part, offset);
      offset += part.length;
    }
  }
  hmacSha256 ??= loadBinding().hmacSha256;
  hmacSha256(pairKey, scratch, offset, digest);
}

/**
 * HMAC over the label and every value the proof binds: the nonces of both ends, the initial
 * sequence numbers, (SYN-ACK) the server's flags and (SYN, SYN-ACK) the digest of the token the
 * message carries, so none can be swapped or replayed.
 */
export function computeProof(pairKey: Buffer, label: ProofLabel, parts: readonly (Uint8Array | number)[]): Buffer {
  mac(pairKey, label, parts);
  const proof = Buffer.allocUnsafe(PROOF_BYTES);
  proof.set(truncated);
  return proof;
}

/** Whether `received` is the proof over these values, compared in constant time and without allocating. */
export function proofValid(pairKey: Buffer, label: ProofLabel, parts: readonly (Uint8Array | number)[], received: Uint8Array): boolean {
  if (received.length !== PROOF_BYTES) return false;
  mac(pairKey, label, parts);
  return timingSafeEqual(truncated, received);
}

// What each proof binds, spelled once for the end that makes it and the end that checks it.
// Both ISNs come from the packets themselves; the token digest ties a proof to the exact token
// that travels with it, which is why the peer need not verify the token's own signature.

/** SYN (known peer): the client's nonce and time, its ISN, and its token's digest. */
export interface SynTranscript {
  nonce: Uint8Array;
  time: number;
  clientIsn: number;
  tokenDigest: Uint8Array;
}

/** SYN-ACK: the server's flags, both nonces, both ISNs, and the server token's digest. */
export interface SynAckTranscript {
  flags: number;
  clientNonce: Uint8Array;
  serverNonce: Uint8Array;
  clientIsn: number;
  serverIsn: number;
  tokenDigest: Uint8Array;
}

/** ACK (first contact): both nonces and both ISNs. */
export interface AckTranscript {
  clientNonce: Uint8Array;
  serverNonce: Uint8Array;
  clientIsn: number;
  serverIsn: number;
}

/** The transcript a received SYN message, the client's ISN and its token's digest give. */
export function synTranscriptOf(syn: SynMessage, clientIsn: number, tokenDigest: Uint8Array): SynTranscript {
  return { nonce: syn.nonce, time: syn.time, clientIsn, tokenDigest };
}

const synParts = (t: SynTranscript) => [t.nonce, t.time, t.clientIsn, t.tokenDigest];
const synAckParts = (t: SynAckTranscript) => [t.flags, t.clientNonce, t.serverNonce, t.clientIsn, t.serverIsn, t.tokenDigest];
const ackParts = (t: AckTranscript) => [t.clientNonce, t.serverNonce, t.clientIsn, t.serverIsn];

export const synProof = (pairKey: Buffer, t: SynTranscript): Buffer => computeProof(pairKey, 'syn', synParts(t));
export const synProofValid = (pairKey: Buffer, t: SynTranscript, received: Uint8Array): boolean => proofValid(pairKey, 'syn', synParts(t), received);
export const synAckProof = (pairKey: Buffer, t: SynAckTranscript): Buffer => computeProof(pairKey, 'syn-ack', synAckParts(t));
export const synAckProofValid = (pairKey: Buffer, t: SynAckTranscript, received: Uint8Array): boolean => proofValid(pairKey, 'syn-ack', synAckParts(t), received);
export const ackProof = (pairKey: Buffer, t: AckTranscript): Buffer => computeProof(pairKey, 'ack', ackParts(t));
export const ackProofValid = (pairKey: Buffer, t: AckTranscript, received: Uint8Array): boolean => proofValid(pairKey, 'ack', ackParts(t), received);

/**
 * Fresh nonces from a pool refilled 256 at a time: one CSPRNG call per 256 handshakes instead
 * of one per SYN. Each nonce is copied out, so a refill never changes one already handed out.
 */
export class NoncePool {
  private readonly pool = Buffer.alloc(NONCE_BYTES * 256);
  private offset = this.pool.length;

  next(): Buffer {
    if (this.offset === this.pool.length) {
      randomFillSync(this.pool);
      this.offset = 0;
    }
    const nonce = Buffer.from(this.pool.subarray(this.offset, this.offset + NONCE_BYTES));
    this.offset += NONCE_BYTES;
    return nonce;
  }
}
