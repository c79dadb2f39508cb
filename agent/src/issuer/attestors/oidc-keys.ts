// Where the Kubernetes attestor finds the service-account issuer's public keys, offline: a JWKS
// file (`kubectl get --raw /openid/v1/jwks`), or OIDC discovery against the cluster's issuer
// URL, as cloud workload-identity federation does. jose's remote key set caches the keys,
// refetches on an unknown kid and holds a cooldown, so a flood of forged kids costs no fetches.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { SynpassError } from '../../errors.ts';

const FETCH_TIMEOUT_MS = 5_000;
const MAX_DOCUMENT_BYTES = 1 << 20;

export class OidcKeysError extends SynpassError<'unreachable' | 'malformed' | 'insecure'> {
  override readonly name = 'OidcKeysError';
}

/** Plain http only on loopback (a test server); key material otherwise comes over TLS. */
export function checkedUrl(text: string): URL {
  const url = new URL(text);
  const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new OidcKeysError('insecure', `${text}: keys are fetched over https (http only on loopback)`);
  }
  return url;
}

/** How to reach the issuer's keys: its TLS CA, and a bearer token where the API server asks for one. */
export interface DiscoveryAccess {
  ca: Buffer | null;
  /** Read at each fetch (kubelet rotates projected tokens). */
  bearerTokenFile: string | null;
}

/** GET with the cluster's CA; a Response, as jose's customFetch expects. */
function get(url: URL, access: DiscoveryAccess): Promise<Response> {
  const headers = access.bearerTokenFile === null ? {} : { authorization: `Bearer ${readFileSync(access.bearerTokenFile, 'utf8').trim()}` };
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method: 'GET', timeout: FETCH_TIMEOUT_MS, headers, ...(access.ca === null ? {} : { ca: access.ca }) }, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_DOCUMENT_BYTES) request.destroy(new Error(`over ${MAX_DOCUMENT_BYTES} bytes`));
        else chunks.push(chunk);
      });
      response.on('end', () => { resolve(new Response(Buffer.concat(chunks), { status: response.statusCode ?? 500, headers: { 'content-type': 'application/json' } })); });
    });
    request.on('timeout', () => { request.destroy(new Error(`no answer within ${FETCH_TIMEOUT_MS} ms`)); });
    request.on('error', reject);
    request.end();
  });
}

export function fileKeys(path: string): JWTVerifyGetKey {
  try {
    return createLocalJWKSet(JSON.parse(readFileSync(path, 'utf8')) as JSONWebKeySet);
  } catch (error) {
    throw new OidcKeysError('malformed', `${path}: not a JWKS document`, { path }, { cause: error });
  }
}

/** Reads `<issuer>/.well-known/openid-configuration` once, then serves its jwks_uri's keys. */
export async function discoveredKeys(issuer: string, access: DiscoveryAccess): Promise<JWTVerifyGetKey> {
  const discovery = new URL(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  checkedUrl(discovery.href);
  let jwksUri: unknown;
  try {
    const response = await get(discovery, access);
    jwksUri = ((await response.json()) as { jwks_uri?: unknown }).jwks_uri;
  } catch (error) {
    throw new OidcKeysError('unreachable', `${discovery.href}: ${(error as Error).message}`, { issuer }, { cause: error });
  }
  if (typeof jwksUri !== 'string') throw new OidcKeysError('malformed', `${discovery.href}: no jwks_uri`, { issuer });
  return createRemoteJWKSet(checkedUrl(jwksUri), {
    timeoutDuration: FETCH_TIMEOUT_MS,
    [customFetch]: (url: string) =>
      get(new URL(url), access).catch((error: unknown) => {
        throw new OidcKeysError('unreachable', `${url}: ${(error as Error).message}`, { issuer }, { cause: error });
      }),
  });
}
