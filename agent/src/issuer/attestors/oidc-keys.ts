// Where the Kubernetes attestor finds the service-account issuer's public keys, offline: a JWKS
// file (`kubectl get --raw /openid/v1/jwks`), or OIDC discovery against the cluster's issuer
// URL, as cloud workload-identity federation does. jose's remote key set caches the keys,
// refetches on an unknown kid and holds a cooldown, so a flood of forged kids costs no fetches.
import { readFileSync } from 'node:fs';
import { createLocalJWKSet, createRemoteJWKSet, customFetch, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose';
import { SynpassError } from '../../errors.ts';
import { checkedUrl, clusterRequest, type ClusterAccess } from './cluster-request.ts';

export class OidcKeysError extends SynpassError<'unreachable' | 'malformed'> {
  override readonly name = 'OidcKeysError';
}

/** A GET as jose's customFetch expects it: a Response. */
async function fetchResponse(url: URL, access: ClusterAccess): Promise<Response> {
  const answer = await clusterRequest(url, access);
  return new Response(answer.body, { status: answer.status, headers: { 'content-type': 'application/json' } });
}

export function fileKeys(path: string): JWTVerifyGetKey {
  try {
    return createLocalJWKSet(JSON.parse(readFileSync(path, 'utf8')) as JSONWebKeySet);
  } catch (error) {
    throw new OidcKeysError('malformed', `${path}: not a JWKS document`, { path }, { cause: error });
  }
}

/** Reads `<issuer>/.well-known/openid-configuration` once, then serves its jwks_uri's keys. */
export async function discoveredKeys(issuer: string, access: ClusterAccess): Promise<JWTVerifyGetKey> {
  const discovery = new URL(`${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
  checkedUrl(discovery.href);
  let jwksUri: unknown;
  try {
    const response = await fetchResponse(discovery, access);
    jwksUri = ((await response.json()) as { jwks_uri?: unknown }).jwks_uri;
  } catch (error) {
    throw new OidcKeysError('unreachable', `${discovery.href}: ${(error as Error).message}`, { issuer }, { cause: error });
  }
  if (typeof jwksUri !== 'string') throw new OidcKeysError('malformed', `${discovery.href}: no jwks_uri`, { issuer });
  return createRemoteJWKSet(checkedUrl(jwksUri), {
    [customFetch]: (url: string) =>
      fetchResponse(new URL(url), access).catch((error: unknown) => {
        throw new OidcKeysError('unreachable', `${url}: ${(error as Error).message}`, { issuer }, { cause: error });
      }),
  });
}
