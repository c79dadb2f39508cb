// Online review of a service-account token: the API server's TokenReview says whether the token
// is valid now (a deleted pod's token is not, which offline verification cannot know) and for
// which service account, pod and node. The issuer authenticates with its own token and needs
// the system:auth-delegator role.
import { readFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { IssuanceRefusal } from '../refusal.ts';
import { KUBERNETES_AUDIENCE, type TokenReviewer } from './kubernetes.ts';
import { checkedUrl, type DiscoveryAccess } from './oidc-keys.ts';

const REVIEW_TIMEOUT_MS = 5_000;
const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

interface ReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[] | undefined> };
}

function post(url: URL, body: string, access: DiscoveryAccess): Promise<{ status: number; text: string }> {
  const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) };
  if (access.bearerTokenFile !== null) headers.authorization = `Bearer ${readFileSync(access.bearerTokenFile, 'utf8').trim()}`;
  return new Promise((resolve, reject) => {
    const call = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, { method: 'POST', headers, timeout: REVIEW_TIMEOUT_MS, ...(access.ca === null ? {} : { ca: access.ca }) }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (chunk: Buffer) => chunks.push(chunk));
      response.on('end', () => { resolve({ status: response.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') }); });
    });
    call.on('timeout', () => { call.destroy(new Error(`no answer within ${REVIEW_TIMEOUT_MS} ms`)); });
    call.on('error', reject);
    call.end(body);
  });
}

export function tokenReviewer(apiServer: string, access: DiscoveryAccess, audience = KUBERNETES_AUDIENCE): TokenReviewer {
  const url = checkedUrl(`${apiServer.replace(/\/$/, '')}/apis/authentication.k8s.io/v1/tokenreviews`);
  return async (token) => {
    let answer: { status: number; text: string };
    try {
      answer = await post(url, JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [audience] } }), access);
    } catch (error) {
      throw new IssuanceRefusal('k8s-keys-unavailable', `TokenReview: ${(error as Error).message}`, {}, { cause: error });
    }
    let status: ReviewStatus;
    try {
      status = (JSON.parse(answer.text) as { status?: ReviewStatus }).status ?? {};
    } catch {
      status = {};
    }
    if (answer.status !== 201 && answer.status !== 200) throw new IssuanceRefusal('k8s-keys-unavailable', `TokenReview answered ${answer.status}`);
    if (status.authenticated !== true) throw new IssuanceRefusal('k8s-bad-token', `TokenReview: ${status.error ?? 'not authenticated'}`);
    if (!(status.audiences ?? []).includes(audience)) throw new IssuanceRefusal('k8s-wrong-audience', `TokenReview: not a token for audience ${audience}`);
    const user = SERVICE_ACCOUNT_USER.exec(status.user?.username ?? '');
    const extra = status.user?.extra ?? {};
    return {
      namespace: user?.[1] ?? '',
      serviceAccount: user?.[2] ?? '',
      pod: extra['authentication.kubernetes.io/pod-name']?.[0] ?? '',
      node: extra['authentication.kubernetes.io/node-name']?.[0] ?? '',
    };
  };
}
