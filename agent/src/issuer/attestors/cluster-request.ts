// Requests from the issuer to a cluster's API server or service-account issuer: its TLS CA, the
// issuer's own bearer token where the server asks for one, bounded in time and size. Plain http
// is allowed only on loopback (a test server); tokens and key material otherwise go over TLS.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { SynpassError } from '../../errors.ts';

const TIMEOUT_MS = 5_000;
const MAX_ANSWER_BYTES = 1 << 20;

export class ClusterRequestError extends SynpassError<'unreachable' | 'insecure'> {
  override readonly name = 'ClusterRequestError';
}

export interface ClusterAccess {
  ca: Buffer | null;
  /** Read at each request (kubelet rotates projected tokens). */
  bearerTokenFile: string | null;
}

export function checkedUrl(text: string): URL {
  const url = new URL(text);
  const loopback = ['127.0.0.1', '[::1]', 'localhost'].includes(url.hostname);
  if (url.protocol !== 'https:' && !(url.protocol === 'http:' && loopback)) {
    throw new ClusterRequestError('insecure', `${text}: the cluster is reached over https (http only on loopback)`);
  }
  return url;
}

/** One request; resolves with the status and body, rejects (ClusterRequestError) when there is no answer. */
export function clusterRequest(url: URL, access: ClusterAccess, body?: string): Promise<{ status: number; body: Buffer }> {
  const headers: Record<string, string> = {};
  if (access.bearerTokenFile !== null) headers.authorization = `Bearer ${readFileSync(access.bearerTokenFile, 'utf8').trim()}`;
  if (body !== undefined) Object.assign(headers, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) });
  return new Promise((resolve, reject) => {
    const options = { method: body === undefined ? 'GET' : 'POST', headers, timeout: TIMEOUT_MS, ...(access.ca === null ? {} : { ca: access.ca }) };
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, options, (response) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on('data', (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_ANSWER_BYTES) request.destroy(new Error(`answer over ${MAX_ANSWER_BYTES} bytes`));
        else chunks.push(chunk);
      });
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks) }); });
    });
    request.on('timeout', () => { request.destroy(new Error(`no answer within ${TIMEOUT_MS} ms`)); });
    request.on('error', (error) => { reject(new ClusterRequestError('unreachable', `${url.origin}: ${error.message}`, {}, { cause: error })); });
    request.end(body);
  });
}
