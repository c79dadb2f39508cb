// What the kernel fast path proves with. After a first contact, both agents derive from the pair
// key and the client workload's token signature one 128-bit SipHash key and a 32-bit id that
// names it: the key is per pair and per client workload token, so the kernel never holds the
// pair key, and a MAC under it says which workload sent the SYN. A new token (renewal) gives a
// new key and id; the old ones expire with the old token.
import { computeProof } from './proofs.ts';
import { PROOF_BYTES } from './wire.ts';

export const FAST_KEY_BYTES = PROOF_BYTES;

export interface FastKey {
  /** Names the key in the SYN's fast option: the server looks its entry up by (peer address, id, port). */
  fastId: number;
  key: Buffer;
}

/** The fast key of a pair and a client workload token, the same on both ends. Two labels keep key and id independent. */
export function deriveFastKey(pairKey: Buffer, clientTokenSignature: Uint8Array): FastKey {
  const key = computeProof(pairKey, 'fast-key', [clientTokenSignature]);
  const id = computeProof(pairKey, 'fast-id', [clientTokenSignature]);
  return { fastId: id.readUInt32BE(0), key };
}
