// Issuer certificates: a JWT by which the offline CA of a trust domain certifies an issuing key,
// for a bounded time. The certificates ride in the trust bundle next to the CA keys, so a peer
// verifies an issued credential with one signature check, as with a CA-signed one, and a
// credential on the wire carries no chain (a SYN has no room for one).
import { createPublicKey, type KeyObject } from 'node:crypto';
import { SignJWT, calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { TokenError } from './errors.ts';
import { algorithmOf, decodeJws, verifyJwsSignature } from './jws.ts';

export const ISSUER_CERTIFICATE_TYPE = 'synpass-issuer+jwt';
const ISSUER_NAME_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

export interface CertifiedIssuer {
  name: string;
  /** Thumbprint of the issuing key: the `kid` of the credentials it signs. */
  kid: string;
  key: KeyObject;
  expiresAt: number;
}

export interface CertifyIssuerInput {
  caKey: KeyObject;
  caKid: string;
  trustDomain: string;
  name: string;
  issuingPublicKey: KeyObject;
  ttlSeconds: number;
  nowSeconds?: number;
}

export async function certifyIssuer(input: CertifyIssuerInput): Promise<string> {
  if (!ISSUER_NAME_PATTERN.test(input.name)) throw new RangeError('issuer name may hold letters, digits, ".", "_" and "-" (at most 64)');
  algorithmOf(input.issuingPublicKey);
  const jwk = await exportJWK(input.issuingPublicKey);
  const now = input.nowSeconds ?? Math.floor(Date.now() / 1000);
  return new SignJWT({ cnf: { jwk: { ...jwk, kid: await calculateJwkThumbprint(jwk) } } })
    .setProtectedHeader({ alg: algorithmOf(input.caKey), kid: input.caKid, typ: ISSUER_CERTIFICATE_TYPE })
    .setIssuer(input.trustDomain)
    .setSubject(`spiffe://${input.trustDomain}/issuer/${input.name}`)
    .setIssuedAt(now)
    .setExpirationTime(now + input.ttlSeconds)
    .sign(input.caKey);
}

/**
 * Verifies a certificate under the CA keys of `trustDomain`'s bundle. Its expiry is returned,
 * not checked: a bundle keeps an expired certificate so that its credentials are refused as
 * expired rather than as unknown.
 */
export function verifyIssuerCertificate(compact: string, trustDomain: string, caKeys: ReadonlyMap<string, KeyObject>): CertifiedIssuer {
  const jws = decodeJws(compact);
  if (jws.header.typ !== ISSUER_CERTIFICATE_TYPE) throw new TokenError('bad-claims', 'not an issuer certificate');
  const caKey = caKeys.get(jws.header.kid);
  if (caKey === undefined) throw new TokenError('unknown-kid', `not signed by a CA key of ${trustDomain} (kid ${jws.header.kid})`);
  verifyJwsSignature(jws, caKey);
  const { iss, sub, cnf, exp } = jws.payload;
  if (typeof exp !== 'number') throw new TokenError('bad-claims', 'exp is required');
  if (iss !== trustDomain) throw new TokenError('bad-claims', `issued for trust domain ${String(iss)}, not ${trustDomain}`);
  const prefix = `spiffe://${trustDomain}/issuer/`;
  const name = typeof sub === 'string' && sub.startsWith(prefix) ? sub.slice(prefix.length) : '';
  if (!ISSUER_NAME_PATTERN.test(name)) throw new TokenError('bad-claims', `sub must be ${prefix}<name>`);
  const jwk = (cnf as { jwk?: JWK } | undefined)?.jwk;
  if (typeof jwk?.kid !== 'string') throw new TokenError('bad-claims', 'cnf.jwk with a kid is required');
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' });
    algorithmOf(key);
  } catch {
    throw new TokenError('bad-claims', 'cnf.jwk is not an ES256 or EdDSA public key');
  }
  return { name, kid: jwk.kid, key, expiresAt: exp };
}
