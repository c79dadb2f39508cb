// The Kubernetes manifests: `kubectl kustomize` builds the example overlay, and every object
// validates against the Kubernetes OpenAPI schemas (kubernetes-models).
import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { run as runCel, type CelInput } from '@bufbuild/cel';
import { DEFAULT_READINESS_TAINT } from '../../../agent/src/runtime/readiness-taint.ts';

const root = fileURLToPath(new URL('../../../', import.meta.url));

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
}

async function validate(object: K8sObject): Promise<void> {
  const [group, version] = object.apiVersion.includes('/') ? object.apiVersion.split('/') : ['', object.apiVersion];
  const module =
    group === 'monitoring.coreos.com'
      ? `@kubernetes-models/prometheus-operator/${group}/${version!}/${object.kind}`
      : `kubernetes-models/${group === '' ? '' : `${group!}/`}${version!}/${object.kind}`;
  const Model = ((await import(module)) as Record<string, new (value: unknown) => { validate(): void }>)[object.kind]!;
  new Model(object).validate();
}

describe('deploy/kubernetes', () => {
  let objects: K8sObject[] = [];

  before(() => {
    if (spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).error !== undefined) {
      throw new Error('kubectl is not installed: it is a prerequisite of the manifest tests (README), and Debian has no current package of it');
    }
    const built = execFileSync('kubectl', ['kustomize', '--load-restrictor', 'LoadRestrictionsNone', `${root}deploy/kubernetes/overlays/example`], {
      encoding: 'utf8',
    });
    objects = parseAllDocuments(built).map((doc) => doc.toJS() as K8sObject);
  });

  it('kustomize builds the example overlay', () => {
    assert.deepEqual(objects.map((o) => o.kind).sort(), [
      'ClusterRole',
      'ClusterRoleBinding',
      'ClusterRoleBinding',
      'ConfigMap',
      'ConfigMap',
      'ConfigMap',
      'ConfigMap',
      'ConfigMap',
      'ConfigMap',
      'DaemonSet',
      'Deployment',
      'Namespace',
      'PodDisruptionBudget',
      'Service',
      'Service',
      'ServiceAccount',
      'ServiceAccount',
      'ServiceMonitor',
      'ValidatingAdmissionPolicy',
      'ValidatingAdmissionPolicyBinding',
    ]);
  });

  it('every object validates against its schema', async () => {
    for (const object of objects) await validate(object);
  });

  it('the schema check is real: a wrong field type is refused', async () => {
    const daemonSet = structuredClone(objects.find((o) => o.kind === 'DaemonSet')!);
    (daemonSet.spec as { template: { spec: { hostNetwork: unknown } } }).template.spec.hostNetwork = 'yes';
    await assert.rejects(() => validate(daemonSet));
  });

  it('the DaemonSet: host network, only BPF, NET_ADMIN and NET_RAW, bpffs and the cgroup tree mounted, not privileged, probes, limits', () => {
    const daemonSet = objects.find((o) => o.kind === 'DaemonSet')!;
    const pod = (daemonSet.spec as { template: { spec: Record<string, unknown> } }).template.spec;
    assert.equal(pod.hostNetwork, true);
    const container = (pod.containers as Record<string, unknown>[])[0]!;
    const security = container.securityContext as { privileged: boolean; capabilities: { add: string[]; drop: string[] } };
    assert.equal(security.privileged, false);
    assert.deepEqual(security.capabilities.add, ['BPF', 'NET_ADMIN', 'NET_RAW']);
    assert.deepEqual(security.capabilities.drop, ['ALL']);
    assert.equal((container.readinessProbe as { httpGet: { path: string } }).httpGet.path, '/readyz');
    assert.equal((container.livenessProbe as { httpGet: { path: string } }).httpGet.path, '/healthz');
    assert.ok((container.resources as { limits: object }).limits);
    assert.equal(container.image, 'registry.example.com/synpass/agent:0.1.0');
    // The node name reaches the agent as the SYNPASS_* override that turns the pod attestor on.
    const env = container.env as { name: string; valueFrom?: { fieldRef: { fieldPath: string } } }[];
    assert.equal(env.find((e) => e.name === 'SYNPASS_KUBERNETES_NODE_NAME')?.valueFrom?.fieldRef.fieldPath, 'spec.nodeName');
    // The fast path pins in the node's bpffs and attaches at the node's cgroup root, both host paths.
    const mounts = container.volumeMounts as { name: string; mountPath: string; readOnly?: boolean }[];
    const volumes = pod.volumes as { name: string; hostPath?: { path: string } }[];
    const hostPathAt = (mountPath: string) => volumes.find((v) => v.name === mounts.find((m) => m.mountPath === mountPath)?.name)?.hostPath?.path;
    assert.equal(hostPathAt('/sys/fs/bpf'), '/sys/fs/bpf');
    assert.equal(hostPathAt('/host/cgroup'), '/sys/fs/cgroup');
    assert.equal((env as { name: string; value?: string }[]).find((e) => e.name === 'SYNPASS_DATAPATH_FAST_PATH_CGROUP')?.value, '/host/cgroup');
  });

  it('the agent holds no shared secret: it attests with its projected token and keeps its own keys on the node', () => {
    const pod = (objects.find((o) => o.kind === 'DaemonSet')!.spec as { template: { spec: { volumes: Record<string, unknown>[] } } }).template.spec;
    assert.deepEqual(pod.volumes.filter((volume) => 'secret' in volume), [], 'no Secret volume');
    const attestation = pod.volumes.find((volume) => volume.name === 'attestation') as { projected: { sources: { serviceAccountToken: { audience: string; path: string } }[] } };
    assert.deepEqual(attestation.projected.sources[0]!.serviceAccountToken, { audience: 'synpass', expirationSeconds: 3600, path: 'token' });
    assert.equal((pod.volumes.find((volume) => volume.name === 'state') as { hostPath: { path: string } }).hostPath.path, '/var/lib/synpass');
    const config = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('synpass-config-'))!.data!['agent.yaml']!;
    assert.match(config, /kubernetesToken: \/var\/run\/secrets\/synpass\/token/);
    assert.match(config, /url: https:\/\/synpass-issuer\.synpass-system\.svc/);
  });

  it('the issuer: 2 replicas, a disruption budget, a Secret with only the issuing key, not root, the agent service account named', () => {
    const deployment = objects.find((o) => o.kind === 'Deployment' && o.metadata.name === 'synpass-issuer')!;
    const spec = deployment.spec as { replicas: number; template: { spec: { securityContext: { runAsNonRoot: boolean }; containers: { args: string[]; securityContext: { capabilities: { drop: string[] } } }[]; volumes: { name: string; secret?: { secretName: string } }[] } } };
    assert.equal(spec.replicas, 2);
    assert.equal(spec.template.spec.securityContext.runAsNonRoot, true);
    assert.deepEqual(spec.template.spec.containers[0]!.securityContext.capabilities.drop, ['ALL']);
    const secrets = spec.template.spec.volumes.filter((volume) => volume.secret !== undefined).map((volume) => volume.secret!.secretName).sort();
    assert.deepEqual(secrets, ['synpass-issuer-tls', 'synpass-issuing-key']);
    const args = spec.template.spec.containers[0]!.args;
    assert.ok(args.includes('--k8s-service-account=synpass-system/synpass-agent'));
    assert.ok(args.includes('--issuing-key=/etc/synpass/issuing-key/issuing.key.pem'));
    const budget = objects.find((o) => o.kind === 'PodDisruptionBudget')!;
    assert.equal((budget.spec as { minAvailable: number }).minAvailable, 1);
  });

  it('RBAC: get, list and watch pods, get and patch nodes (the readiness taint), nothing else', () => {
    const role = objects.find((o) => o.kind === 'ClusterRole') as unknown as { rules: { resources: string[]; verbs: string[] }[] };
    assert.deepEqual(role.rules, [
      { apiGroups: [''], resources: ['pods'], verbs: ['get', 'list', 'watch'] },
      { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'patch'] },
    ]);
  });

  it('agents and the issuer start on a node that still carries the readiness taint; agents take it off', () => {
    const tolerations = (kind: string) => (objects.find((o) => o.kind === kind)!.spec as { template: { spec: { tolerations?: object[] } } }).template.spec.tolerations;
    assert.deepEqual(tolerations('DaemonSet'), [{ operator: 'Exists' }]);
    assert.deepEqual(tolerations('Deployment'), [{ key: DEFAULT_READINESS_TAINT, operator: 'Exists' }]);
  });

  // The expressions as shipped, run by a conformant CEL evaluator (@bufbuild/cel) on admission
  // requests as the API server builds them; not run by a live API server here.
  it('the admission policy lets the agent take only its readiness taint off only its own node', () => {
    const spec = objects.find((o) => o.kind === 'ValidatingAdmissionPolicy')!.spec as { matchConditions: { expression: string }[]; validations: { expression: string; message: string }[] };
    const binding = objects.find((o) => o.kind === 'ValidatingAdmissionPolicyBinding')!.spec as { policyName: string; validationActions: string[] };
    assert.deepEqual(binding, { policyName: 'synpass-agent-own-node', validationActions: ['Deny'] });
    const account = objects.find((o) => o.kind === 'ServiceAccount' && o.metadata.name === 'synpass-agent')!;
    const agent = `system:serviceaccount:${account.metadata.namespace ?? ''}:synpass-agent`;
    const celValue = (value: unknown): CelInput =>
      Array.isArray(value) ? value.map(celValue) : value !== null && typeof value === 'object' ? new Map(Object.entries(value).map(([key, item]) => [key, celValue(item)])) : (value as CelInput);
    const ours = { key: DEFAULT_READINESS_TAINT, value: 'true', effect: 'NoExecute' };
    const other = { key: 'node.kubernetes.io/not-ready', effect: 'NoSchedule' };
    const node = { metadata: { name: 'node-1', labels: { zone: 'a' } }, spec: { podCIDR: '10.1.0.0/24', taints: [other, ours] } };
    /** The messages of the validations that refuse `change` to node-1, or null when the policy does not apply. */
    const refusals = (change: (next: typeof node) => void, user: { username?: string; extra?: Record<string, string[]> } = {}): string[] | null => {
      const object = structuredClone(node);
      change(object);
      const request = { userInfo: { username: user.username ?? agent, extra: user.extra ?? { 'authentication.kubernetes.io/node-name': ['node-1'] } } };
      const bindings = { object: celValue(object), oldObject: celValue(node), request: celValue(request) };
      if (!spec.matchConditions.every(({ expression }) => runCel(expression, bindings) === true)) return null;
      return spec.validations.filter(({ expression }) => runCel(expression, bindings) !== true).map(({ message }) => message);
    };
    const removeOurs = (next: typeof node) => {
      next.spec.taints = [other];
    };
    assert.deepEqual(refusals(removeOurs), []);
    assert.deepEqual(refusals((next) => delete (next.spec as { taints?: unknown }).taints, {}), ['the synpass agent may only remove its readiness taint (synpass.io/agent-not-ready)']);
    assert.deepEqual(refusals(removeOurs, { extra: { 'authentication.kubernetes.io/node-name': ['node-2'] } }), ['the synpass agent may change only the node its pod runs on']);
    assert.deepEqual(refusals(removeOurs, { extra: {} }), ['the synpass agent may change only the node its pod runs on']);
    assert.deepEqual(refusals((next) => next.spec.taints.push({ key: 'example.com/x', effect: 'NoSchedule' })), ['the synpass agent may only remove its readiness taint (synpass.io/agent-not-ready)']);
    assert.deepEqual(refusals((next) => {
      next.metadata.labels.zone = 'b';
      removeOurs(next);
    }), ["the synpass agent may not change a node's labels or annotations"]);
    assert.deepEqual(refusals((next) => Object.assign(next.spec, { unschedulable: true })), ["the synpass agent may change nothing of a node's spec but its readiness taint"]);
    assert.equal(refusals(() => undefined, { username: 'system:serviceaccount:kube-system:node-controller' }), null, 'other users are not this policy\'s business');
  });

  it('the policy ConfigMap is generated from the policy files in git', () => {
    const policy = objects.find((o) => o.kind === 'ConfigMap' && o.metadata.name.startsWith('synpass-policy-'))!;
    assert.deepEqual(Object.keys(policy.data ?? {}).sort(), ['api.yaml', 'db.yaml', 'web.yaml']);
    const daemonSet = JSON.stringify(objects.find((o) => o.kind === 'DaemonSet'));
    assert.ok(daemonSet.includes(policy.metadata.name), 'the DaemonSet mounts the hashed ConfigMap name');
  });
});
