// Offline key ceremony: create a trust domain (CA key + bundle) and issue agent credentials.
import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { issueCredential } from './credential.ts';
import { readPrivateKey, writePrivateKey, writePublicFile } from './key-files.ts';
import { BUNDLE_SUFFIX, bundleDocument, type BundleDocument } from './trust-bundle.ts';

export const CA_KEY_FILE = 'ca.key.pem';
export const SIGNING_KEY_FILE = 'sign.key.pem';
export const KEY_AGREEMENT_KEY_FILE = 'kex.key.pem';
export const CREDENTIAL_FILE = 'credential.jwt';

export async function initDomain(trustDomain: string, directory: string): Promise<{ bundle: string; caKey: string }> {
  if (!/^[a-z0-9.-]+$/.test(trustDomain)) throw new RangeError('trust domain must be a lower-case domain name');
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const caKey = join(directory, CA_KEY_FILE);
  writePrivateKey(caKey, privateKey);
  const document = await bundleDocument(trustDomain, [await exportJWK(createPublicKey(privateKey))]);
  const bundle = join(directory, `${trustDomain}${BUNDLE_SUFFIX}`);
  writePublicFile(bundle, `${JSON.stringify(document, null, 2)}\n`);
  return { bundle, caKey };
}

/**
 * The agent's signing key: it signs workload tokens and first-contact SYNs, and peers import it
 * from the credential on first contact. Ed25519 imports in about a tenth of P-256's time (which
 * checks the point with a scalar multiplication): a first contact costs the two agents 0.2 ms
 * or more less CPU. P-256 stays available where policy requires it. Peers accept both.
 */
export type SigningKeyType = 'ed25519' | 'p256';
export const SIGNING_KEY_TYPES: readonly SigningKeyType[] = ['ed25519', 'p256'];

export interface IssueAgentInput {
  domainDirectory: string;
  trustDomain: string;
  agentId: string;
  namespaces: string[];
  ttlSeconds: number;
  outputDirectory: string;
  /** Default ed25519. */
  signingKey?: SigningKeyType;
  nowSeconds?: number;
}

export async function issueAgent(input: IssueAgentInput): Promise<{ credential: string }> {
  if (!/^[A-Za-z0-9._-]+$/.test(input.agentId)) throw new RangeError('agent id may hold letters, digits, ".", "_" and "-"');
  const caKey = readPrivateKey(join(input.domainDirectory, CA_KEY_FILE));
  const caKid = await calculateJwkThumbprint(await exportJWK(createPublicKey(caKey)));
  const bundlePath = join(input.domainDirectory, `${input.trustDomain}${BUNDLE_SUFFIX}`);
  const bundle = JSON.parse(readFileSync(bundlePath, 'utf8')) as BundleDocument;
  if (bundle.trust_domain !== input.trustDomain) throw new RangeError(`${bundlePath} belongs to ${bundle.trust_domain}`);
  const sign = input.signingKey === 'p256' ? generateKeyPairSync('ec', { namedCurve: 'P-256' }) : generateKeyPairSync('ed25519');
  const kex = generateKeyPairSync('x25519');
  const credential = await issueCredential({
    caKey,
    caKid,
    trustDomain: input.trustDomain,
    agentId: input.agentId,
    signPublicKey: sign.publicKey,
    kexPublicKey: kex.publicKey,
    namespaces: input.namespaces,
    ttlSeconds: input.ttlSeconds,
    ...(input.nowSeconds === undefined ? {} : { nowSeconds: input.nowSeconds }),
  });
  writePrivateKey(join(input.outputDirectory, SIGNING_KEY_FILE), sign.privateKey);
  writePrivateKey(join(input.outputDirectory, KEY_AGREEMENT_KEY_FILE), kex.privateKey);
  const credentialPath = join(input.outputDirectory, CREDENTIAL_FILE);
  writeFileSync(credentialPath, `${credential}\n`, { mode: 0o644 });
  return { credential: credentialPath };
}
