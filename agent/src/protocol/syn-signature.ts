// The SYN signature: on first contact the client has no pair key with the server, so its agent
// signs the SYN's nonce and time with its credential key. Without it, a credential and token
// captured from any SYN would let an observer build a fresh SYN that the server answers with a
// SYN-ACK, making the service visible to it. The signature also binds the token it travels
// with (its digest), so a captured signature cannot lend its freshness to another workload's
// token, and the server need not verify the token's own signature. Addresses
// and ports are left out on purpose: NAT between the agents rewrites them.
import { sign, verify, type KeyObject } from 'node:crypto';
import type { VerifiedCredential } from '../token/credential.ts';
import { ed25519Sign, ed25519SignatureValid } from '../token/curve25519-keys.ts';
import { algorithmOf } from '../token/jws.ts';
import { TOKEN_DIGEST_BYTES } from './token-digest.ts';
import { NONCE_BYTES, SYN_SIGNATURE_BYTES } from './wire.ts';

const LABEL = Buffer.from('synpass syn signature v2');
const signed = Buffer.alloc(LABEL.length + NONCE_BYTES + 4 + TOKEN_DIGEST_BYTES);
LABEL.copy(signed);

function signedBytes(nonce: Uint8Array, time: number, tokenDigest: Uint8Array): Buffer {
  if (nonce.length !== NONCE_BYTES || tokenDigest.length !== TOKEN_DIGEST_BYTES) throw new RangeError('SYN signature input out of range');
  let offset = LABEL.length;
  signed.set(nonce, offset);
  offset = signed.writeUInt32BE(time >>> 0, offset + NONCE_BYTES);
  signed.set(tokenDigest, offset);
  return signed;
}

function digestOf(key: KeyObject): 'sha256' | null {
  return algorithmOf(key) === 'ES256' ? 'sha256' : null;
}

/** The agent's signature over a SYN's nonce, time and token digest; an Ed25519 key signs on libsodium. */
export function signSyn(agentKey: KeyObject, nonce: Uint8Array, time: number, tokenDigest: Uint8Array): Buffer {
  const signed = signedBytes(nonce, time, tokenDigest);
  const signature = agentKey.asymmetricKeyType === 'ed25519' ? ed25519Sign(agentKey, signed) : sign(digestOf(agentKey), signed, { key: agentKey, dsaEncoding: 'ieee-p1363' });
  if (signature.length !== SYN_SIGNATURE_BYTES) throw new RangeError(`agent key gives ${signature.length}-byte signatures`);
  return signature;
}

/** Whether the credential's agent key made `signature`. An Ed25519 key's raw bytes go to libsodium. */
export function synSignatureValid(
  agent: Pick<VerifiedCredential, 'signKey' | 'signKeyRaw'>,
  nonce: Uint8Array,
  time: number,
  tokenDigest: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== SYN_SIGNATURE_BYTES) return false;
  const signed = signedBytes(nonce, time, tokenDigest);
  if (agent.signKeyRaw !== null) return ed25519SignatureValid(agent.signKeyRaw, signed, signature);
  return verify(digestOf(agent.signKey), signed, { key: agent.signKey, dsaEncoding: 'ieee-p1363' }, signature);
}
