// Kubernetes node attestation: the agent pod shows a projected service-account token (audience
// "synpass"), which kubelet binds to the pod and its node. The issuer verifies it offline
// against the cluster's service-account issuer keys (oidc-keys.ts), checks that it belongs to
// the agent DaemonSet's namespace and service account, and names the credential after the node:
// spiffe://<domain>/agent/k8s/<cluster>/<node>.
import { errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { IssuanceRefusal, type RefusalReason } from '../refusal.ts';
import { OidcKeysError } from './oidc-keys.ts';
import { evidenceText, pathSegment, type NodeAttestor, type NodeGrant } from './attestor.ts';

export const KUBERNETES_AUDIENCE = 'synpass';

export interface ServiceAccount {
  namespace: string;
  name: string;
}

export interface KubernetesAttestorOptions {
  /** Names the cluster in agent names (several clusters may share a domain). */
  cluster: string;
  /** The service-account issuer (`iss` of the tokens), e.g. https://kubernetes.default.svc. */
  issuer: string;
  keys: JWTVerifyGetKey;
  /** Service accounts the agent DaemonSet runs as. */
  serviceAccounts: readonly ServiceAccount[];
  namespaces: string[];
  audience?: string;
}

interface KubernetesClaims {
  namespace?: unknown;
  serviceaccount?: { name?: unknown };
  pod?: { name?: unknown };
  node?: { name?: unknown };
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

export class KubernetesAttestor implements NodeAttestor {
  readonly type = 'kubernetes';
  constructor(private readonly options: KubernetesAttestorOptions) {
    pathSegment(options.cluster, 'cluster name');
  }

  async attest(evidence: Readonly<Record<string, unknown>>): Promise<NodeGrant> {
    const token = evidenceText(evidence, 'token', this.type);
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.options.keys, {
        issuer: this.options.issuer,
        audience: this.options.audience ?? KUBERNETES_AUDIENCE,
        algorithms: ['RS256', 'ES256'],
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (error) {
      if (error instanceof errors.JOSEError || error instanceof OidcKeysError) throw refusalOf(error);
      throw error;
    }
    const claims = (payload['kubernetes.io'] ?? {}) as KubernetesClaims;
    const namespace = typeof claims.namespace === 'string' ? claims.namespace : '';
    const account = typeof claims.serviceaccount?.name === 'string' ? claims.serviceaccount.name : '';
    if (!this.options.serviceAccounts.some((allowed) => allowed.namespace === namespace && allowed.name === account)) {
      throw new IssuanceRefusal('k8s-wrong-service-account', `service account ${namespace}/${account} is not the agent's`, { namespace, serviceAccount: account });
    }
    const node = typeof claims.node?.name === 'string' ? claims.node.name : '';
    const pod = typeof claims.pod?.name === 'string' ? claims.pod.name : '';
    // Only a token bound to a pod on a node says which node: anything else could name any node.
    if (node === '' || pod === '') throw new IssuanceRefusal('k8s-no-node', 'the token is not bound to a pod and its node (a projected token from kubelet is)');
    return {
      agentId: `k8s/${this.options.cluster}/${pathSegment(node, 'node name')}`,
      namespaces: this.options.namespaces,
      node: { 'node.name': node, 'node.k8s-cluster': this.options.cluster, 'node.k8s-pod': pod, 'node.k8s-namespace': namespace },
    };
  }
}
