// Compact JWS (RFC 7515) verification with keys loaded once, ES256 on node:crypto and EdDSA on
// libsodium (curve25519-keys.ts): the agent's hot path cannot afford jose's async API (several
// times slower, see ANCHORS). Signing happens only at issuance and renewal, so it uses jose.
// Only asymmetric algorithms are accepted: `none` and HMAC-with-a-public-key confusion are
// refused before any key is touched.
import { verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { ed25519SignatureValid, rawKeyBytes } from './curve25519-keys.ts';
import { TokenError } from './errors.ts';

export type JwsAlgorithm = 'ES256' | 'EdDSA';
export const ALLOWED_ALGORITHMS: readonly JwsAlgorithm[] = ['ES256', 'EdDSA'];

export interface JwsHeader {
  alg: JwsAlgorithm;
  kid: string;
  typ?: string;
}

export interface DecodedJws {
  header: JwsHeader;
  payload: Record<string, unknown>;
  /** The compact form's three base64url parts, as received: only a verification reads the first two again, and the signature. */
  encoded: readonly [header: string, payload: string, signature: string];
}

/** The JWS algorithm a signing key implies (agent and CA keys are P-256 or Ed25519). */
export function algorithmOf(key: KeyObject): JwsAlgorithm {
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return 'ES256';
  if (key.asymmetricKeyType === 'ed25519') return 'EdDSA';
  throw new TypeError(`unsupported signing key type ${key.asymmetricKeyType ?? 'unknown'}`);
}

function parseJson(part: string, what: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    throw new TokenError('malformed-token', `${what} is not base64url JSON`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TokenError('malformed-token', `${what} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

/** Splits and decodes a compact JWS and checks the header; the signature is not verified yet. */
export function decodeJws(compact: string): DecodedJws {
  const parts = compact.split('.');
  if (parts.length !== 3 || parts.some((part) => !/^[A-Za-z0-9_-]*$/.test(part))) {
    throw new TokenError('malformed-token', 'not a compact JWS');
  }
  const [h, p, s] = parts as [string, string, string];
  const header = parseJson(h, 'header');
  if (typeof header.alg !== 'string' || !(ALLOWED_ALGORITHMS as readonly string[]).includes(header.alg)) {
    throw new TokenError('bad-alg', `algorithm ${String(header.alg)} is not allowed`, { alg: String(header.alg) });
  }
  if (typeof header.kid !== 'string' || header.kid === '') throw new TokenError('missing-kid', 'kid is required');
  if (header.crit !== undefined) throw new TokenError('malformed-token', 'crit header parameters are not supported');
  const payload = parseJson(p, 'payload');
  // The signing input and signature bytes are made only by a verification: a token the handshake
  // proves by its digest never needs them.
  return { header: header as unknown as JwsHeader, payload, encoded: [h, p, s] };
}

/** Refuses a header whose alg is not the one the key implies (no algorithm confusion). */
export function checkAlgorithm(jws: DecodedJws, keyAlgorithm: JwsAlgorithm): void {
  if (keyAlgorithm !== jws.header.alg) {
    throw new TokenError('bad-alg', `alg ${jws.header.alg} does not match the key`, { alg: jws.header.alg });
  }
}

/** Verifies the signature with `key`, whose type must match the header's alg. */
export function verifyJwsSignature(jws: DecodedJws, key: KeyObject): void {
  checkAlgorithm(jws, algorithmOf(key));
  const [header, payload, encodedSignature] = jws.encoded;
  const signingInput = Buffer.from(`${header}.${payload}`);
  const signature = Buffer.from(encodedSignature, 'base64url');
  // EdDSA on libsodium: a certified issuing key is Ed25519, so this is most credentials' check.
  const ok =
    jws.header.alg === 'EdDSA'
      ? ed25519SignatureValid(rawKeyBytes(key), signingInput, signature)
      : cryptoVerify('sha256', signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature);
  if (!ok) throw new TokenError('bad-signature', 'signature does not verify', { kid: jws.header.kid });
}

/** Checks exp/nbf/iat against `nowSeconds` with `leewaySeconds` of clock skew. */
export function checkTimes(payload: Record<string, unknown>, nowSeconds: number, leewaySeconds: number): void {
  const { exp, nbf, iat } = payload;
  if (typeof exp !== 'number') throw new TokenError('bad-claims', 'exp is required');
  if (exp + leewaySeconds <= nowSeconds) throw new TokenError('expired', 'token expired', { exp });
  if (typeof nbf === 'number' && nbf - leewaySeconds > nowSeconds) throw new TokenError('not-yet-valid', 'token not yet valid', { nbf });
  if (typeof iat === 'number' && iat - leewaySeconds > nowSeconds) throw new TokenError('not-yet-valid', 'token issued in the future', { iat });
}
