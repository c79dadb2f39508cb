// Kubernetes node attestation: the agent pod shows a projected service-account token (audience
// "synpass"), which kubelet binds to the pod and its node. A reviewer vouches for the token:
// offline, against the cluster's service-account issuer keys (oidc-keys.ts), or online through
// the API server's TokenReview (token-review.ts), which also knows a deleted pod's token is dead.
// The attestor checks that the token belongs to the agent DaemonSet's namespace and service
// account, and names the credential after the node: spiffe://<domain>/agent/k8s/<cluster>/<node>.
import { errors, jwtVerify, type JWTVerifyGetKey } from 'jose';
import { IssuanceRefusal, type RefusalReason } from '../refusal.ts';
import { OidcKeysError } from './oidc-keys.ts';
import { evidenceText, pathSegment, type NodeAttestor, type NodeGrant } from './attestor.ts';

export const KUBERNETES_AUDIENCE = 'synpass';

export interface ServiceAccount {
  namespace: string;
  name: string;
}

/** What a reviewer found a valid token to stand for ('' where it says nothing). */
export interface ReviewedToken {
  namespace: string;
  serviceAccount: string;
  pod: string;
  node: string;
}

/** Vouches for a service-account token, or refuses it with a counted reason. */
export type TokenReviewer = (token: string) => Promise<ReviewedToken>;

export interface KubernetesAttestorOptions {
  /** Names the cluster in agent names (several clusters may share a domain). */
  cluster: string;
  reviewer: TokenReviewer;
  /** Service accounts the agent DaemonSet runs as. */
  serviceAccounts: readonly ServiceAccount[];
  namespaces: string[];
}

function text(value: unknown): string {
  return typeof value === 'string' ? value : '';
}

function refusalOf(error: unknown): IssuanceRefusal {
  let reason: RefusalReason = 'k8s-bad-token';
  if (error instanceof errors.JWTExpired) reason = 'k8s-expired';
  else if (error instanceof errors.JWTClaimValidationFailed) reason = error.claim === 'aud' ? 'k8s-wrong-audience' : error.claim === 'iss' ? 'k8s-wrong-issuer' : 'k8s-bad-token';
  else if (error instanceof errors.JWKSNoMatchingKey) reason = 'k8s-unknown-key';
  else if (error instanceof errors.JWSSignatureVerificationFailed) reason = 'k8s-bad-signature';
  else if (error instanceof errors.JWKSTimeout || error instanceof OidcKeysError) reason = 'k8s-keys-unavailable';
  return new IssuanceRefusal(reason, `service-account token: ${(error as Error).message}`, {}, { cause: error });
}

/** Offline review: the token's signature under the service-account issuer's keys, and its claims. */
export function offlineReviewer(options: { issuer: string; keys: JWTVerifyGetKey; audience?: string }): TokenReviewer {
  return async (token) => {
    try {
      const { payload } = await jwtVerify(token, options.keys, {
        issuer: options.issuer,
        audience: options.audience ?? KUBERNETES_AUDIENCE,
        algorithms: ['RS256', 'ES256'],
        requiredClaims: ['exp', 'sub'],
      });
      const claims = (payload['kubernetes.io'] ?? {}) as { namespace?: unknown; serviceaccount?: { name?: unknown }; pod?: { name?: unknown }; node?: { name?: unknown } };
      return { namespace: text(claims.namespace), serviceAccount: text(claims.serviceaccount?.name), pod: text(claims.pod?.name), node: text(claims.node?.name) };
    } catch (error) {
      if (error instanceof errors.JOSEError || error instanceof OidcKeysError) throw refusalOf(error);
      throw error;
    }
  };
}

export class KubernetesAttestor implements NodeAttestor {
  readonly type = 'kubernetes';
  constructor(private readonly options: KubernetesAttestorOptions) {
    pathSegment(options.cluster, 'cluster name');
  }

  async attest(evidence: Readonly<Record<string, unknown>>): Promise<NodeGrant> {
    const { namespace, serviceAccount, pod, node } = await this.options.reviewer(evidenceText(evidence, 'token', this.type));
    if (!this.options.serviceAccounts.some((allowed) => allowed.namespace === namespace && allowed.name === serviceAccount)) {
      throw new IssuanceRefusal('k8s-wrong-service-account', `service account ${namespace}/${serviceAccount} is not the agent's`, { namespace, serviceAccount });
    }
    // Only a token bound to a pod on a node says which node: anything else could name any node.
    if (node === '' || pod === '') throw new IssuanceRefusal('k8s-no-node', 'the token is not bound to a pod and its node (a projected token from kubelet is)');
    return {
      agentId: `k8s/${this.options.cluster}/${pathSegment(node, 'node name')}`,
      namespaces: this.options.namespaces,
      node: { 'node.name': node, 'node.k8s-cluster': this.options.cluster, 'node.k8s-pod': pod, 'node.k8s-namespace': namespace },
    };
  }
}
