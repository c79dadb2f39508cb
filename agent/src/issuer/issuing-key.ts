// The issuing key: made on the issuer's host (its private half stays there); its public half goes
// to the offline CA, which certifies it into the trust bundle (`synpass keys certify-issuer`).
// At start the issuer finds its certificate in the bundle, or refuses to run.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { SynpassError } from '../errors.ts';
import { readPrivateKey, refuseToOverwrite, writePrivateKey, writePublicFile } from '../identity/key-files.ts';
import type { CertifiedIssuer } from '../token/issuer-certificate.ts';
import type { TrustBundle } from '../token/trust-bundle.ts';
import { generateKeyPair } from '../identity/key-generation.ts';

export const ISSUING_KEY_FILE = 'issuing.key.pem';
export const ISSUING_PUBLIC_KEY_FILE = 'issuing.pub.jwk.json';

export class IssuingKeyError extends SynpassError<'uncertified-issuing-key' | 'issuer-certificate-expired' | 'no-domain'> {
  override readonly name = 'IssuingKeyError';
}

/** Writes a new Ed25519 issuing key and its public JWK (for the CA); refuses to replace one. */
export async function createIssuingKey(directory: string, overwrite = false): Promise<{ key: string; publicKey: string }> {
  const key = join(directory, ISSUING_KEY_FILE);
  const publicKey = join(directory, ISSUING_PUBLIC_KEY_FILE);
  refuseToOverwrite([key, publicKey], overwrite);
  const pair = generateKeyPair('ed25519');
  writePrivateKey(key, pair.privateKey);
  writePublicFile(publicKey, `${JSON.stringify(await exportJWK(pair.publicKey))}\n`);
  return { key, publicKey };
}

/** The issuing key and the certificate the trust bundle of `trustDomain` holds for it. */
export async function loadCertifiedIssuingKey(
  keyPath: string,
  trustDomain: string,
  bundles: ReadonlyMap<string, TrustBundle>,
  nowSeconds: number,
): Promise<{ key: KeyObject; certificate: CertifiedIssuer }> {
  const key = readPrivateKey(keyPath);
  const kid = await calculateJwkThumbprint(await exportJWK(createPublicKey(key)));
  const bundle = bundles.get(trustDomain);
  if (bundle === undefined) throw new IssuingKeyError('no-domain', `no trust bundle for ${trustDomain}`, { trustDomain });
  const certificate = bundle.issuers.get(kid);
  if (certificate === undefined) {
    throw new IssuingKeyError('uncertified-issuing-key', `${keyPath}: the trust bundle of ${trustDomain} holds no CA certificate for this issuing key (kid ${kid}); certify it with \`synpass keys certify-issuer\``, { kid, trustDomain });
  }
  if (certificate.expiresAt <= nowSeconds) {
    throw new IssuingKeyError('issuer-certificate-expired', `the certificate of issuing key ${certificate.name} expired at ${new Date(certificate.expiresAt * 1000).toISOString()}`, { kid, trustDomain });
  }
  return { key, certificate };
}
