// What the SYN signature and the pair-key proofs bind of the token travelling with them: the
// SHA-256 of its bytes as carried. A peer that checks the signature or proof over this digest
// knows the sending agent sent exactly these bytes, so it need not verify the token's own JWS
// signature (one asymmetric verification fewer per side on first contact).
import { createHash } from 'node:crypto';
import type { PackedJws } from './wire.ts';

export const TOKEN_DIGEST_BYTES = 32;

/** Per token object: an agent's own tokens are hashed once, not once per SYN. */
const digests = new WeakMap<PackedJws, Buffer>();

export function tokenDigest(token: PackedJws): Buffer {
  let digest = digests.get(token);
  if (digest === undefined) {
    digest = createHash('sha256').update(token.bytes).digest();
    digests.set(token, digest);
  }
  return digest;
}
