// Attribute names an attestor can vouch for. A selector naming anything else could never match,
// so validation refuses it instead of letting a typo silently deny or allow.

/** Namespaces whose keys are fixed by the attestor that fills them. */
const FIXED: Readonly<Record<string, readonly string[]>> = {
  synpass: ['subject', 'trust-domain', 'agent'],
  host: ['name', 'os', 'kernel', 'machine-id'],
  cloud: ['provider', 'account', 'region', 'zone', 'instance-id', 'image', 'instance-type'],
  posture: ['patch-level', 'scanner', 'scanned-at', 'cves-critical', 'cves-high'],
  process: ['uid', 'user'],
  k8s: ['namespace', 'pod', 'service-account', 'node', 'owner-kind', 'owner-name', 'image-digests'],
};

/** Keys under these prefixes come from the workload itself (Kubernetes pod labels). */
const OPEN_PREFIXES = ['k8s.label.'];

/** Namespaces whose keys come from configuration (static labels, named variables). */
const OPEN = ['app', 'env'];

export const SUBJECT = 'synpass.subject';

/** Null when some attestor can vouch for `name`, else why not. */
export function unknownAttribute(name: string): string | null {
  const dot = name.indexOf('.');
  const namespace = dot < 0 ? name : name.slice(0, dot);
  const key = name.slice(dot + 1);
  if (OPEN.includes(namespace) || OPEN_PREFIXES.some((prefix) => name.startsWith(prefix))) return null;
  const keys = FIXED[namespace];
  if (keys === undefined) {
    return `no attestor vouches for namespace "${namespace}" (known: ${[...Object.keys(FIXED), ...OPEN].sort().join(', ')})`;
  }
  if (!keys.includes(key)) return `no attestor vouches for "${name}" (${namespace}.* has ${keys.join(', ')})`;
  return null;
}
