// Workload identity tokens: a JWT the agent signs with its own key (jose, at renewal time) and
// peers check against the agent's credential: in the handshake the message's signature or proof
// covers the token's digest, so peers read its claims and need not verify its own signature.
import { randomUUID, type KeyObject } from 'node:crypto';
import { SignJWT } from 'jose';
import type { VerifiedCredential } from './credential.ts';
import { TokenError } from './errors.ts';
import { algorithmOf, checkAlgorithm, checkTimes, decodeJws, verifyJwsSignature, type DecodedJws } from './jws.ts';

export const IDENTITY_TOKEN_TYPE = 'synpass-id+jwt';

/** An attribute value and the attestor that vouched for it. */
export interface Attribute {
  value: string;
  attestor: string;
}

export interface VerifiedIdentity {
  trustDomain: string;
  subject: string;
  attributes: Readonly<Record<string, string>>;
  provenance: Readonly<Record<string, string>>;
  /** The agent that signed the token (its credential subject). */
  agent: string;
  expiresAt: number;
}

export interface IssueTokenInput {
  signKey: KeyObject;
  credential: VerifiedCredential;
  subject: string;
  attributes: ReadonlyMap<string, Attribute>;
  ttlSeconds: number;
  nowSeconds: number;
}

export function namespaceOf(attribute: string): string {
  const dot = attribute.indexOf('.');
  return dot < 0 ? attribute : attribute.slice(0, dot);
}

export async function issueIdentityToken(input: IssueTokenInput): Promise<string> {
  // prov lists, per attestor, the attributes it vouched for: shorter than a second map of names.
  const attrs: Record<string, string> = {};
  const prov: Record<string, string[]> = {};
  for (const [name, attribute] of [...input.attributes].sort(([a], [b]) => a.localeCompare(b))) {
    attrs[name] = attribute.value;
    (prov[attribute.attestor] ??= []).push(name);
  }
  return new SignJWT({ attrs, prov })
    .setProtectedHeader({ alg: algorithmOf(input.signKey), kid: input.credential.signKid, typ: IDENTITY_TOKEN_TYPE })
    .setIssuer(input.credential.trustDomain)
    .setSubject(input.subject)
    .setIssuedAt(input.nowSeconds)
    .setExpirationTime(input.nowSeconds + input.ttlSeconds)
    .setJti(randomUUID())
    .sign(input.signKey);
}

function stringRecord(value: unknown, what: string): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TokenError('bad-claims', `${what} must be an object`);
  for (const entry of Object.values(value)) {
    if (typeof entry !== 'string') throw new TokenError('bad-claims', `${what} values must be strings`);
  }
  return value as Record<string, string>;
}

function provenanceOf(value: unknown, attributes: Record<string, string>): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new TokenError('bad-claims', 'prov must be an object');
  const provenance: Record<string, string> = {};
  for (const [attestor, names] of Object.entries(value)) {
    if (!Array.isArray(names)) throw new TokenError('bad-claims', 'prov values must be lists of attribute names');
    for (const name of names) {
      if (typeof name !== 'string' || !(name in attributes)) throw new TokenError('bad-claims', 'prov names an unknown attribute');
      provenance[name] = attestor;
    }
  }
  return provenance;
}

/** Verifies a token against the credential that came with it (sync): its signature and its claims. */
export function verifyIdentityToken(compact: string, credential: VerifiedCredential, nowSeconds: number, leewaySeconds = 30): VerifiedIdentity {
  return identityOf(compact, credential, nowSeconds, leewaySeconds, true);
}

/**
 * Reads a token's claims against its credential without checking the token's own signature.
 * Only for a token whose exact bytes something else proves the credential's agent sent: the
 * handshake's SYN signature or pair-key proof, which cover the token's digest. Until that proof
 * is checked, the identity returned is a claim, not a fact.
 */
export function readIdentityToken(compact: string, credential: VerifiedCredential, nowSeconds: number, leewaySeconds = 30): VerifiedIdentity {
  return identityOf(compact, credential, nowSeconds, leewaySeconds, false);
}

function identityOf(compact: string, credential: VerifiedCredential, nowSeconds: number, leewaySeconds: number, verifySignature: boolean): VerifiedIdentity {
  const jws = decodeJws(compact);
  if (jws.header.typ !== IDENTITY_TOKEN_TYPE) throw new TokenError('bad-claims', 'not an identity token');
  if (jws.header.kid !== credential.signKid) {
    throw new TokenError('unknown-kid', 'token was not signed by the key its credential binds', { kid: jws.header.kid });
  }
  if (verifySignature) verifyJwsSignature(jws, credential.signKey);
  else checkAlgorithm(jws, credential.signAlgorithm);
  return identityFromClaims(jws, credential, nowSeconds, leewaySeconds);
}

/** Who vouched for the credential's `node.*` attributes: the issuer, by its attestor. */
export function nodeProvenance(credential: VerifiedCredential): Record<string, string> {
  return Object.fromEntries(Object.keys(credential.node).map((name) => [name, `issuer (${credential.attestedBy ?? 'unknown'})`]));
}

function identityFromClaims(jws: DecodedJws, credential: VerifiedCredential, nowSeconds: number, leewaySeconds: number): VerifiedIdentity {
  checkTimes(jws.payload, nowSeconds, leewaySeconds);
  const { iss, sub, attrs, prov, jti, exp } = jws.payload;
  if (iss !== credential.trustDomain) throw new TokenError('bad-claims', 'token issuer differs from the credential domain');
  if (typeof sub !== 'string' || !sub.startsWith(`spiffe://${credential.trustDomain}/`)) {
    throw new TokenError('bad-claims', 'sub must be a spiffe:// URI in the credential domain');
  }
  if (typeof jti !== 'string') throw new TokenError('bad-claims', 'jti is required');
  const attributes = stringRecord(attrs, 'attrs');
  const provenance = provenanceOf(prov, attributes);
  for (const name of Object.keys(attributes)) {
    // node.* is what the issuer attested about the agent's node: only the credential says it.
    if (namespaceOf(name) === 'node') throw new TokenError('namespace-not-allowed', `attribute ${name}: node.* comes from the credential only`, { attribute: name });
    if (!credential.namespaces.has(namespaceOf(name))) {
      throw new TokenError('namespace-not-allowed', `attribute ${name} is outside the agent's namespaces`, { attribute: name });
    }
  }
  return {
    trustDomain: credential.trustDomain,
    subject: sub,
    // The synpass.* namespace is never taken from the token's claims: only from what was verified.
    attributes: { ...attributes, ...credential.node, 'synpass.trust-domain': credential.trustDomain, 'synpass.subject': sub, 'synpass.agent': credential.subject },
    provenance: { ...provenance, ...nodeProvenance(credential) },
    agent: credential.subject,
    expiresAt: Math.min(exp as number, credential.expiresAt),
  };
}
