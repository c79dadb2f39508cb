// Agent credentials: a JWT signed by the trust domain's CA, or by an issuing key the CA certified
// (issuer-certificate.ts), that binds an agent's public signing key and key-agreement key, the
// attribute namespaces the agent may assert, and an expiry.
import { createPublicKey, randomUUID, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { SignJWT, calculateJwkThumbprint, exportJWK, type JWK } from 'jose';
import { describeFileError, SynpassError } from '../errors.ts';
import { TokenError } from './errors.ts';
import { algorithmOf, checkTimes, decodeJws, verifyJwsSignature, type DecodedJws, type JwsAlgorithm } from './jws.ts';
import type { TrustBundle } from './trust-bundle.ts';

export const CREDENTIAL_TYPE = 'synpass-agent+jwt';
const NAMESPACE_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;

export class CredentialFileError extends SynpassError<'unreadable'> {
  override readonly name = 'CredentialFileError';
}

/** A credential file's compact JWT; a missing or unreadable file is a CredentialFileError naming it. */
export function readCredentialFile(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch (error) {
    throw new CredentialFileError('unreadable', `${path}: credential ${describeFileError(error)}`, { path }, { cause: error });
  }
}

export interface VerifiedCredential {
  compact: string;
  trustDomain: string;
  /** spiffe://<domain>/agent/<id> */
  subject: string;
  /** The agent's signing key (an Ed25519 key's object is made when first asked for: a handshake never asks). */
  readonly signKey: KeyObject;
  /** The signing key's 32 raw bytes when it is Ed25519 (what the addon verifies with), else null. */
  signKeyRaw: Buffer | null;
  signAlgorithm: JwsAlgorithm;
  signKid: string;
  /** Raw X25519 public key: what the pair key's agreement takes, and what identifies the agent for pair-key caching. */
  kexRaw: Buffer;
  namespaces: ReadonlySet<string>;
  issuedAt: number;
  expiresAt: number;
  /** Unique per issuance: what a deny list names. */
  jti: string | null;
  /** What the issuer attested about the node (`node.*`), and by which attestor. */
  node: Readonly<Record<string, string>>;
  attestedBy: string | null;
}

export interface IssueCredentialInput {
  /** The CA key, or an issuing key the CA certified. */
  signerKey: KeyObject;
  signerKid: string;
  trustDomain: string;
  agentId: string;
  signPublicKey: KeyObject;
  kexPublicKey: KeyObject;
  namespaces: string[];
  ttlSeconds: number;
  nowSeconds?: number;
  /** What the issuer attested about the node (`node.*` attributes), with how it knew. */
  node?: Readonly<Record<string, string>>;
  attestedBy?: string;
  /** Default: a random UUID. */
  jti?: string;
}

export async function issueCredential(input: IssueCredentialInput): Promise<string> {
  for (const ns of input.namespaces) {
    if (!NAMESPACE_PATTERN.test(ns)) throw new RangeError(`attribute namespace "${ns}" must match ${NAMESPACE_PATTERN}`);
    if (ns === 'node' || ns === 'synpass') throw new RangeError(`attribute namespace "${ns}" is reserved (${ns}.* comes from the ${ns === 'node' ? 'issuer' : 'verifier'})`);
  }
  const sig = await exportJWK(input.signPublicKey);
  const kex = await exportJWK(input.kexPublicKey);
  const now = input.nowSeconds ?? Math.floor(Date.now() / 1000);
  return new SignJWT({
    cnf: { sig: { ...sig, kid: await calculateJwkThumbprint(sig) }, kex },
    ns: input.namespaces,
    ...(input.node === undefined ? {} : { node: input.node, att: input.attestedBy ?? 'unknown' }),
  })
    .setProtectedHeader({ alg: algorithmOf(input.signerKey), kid: input.signerKid, typ: CREDENTIAL_TYPE })
    .setJti(input.jti ?? randomUUID())
    .setIssuer(input.trustDomain)
    .setSubject(`spiffe://${input.trustDomain}/agent/${input.agentId}`)
    .setIssuedAt(now)
    .setExpirationTime(now + input.ttlSeconds)
    .sign(input.signerKey);
}

function publicKey(jwk: unknown, kty: string, crv: string): KeyObject {
  const key = jwk as JWK | undefined;
  if (key?.kty !== kty || key.crv !== crv || typeof key.x !== 'string') {
    throw new TokenError('bad-claims', `credential key must be ${kty}/${crv}`);
  }
  try {
    return createPublicKey({ key: key as import('node:crypto').JsonWebKey, format: 'jwk' });
  } catch {
    throw new TokenError('bad-claims', 'credential key is not a valid JWK');
  }
}

const RAW_CURVE25519_KEY = /^[A-Za-z0-9_-]{43}$/;

/** A Curve25519 public key's 32 raw bytes (43 base64url characters), or bad-claims. */
function rawCurve25519Key(jwk: unknown, crv: 'Ed25519' | 'X25519'): Buffer {
  const key = jwk as JWK | undefined;
  if (key?.kty !== 'OKP' || key.crv !== crv || typeof key.x !== 'string' || !RAW_CURVE25519_KEY.test(key.x)) {
    throw new TokenError('bad-claims', `credential key must be OKP/${crv}`);
  }
  return Buffer.from(key.x, 'base64url');
}

/** Verifies a credential against the trust bundles (sync, node:crypto). */
export function verifyCredential(
  compact: string,
  bundles: ReadonlyMap<string, TrustBundle>,
  nowSeconds: number,
  leewaySeconds = 30,
): VerifiedCredential {
  const jws = decodeJws(compact);
  if (jws.header.typ !== CREDENTIAL_TYPE) throw new TokenError('bad-claims', 'not an agent credential');
  const { iss, sub, cnf, ns, exp } = jws.payload;
  if (typeof iss !== 'string') throw new TokenError('bad-claims', 'iss is required');
  const bundle = bundles.get(iss);
  if (!bundle) throw new TokenError('untrusted-domain', `trust domain ${iss} is not trusted`, { domain: iss });
  verifyCredentialSignature(jws, bundle, nowSeconds, leewaySeconds);
  checkTimes(jws.payload, nowSeconds, leewaySeconds);
  if (typeof sub !== 'string' || !sub.startsWith(`spiffe://${iss}/agent/`)) {
    throw new TokenError('bad-claims', 'sub must be spiffe://<domain>/agent/<id>');
  }
  if (!Array.isArray(ns) || !ns.every((n) => typeof n === 'string' && NAMESPACE_PATTERN.test(n))) {
    throw new TokenError('bad-claims', 'ns must be a list of attribute namespaces');
  }
  const keys = (cnf ?? {}) as { sig?: JWK; kex?: JWK };
  // The handshake verifies an Ed25519 key's signatures, and makes the agreement, on raw keys
  // (the addon): importing either as a key object would cost a first contact 7-15 us a key.
  const signKeyRaw = keys.sig?.kty === 'OKP' ? rawCurve25519Key(keys.sig, 'Ed25519') : null;
  let signKey = signKeyRaw === null ? publicKey(keys.sig, 'EC', 'P-256') : null;
  const kexRaw = rawCurve25519Key(keys.kex, 'X25519');
  if (typeof keys.sig?.kid !== 'string') throw new TokenError('bad-claims', 'cnf.sig.kid is required');
  return {
    compact,
    trustDomain: iss,
    subject: sub,
    get signKey() {
      return (signKey ??= publicKey(keys.sig, 'OKP', 'Ed25519'));
    },
    signKeyRaw,
    signAlgorithm: signKeyRaw === null ? 'ES256' : 'EdDSA',
    signKid: keys.sig.kid,
    kexRaw,
    namespaces: new Set(ns as string[]),
    issuedAt: typeof jws.payload.iat === 'number' ? jws.payload.iat : (exp as number),
    expiresAt: exp as number,
    jti: typeof jws.payload.jti === 'string' ? jws.payload.jti : null,
    node: nodeFacts(jws.payload.node),
    attestedBy: typeof jws.payload.att === 'string' ? jws.payload.att : null,
  };
}

function nodeFacts(value: unknown): Record<string, string> {
  if (value === undefined) return {};
  const facts = value as Record<string, unknown> | null;
  if (typeof facts !== 'object' || facts === null || Array.isArray(facts) || !Object.entries(facts).every(([name, fact]) => name.startsWith('node.') && typeof fact === 'string')) {
    throw new TokenError('bad-claims', 'node must map node.* names to strings');
  }
  return facts as Record<string, string>;
}

/** Under a CA key, or under a certified issuing key whose certificate outlives the credential. */
function verifyCredentialSignature(jws: DecodedJws, bundle: TrustBundle, nowSeconds: number, leewaySeconds: number): void {
  const { kid } = jws.header;
  const caKey = bundle.keys.get(kid);
  if (caKey !== undefined) {
    verifyJwsSignature(jws, caKey);
    return;
  }
  const issuer = bundle.issuers.get(kid);
  if (issuer === undefined) throw new TokenError('unknown-kid', `no CA key or certified issuer ${kid} in the bundle of ${bundle.trustDomain}`, { domain: bundle.trustDomain });
  verifyJwsSignature(jws, issuer.key);
  if (issuer.expiresAt + leewaySeconds <= nowSeconds) {
    throw new TokenError('expired', `the certificate of issuer ${issuer.name} has expired`, { issuer: issuer.name });
  }
  const exp = jws.payload.exp;
  if (typeof exp === 'number' && exp > issuer.expiresAt) {
    throw new TokenError('bad-claims', `outlives the certificate of issuer ${issuer.name}`, { issuer: issuer.name });
  }
}

/** What `synpass keys inspect` prints: the claims as issued, and whether the bundles verify it. */
export interface CredentialReport {
  subject: unknown;
  trustDomain: unknown;
  signingAlgorithm: string;
  signingKeyId: unknown;
  /** `jti`: what a deny list's `credentials` names (issued credentials have one). */
  credentialId: unknown;
  /** Facts the issuer attested about the node, and how. */
  node: unknown;
  attestedBy: unknown;
  namespaces: unknown;
  issuedAt: string | null;
  expiresAt: string | null;
  verified: boolean;
  /** Why it does not verify (a TokenError code and message), when bundles were given. */
  problem: string | null;
}

function isoTime(seconds: unknown): string | null {
  return typeof seconds === 'number' ? new Date(seconds * 1000).toISOString() : null;
}

/**
 * Decodes a credential for a person to read and, given bundles, verifies it as a peer would.
 * Decoding shows the claims even of a credential that does not verify, so the report says why.
 */
export function inspectCredential(compact: string, bundles: ReadonlyMap<string, TrustBundle> | null, nowSeconds: number): CredentialReport {
  const jws = decodeJws(compact);
  const { iss, sub, cnf, ns, iat, exp, jti, node, att } = jws.payload;
  const sig = (cnf as { sig?: JWK } | undefined)?.sig;
  let verified = false;
  let problem: string | null = bundles === null ? 'no trust bundles given' : null;
  if (bundles !== null) {
    try {
      verifyCredential(compact, bundles, nowSeconds, 0);
      verified = true;
    } catch (error) {
      if (!(error instanceof TokenError)) throw error;
      problem = `${error.code}: ${error.message}`;
    }
  }
  return {
    subject: sub,
    trustDomain: iss,
    signingAlgorithm: sig?.kty === 'OKP' ? `EdDSA (${String(sig.crv)})` : sig?.kty === 'EC' ? `ES256 (${String(sig.crv)})` : 'unknown',
    signingKeyId: sig?.kid,
    credentialId: jti ?? null,
    node: node ?? null,
    attestedBy: att ?? null,
    namespaces: ns,
    issuedAt: isoTime(iat),
    expiresAt: isoTime(exp),
    verified,
    problem,
  };
}
