// Trust bundles: one JWKS file per trust domain, holding the CA keys that sign agent
// credentials there. An agent trusts exactly the domains whose bundles it is given, so two
// clusters federate by exchanging bundle files. Keys without kid, without use "sig", or of an
// algorithm outside the allow-list are ignored (SPIFFE JWT-SVID validation rules). A bundle may
// also list issuer certificates: issuing keys the CA certified (issuer-certificate.ts); one that
// no CA key of the bundle verifies makes the whole file malformed, never silently ignored.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { describeFileError, SynpassError } from '../errors.ts';
import { TokenError } from './errors.ts';
import { verifyIssuerCertificate, type CertifiedIssuer } from './issuer-certificate.ts';
import { algorithmOf, ALLOWED_ALGORITHMS } from './jws.ts';

export const BUNDLE_SUFFIX = '.jwks.json';

export interface TrustBundle {
  trustDomain: string;
  /** CA keys by kid. */
  keys: Map<string, KeyObject>;
  /** Certified issuing keys by kid. */
  issuers: Map<string, CertifiedIssuer>;
}

export type TrustBundleErrorCode = 'unreadable' | 'malformed' | 'no-usable-key';

export class TrustBundleError extends SynpassError<TrustBundleErrorCode> {
  override readonly name = 'TrustBundleError';
  constructor(
    problem: string,
    readonly path: string,
    code: TrustBundleErrorCode = 'malformed',
  ) {
    super(code, `${path}: ${problem}`, { path });
  }
}

export interface BundleDocument {
  trust_domain: string;
  keys: JWK[];
  /** Issuer certificates (compact JWTs signed by one of `keys`). */
  issuers?: string[];
}

/** The bundle of `caKeys` (public; each P-256 or Ed25519, its `alg` named after it). */
export async function bundleDocument(trustDomain: string, caKeys: KeyObject[]): Promise<BundleDocument> {
  const keys = await Promise.all(
    caKeys.map(async (key) => {
      const jwk = await exportJWK(key);
      return { ...jwk, kid: await calculateJwkThumbprint(jwk), use: 'sig', alg: algorithmOf(key) };
    }),
  );
  return { trust_domain: trustDomain, keys };
}

export function parseBundle(text: string, path: string): TrustBundle {
  let document: unknown;
  try {
    document = JSON.parse(text);
  } catch {
    throw new TrustBundleError('not JSON', path);
  }
  const { trust_domain: trustDomain, keys, issuers: certificates = [] } = (document ?? {}) as Partial<BundleDocument>;
  if (typeof trustDomain !== 'string' || !/^[a-z0-9._-]+$/.test(trustDomain)) {
    throw new TrustBundleError('trust_domain must be a lower-case domain name', path);
  }
  if (!Array.isArray(keys)) throw new TrustBundleError('keys must be an array', path);
  const usable = new Map<string, KeyObject>();
  for (const jwk of keys) {
    if (typeof jwk.kid !== 'string' || jwk.use !== 'sig') continue;
    if (typeof jwk.alg !== 'string' || !(ALLOWED_ALGORITHMS as readonly string[]).includes(jwk.alg)) continue;
    try {
      usable.set(jwk.kid, createPublicKey({ key: jwk as import('node:crypto').JsonWebKey, format: 'jwk' }));
    } catch {
      throw new TrustBundleError(`key ${jwk.kid} is not a valid public JWK`, path);
    }
  }
  if (usable.size === 0) throw new TrustBundleError('no usable signing key (kid, use "sig", ES256/EdDSA)', path, 'no-usable-key');
  if (!Array.isArray(certificates)) throw new TrustBundleError('issuers must be an array of issuer certificates', path);
  const issuers = new Map<string, CertifiedIssuer>();
  certificates.forEach((certificate: unknown, index) => {
    try {
      if (typeof certificate !== 'string') throw new TokenError('malformed-token', 'not a string');
      const issuer = verifyIssuerCertificate(certificate, trustDomain, usable);
      issuers.set(issuer.kid, issuer);
    } catch (error) {
      if (!(error instanceof TokenError)) throw error;
      throw new TrustBundleError(`issuers[${index}]: ${error.message}`, path);
    }
  });
  return { trustDomain, keys: usable, issuers };
}

/** Loads every `*.jwks.json` in `directory`, keyed by trust domain. */
export function loadTrustBundles(directory: string): Map<string, TrustBundle> {
  const bundles = new Map<string, TrustBundle>();
  let names: string[];
  try {
    names = readdirSync(directory).sort();
  } catch (error) {
    throw new TrustBundleError(`trust-bundle directory ${describeFileError(error)}`, directory, 'unreadable');
  }
  for (const name of names) {
    if (!name.endsWith(BUNDLE_SUFFIX)) continue;
    const path = join(directory, name);
    const bundle = parseBundle(readBundleFile(path), path);
    const existing = bundles.get(bundle.trustDomain);
    if (existing) {
      for (const [kid, key] of bundle.keys) existing.keys.set(kid, key);
      for (const [kid, issuer] of bundle.issuers) existing.issuers.set(kid, issuer);
    } else bundles.set(bundle.trustDomain, bundle);
  }
  return bundles;
}

/** A bundle file's text; a missing or unreadable file is a TrustBundleError naming it. */
export function readBundleFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (error) {
    throw new TrustBundleError(`trust bundle ${describeFileError(error)}`, path, 'unreadable');
  }
}
