// A credential request: what an agent sends the issuer. It is a JWS signed by the agent's new
// signing key, whose public half rides in the header (proof of possession: only the holder of
// that key could have made the request), and it carries the key-agreement key and one
// attestation of who the agent is:
//   credential       the agent's current credential, with a proof signed by its current key that
//                    it asks for the new key (renewal: the new key inherits the old identity);
//   anything else    evidence for a node attestor (attestors/): join-token {token},
//                    kubernetes {token}, cloud-document {document, signature}.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { SynpassError } from '../errors.ts';
import { TokenError } from '../token/errors.ts';
import { algorithmOf, decodeJws, verifyJwsSignature } from '../token/jws.ts';
import { hasSmallOrder } from '../protocol/proofs.ts';

export const REQUEST_TYPE = 'synpass-credential-request+jwt';
export const RENEWAL_PROOF_TYPE = 'synpass-renewal+jwt';
/** How far a request's time may be from the issuer's clock. */
export const REQUEST_SKEW_SECONDS = 120;

export type Attestation =
  | { type: 'credential'; credential: string; proof: string }
  | ({ type: 'join-token' | 'kubernetes' | 'cloud-document' } & Record<string, string>);

export type RequestErrorCode = 'bad-request' | 'bad-proof' | 'stale-request';

export class CredentialRequestError extends SynpassError<RequestErrorCode> {
  override readonly name = 'CredentialRequestError';
}

export interface CredentialRequest {
  signKey: KeyObject;
  kexKey: KeyObject;
  /** RFC 7638 thumbprint of the new signing key. */
  thumbprint: string;
  attestation: Attestation;
}

export async function buildCredentialRequest(input: {
  signKey: KeyObject;
  kexPublicKey: KeyObject;
  attestation: Attestation;
  nowSeconds: number;
}): Promise<string> {
  const jwk = await exportJWK(createPublicKey(input.signKey));
  return new SignJWT({ kex: await exportJWK(input.kexPublicKey), attestation: input.attestation })
    .setProtectedHeader({ alg: algorithmOf(input.signKey), kid: await calculateJwkThumbprint(jwk), typ: REQUEST_TYPE, jwk })
    .setIssuedAt(input.nowSeconds)
    .sign(input.signKey);
}

/** The renewal proof: the current key says "this new key is me". */
export async function buildRenewalProof(currentSignKey: KeyObject, currentKid: string, newThumbprint: string, nowSeconds: number): Promise<string> {
  return new SignJWT({ cnf: newThumbprint })
    .setProtectedHeader({ alg: algorithmOf(currentSignKey), kid: currentKid, typ: RENEWAL_PROOF_TYPE })
    .setIssuedAt(nowSeconds)
    .sign(currentSignKey);
}

function publicKey(jwk: unknown, what: string): KeyObject {
  try {
    return createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch {
    throw new CredentialRequestError('bad-request', `${what} is not a public JWK`);
  }
}

const EVIDENCE_TYPES = new Set(['join-token', 'kubernetes', 'cloud-document']);

/** The attestation's shape only: each node attestor checks its own evidence fields. */
function attestationOf(value: unknown): Attestation {
  const attestation = value as Partial<Record<string, unknown>> | null;
  if (attestation?.type === 'credential' && typeof attestation.credential === 'string' && typeof attestation.proof === 'string') {
    return { type: 'credential', credential: attestation.credential, proof: attestation.proof };
  }
  if (typeof attestation?.type === 'string' && EVIDENCE_TYPES.has(attestation.type) && Object.values(attestation).every((field) => typeof field === 'string')) {
    return attestation as Attestation;
  }
  throw new CredentialRequestError('bad-request', `attestation must be one of credential, ${[...EVIDENCE_TYPES].join(', ')}, with string fields`);
}

/** Decodes a request and checks its proof of possession and its time. */
export async function readCredentialRequest(compact: string, nowSeconds: number): Promise<CredentialRequest> {
  let jws;
  try {
    jws = decodeJws(compact);
  } catch (error) {
    if (error instanceof TokenError) throw new CredentialRequestError('bad-request', `request: ${error.message}`, {}, { cause: error });
    throw error;
  }
  const header = jws.header as typeof jws.header & { jwk?: JWK };
  if (header.typ !== REQUEST_TYPE) throw new CredentialRequestError('bad-request', 'not a credential request');
  const signKey = publicKey(header.jwk, 'header jwk');
  if (header.jwk?.kty === 'OKP' ? header.jwk.crv !== 'Ed25519' : header.jwk?.crv !== 'P-256') {
    throw new CredentialRequestError('bad-request', 'the signing key must be Ed25519 or P-256');
  }
  const thumbprint = await calculateJwkThumbprint(header.jwk!);
  if (header.kid !== thumbprint) throw new CredentialRequestError('bad-request', 'kid is not the thumbprint of the header jwk');
  try {
    verifyJwsSignature(jws, signKey);
  } catch (error) {
    if (error instanceof TokenError) throw new CredentialRequestError('bad-proof', 'the request is not signed by the key it asks a credential for', {}, { cause: error });
    throw error;
  }
  const { iat, kex } = jws.payload;
  if (typeof iat !== 'number' || Math.abs(iat - nowSeconds) > REQUEST_SKEW_SECONDS) {
    throw new CredentialRequestError('stale-request', `request time is more than ${REQUEST_SKEW_SECONDS} s from the issuer's clock`);
  }
  const kexJwk = kex as JWK | undefined;
  if (kexJwk?.kty !== 'OKP' || kexJwk.crv !== 'X25519') throw new CredentialRequestError('bad-request', 'kex must be an X25519 public JWK');
  const kexKey = publicKey(kexJwk, 'kex');
  if (hasSmallOrder(Buffer.from(kexJwk.x!, 'base64url'))) {
    // Peers refuse such a credential (bad-claims): its pair keys would all be public.
    throw new CredentialRequestError('bad-request', 'kex has small order: no pair key could be secret');
  }
  return { signKey, kexKey, thumbprint, attestation: attestationOf(jws.payload.attestation) };
}

/** Checks that `proof` is signed by `currentKey` and names `thumbprint`, within the skew. */
export function checkRenewalProof(proof: string, currentKey: KeyObject, thumbprint: string, nowSeconds: number): void {
  try {
    const jws = decodeJws(proof);
    if (jws.header.typ !== RENEWAL_PROOF_TYPE) throw new CredentialRequestError('bad-proof', 'not a renewal proof');
    verifyJwsSignature(jws, currentKey);
    const { cnf, iat } = jws.payload;
    if (cnf !== thumbprint) throw new CredentialRequestError('bad-proof', 'the renewal proof names another key');
    if (typeof iat !== 'number' || Math.abs(iat - nowSeconds) > REQUEST_SKEW_SECONDS) throw new CredentialRequestError('stale-request', 'renewal proof time is out of range');
  } catch (error) {
    if (error instanceof TokenError) throw new CredentialRequestError('bad-proof', `renewal proof: ${error.message}`, {}, { cause: error });
    throw error;
  }
}
