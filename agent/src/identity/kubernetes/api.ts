// How the agent reaches the Kubernetes API: in-cluster credentials or a configured URL, and one
// request with them. The pod watcher streams its answers; the readiness taint reads and patches.
import { readFileSync } from 'node:fs';
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { SynpassError } from '../../errors.ts';

export interface KubernetesAccess {
  /** https://host:port of the API server (http:// for tests). */
  server: string;
  /**
   * The bearer token's file, read again for every request: the kubelet replaces a pod's
   * projected token well before it expires (an hour where the API server does not extend it), and
   * a token read once at start would be refused from then on.
   */
  tokenFile: string | null;
  ca: string | null;
}

export class KubernetesError extends SynpassError<'not-in-cluster' | 'http-status' | 'watch-error' | 'no-pod-list' | 'bad-answer'> {
  override readonly name = 'KubernetesError';
}

/** In-cluster access from the service-account mount and the KUBERNETES_SERVICE_* variables. */
export function inClusterAccess(
  environment: NodeJS.ProcessEnv = process.env,
  mount = '/var/run/secrets/kubernetes.io/serviceaccount',
): KubernetesAccess {
  const host = environment.KUBERNETES_SERVICE_HOST;
  const port = environment.KUBERNETES_SERVICE_PORT ?? '443';
  if (host === undefined) throw new KubernetesError('not-in-cluster', 'KUBERNETES_SERVICE_HOST is not set: not running in a cluster (set kubernetes.apiServer)');
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`,
    tokenFile: `${mount}/token`,
    ca: readFileSync(`${mount}/ca.crt`, 'utf8'),
  };
}

/** `apiServer` as configured: in-cluster access when null. */
export function kubernetesAccess(apiServer: string | null): KubernetesAccess {
  return apiServer === null ? inClusterAccess() : { server: apiServer, tokenFile: null, ca: null };
}

export interface ApiCall {
  /** The request in flight, to abort it. */
  request: ClientRequest;
  /** The answer once its status is 200; any other status rejects with `http-status`. */
  response: Promise<IncomingMessage>;
}

export function callApi(access: KubernetesAccess, method: 'GET' | 'PATCH', path: string, body?: { contentType: string; text: string }): ApiCall {
  const url = new URL(path, access.server);
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  const token = access.tokenFile === null ? '' : readFileSync(access.tokenFile, 'utf8').trim();
  let request!: ClientRequest;
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    request = send(
      url,
      {
        method,
        headers: {
          accept: 'application/json',
          ...(token === '' ? {} : { authorization: `Bearer ${token}` }),
          ...(body ? { 'content-type': body.contentType } : {}),
        },
        ...(access.ca ? { ca: access.ca } : {}),
      },
      (answer) => {
        if (answer.statusCode !== 200) {
          answer.resume();
          reject(new KubernetesError('http-status', `${method} ${url.pathname}: HTTP ${answer.statusCode ?? '?'}`, { status: answer.statusCode ?? 0 }));
          return;
        }
        resolve(answer);
      },
    );
    request.on('error', reject);
    request.end(body?.text);
  });
  return { request, response };
}

/** A whole JSON answer, refused past `maxBytes` so a wrong server cannot fill memory. */
export async function readJson(response: IncomingMessage, maxBytes = 32 * 1024 * 1024): Promise<unknown> {
  let body = '';
  response.setEncoding('utf8');
  for await (const chunk of response) {
    body += chunk as string;
    if (body.length > maxBytes) {
      response.destroy();
      throw new KubernetesError('bad-answer', `answer longer than ${maxBytes} bytes`);
    }
  }
  try {
    return JSON.parse(body) as unknown;
  } catch {
    throw new KubernetesError('bad-answer', 'answer is not JSON');
  }
}
