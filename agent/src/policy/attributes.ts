// Attribute names an attestor can vouch for. A selector naming anything else could never match,
// so validation refuses it instead of letting a typo silently deny or allow.

/** Namespaces whose keys are fixed by the attestor that fills them. */
const FIXED: Readonly<Record<string, readonly string[]>> = {
  synpass: ['subject', 'trust-domain', 'agent'],
  host: ['name', 'os', 'kernel', 'machine-id'],
  cloud: ['provider', 'account', 'region', 'zone', 'instance-id', 'image', 'instance-type'],
  posture: ['patch-level', 'scanner', 'scanned-at', 'cves-critical', 'cves-high'],
  process: ['uid', 'user'],
};

/** Namespaces whose keys come from configuration (static labels, named variables). */
const OPEN = ['app', 'env'];

export const SUBJECT = 'synpass.subject';
export const TRUST_DOMAIN = 'synpass.trust-domain';

/** Null when some attestor can vouch for `name`, else why not. */
export function unknownAttribute(name: string): string | null {
  const dot = name.indexOf('.');
  const namespace = dot < 0 ? name : name.slice(0, dot);
  const key = name.slice(dot + 1);
  if (OPEN.includes(namespace)) return null;
  const keys = FIXED[namespace];
  if (keys === undefined) {
    return `no attestor vouches for namespace "${namespace}" (known: ${[...Object.keys(FIXED), ...OPEN].sort().join(', ')})`;
  }
  if (!keys.includes(key)) return `no attestor vouches for "${name}" (${namespace}.* has ${keys.join(', ')})`;
  return null;
}
