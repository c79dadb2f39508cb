// Offline key ceremony: create a trust domain (CA key + bundle) and issue agent credentials.
import { createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { calculateJwkThumbprint, exportJWK } from 'jose';
import { SynpassError } from '../errors.ts';
import { issueCredential } from '../token/credential.ts';
import { certifyIssuer, verifyIssuerCertificate } from '../token/issuer-certificate.ts';
import { readPrivateKey, refuseToOverwrite, writePrivateKey, writePublicFile } from './key-files.ts';
import { BUNDLE_SUFFIX, bundleDocument, parseBundle, readBundleFile, TrustBundleError, type BundleDocument } from '../token/trust-bundle.ts';
import { generateKeyPair } from './key-generation.ts';

export class IssuanceError extends SynpassError<'no-domain' | 'wrong-domain' | 'bad-public-key'> {
  override readonly name = 'IssuanceError';
}

export const CA_KEY_FILE = 'ca.key.pem';
export const SIGNING_KEY_FILE = 'sign.key.pem';
export const KEY_AGREEMENT_KEY_FILE = 'kex.key.pem';
export const CREDENTIAL_FILE = 'credential.jwt';

/** A trust domain's CA key and the bundle that trusts it, in memory. */
export interface NewTrustDomain {
  caKey: KeyObject;
  bundle: BundleDocument;
}

/**
 * A new trust domain's CA key is Ed25519 unless asked otherwise: every peer verifies the
 * credentials it signs on first contact, Ed25519 ones on libsodium in about 50 us against 80 us
 * for P-256 (docs/protocol.md, Why Ed25519 by default). Agents of every version accept both.
 */
export async function newTrustDomain(trustDomain: string, caKeyType: SigningKeyType = 'ed25519'): Promise<NewTrustDomain> {
  if (!/^[a-z0-9.-]+$/.test(trustDomain)) throw new RangeError('trust domain must be a lower-case domain name');
  const { privateKey, publicKey } = generateKeyPair(caKeyType);
  return { caKey: privateKey, bundle: await bundleDocument(trustDomain, [publicKey]) };
}

/** `overwrite`: replace an existing CA key and bundle, which invalidates every credential it issued. */
export async function initDomain(trustDomain: string, directory: string, options: { overwrite?: boolean; caKeyType?: SigningKeyType | undefined } = {}): Promise<{ bundle: string; caKey: string }> {
  const domain = await newTrustDomain(trustDomain, options.caKeyType);
  const caKey = join(directory, CA_KEY_FILE);
  const bundle = join(directory, `${trustDomain}${BUNDLE_SUFFIX}`);
  refuseToOverwrite([caKey, bundle], options.overwrite ?? false);
  writePrivateKey(caKey, domain.caKey);
  writePublicFile(bundle, `${JSON.stringify(domain.bundle, null, 2)}\n`);
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
  /** Replace keys and credential already in `outputDirectory`. */
  overwrite?: boolean;
  nowSeconds?: number;
}

function readDomainBundle(domainDirectory: string, trustDomain: string): { path: string; document: BundleDocument } {
  const path = join(domainDirectory, `${trustDomain}${BUNDLE_SUFFIX}`);
  let text: string;
  try {
    text = readBundleFile(path);
  } catch (error) {
    if (!(error instanceof TrustBundleError)) throw error;
    throw new IssuanceError('no-domain', `${error.message} (--domain-dir must be the directory \`synpass keys init-domain --domain ${trustDomain}\` wrote)`, { path }, { cause: error });
  }
  const bundle = parseBundle(text, path);
  if (bundle.trustDomain !== trustDomain) throw new IssuanceError('wrong-domain', `${path}: belongs to trust domain ${bundle.trustDomain}, not ${trustDomain}`, { path });
  return { path, document: JSON.parse(text) as BundleDocument };
}

export interface CertifyIssuerKeyInput {
  domainDirectory: string;
  trustDomain: string;
  /** Names the issuer in its certificate (spiffe://<domain>/issuer/<name>). */
  name: string;
  /** The issuing key's public JWK file, from `synpass issuer keygen`. */
  publicKeyFile: string;
  ttlSeconds: number;
  nowSeconds?: number;
}

/**
 * The CA certifies an issuing key: the certificate is added to the domain's trust bundle, which
 * then goes to every agent (and every federated domain) as before. Expired certificates leave the
 * bundle at the same time, so it stays small.
 */
export async function certifyIssuerKey(input: CertifyIssuerKeyInput): Promise<{ bundle: string; expiresAt: number }> {
  const { path, document } = readDomainBundle(input.domainDirectory, input.trustDomain);
  let issuingPublicKey;
  try {
    issuingPublicKey = createPublicKey({ key: JSON.parse(readFileSync(input.publicKeyFile, 'utf8')) as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch (error) {
    throw new IssuanceError('bad-public-key', `${input.publicKeyFile}: not a public JWK (the file \`synpass issuer keygen\` wrote)`, { path: input.publicKeyFile }, { cause: error });
  }
  const caKey = readPrivateKey(join(input.domainDirectory, CA_KEY_FILE));
  const nowSeconds = input.nowSeconds ?? Math.floor(Date.now() / 1000);
  const certificate = await certifyIssuer({
    caKey,
    caKid: await calculateJwkThumbprint(await exportJWK(createPublicKey(caKey))),
    trustDomain: input.trustDomain,
    name: input.name,
    issuingPublicKey,
    ttlSeconds: input.ttlSeconds,
    nowSeconds,
  });
  const current = parseBundle(JSON.stringify(document), path);
  const kept = (document.issuers ?? []).filter((compact) => verifyIssuerCertificate(compact, input.trustDomain, current.keys).expiresAt > nowSeconds);
  writePublicFile(path, `${JSON.stringify({ ...document, issuers: [...kept, certificate] }, null, 2)}\n`);
  return { bundle: path, expiresAt: nowSeconds + input.ttlSeconds };
}

/** What an agent holds: its credential (compact) and the private keys it certifies. */
export interface NewAgent {
  credential: string;
  signKey: KeyObject;
  kex: KeyObject;
}

/** Fresh agent keys and the credential `caKey` signs for them, in memory. */
export async function newAgent(caKey: KeyObject, input: Omit<IssueAgentInput, 'domainDirectory' | 'outputDirectory' | 'overwrite'>): Promise<NewAgent> {
  if (!/^[A-Za-z0-9._-]+$/.test(input.agentId)) throw new RangeError('agent id may hold letters, digits, ".", "_" and "-"');
  const sign = generateKeyPair(input.signingKey === 'p256' ? 'p256' : 'ed25519');
  const kex = generateKeyPair('x25519');
  const credential = await issueCredential({
    signerKey: caKey,
    signerKid: await calculateJwkThumbprint(await exportJWK(createPublicKey(caKey))),
    trustDomain: input.trustDomain,
    agentId: input.agentId,
    signPublicKey: sign.publicKey,
    kexPublicKey: kex.publicKey,
    namespaces: input.namespaces,
    ttlSeconds: input.ttlSeconds,
    ...(input.nowSeconds === undefined ? {} : { nowSeconds: input.nowSeconds }),
  });
  return { credential, signKey: sign.privateKey, kex: kex.privateKey };
}

export async function issueAgent(input: IssueAgentInput): Promise<{ credential: string }> {
  readDomainBundle(input.domainDirectory, input.trustDomain);
  const caKey = readPrivateKey(join(input.domainDirectory, CA_KEY_FILE));
  const outputs = [SIGNING_KEY_FILE, KEY_AGREEMENT_KEY_FILE, CREDENTIAL_FILE].map((name) => join(input.outputDirectory, name));
  refuseToOverwrite(outputs, input.overwrite ?? false);
  const agent = await newAgent(caKey, input);
  writePrivateKey(join(input.outputDirectory, SIGNING_KEY_FILE), agent.signKey);
  writePrivateKey(join(input.outputDirectory, KEY_AGREEMENT_KEY_FILE), agent.kex);
  const credentialPath = join(input.outputDirectory, CREDENTIAL_FILE);
  writeFileSync(credentialPath, `${agent.credential}\n`, { mode: 0o644 });
  return { credential: credentialPath };
}
