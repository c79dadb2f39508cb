// Online review of a service-account token: the API server's TokenReview says whether the token
// is valid now (a deleted pod's token is not, which offline verification cannot know) and for
// which service account, pod and node. The issuer authenticates with its own token and needs
// the system:auth-delegator role.
import { IssuanceRefusal } from '../refusal.ts';
import { KUBERNETES_AUDIENCE, type TokenReviewer } from './kubernetes.ts';
import { checkedUrl, clusterRequest, type ClusterAccess } from './cluster-request.ts';

const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

interface ReviewStatus {
  authenticated?: boolean;
  error?: string;
  audiences?: string[];
  user?: { username?: string; extra?: Record<string, string[] | undefined> };
}

export function tokenReviewer(apiServer: string, access: ClusterAccess, audience = KUBERNETES_AUDIENCE): TokenReviewer {
  const url = checkedUrl(`${apiServer.replace(/\/$/, '')}/apis/authentication.k8s.io/v1/tokenreviews`);
  return async (token) => {
    let answer: { status: number; body: Buffer };
    try {
      answer = await clusterRequest(url, access, JSON.stringify({ apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [audience] } }));
    } catch (error) {
      throw new IssuanceRefusal('k8s-keys-unavailable', `TokenReview: ${(error as Error).message}`, {}, { cause: error });
    }
    let status: ReviewStatus;
    try {
      status = (JSON.parse(answer.body.toString('utf8')) as { status?: ReviewStatus }).status ?? {};
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
