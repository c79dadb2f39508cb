// The pods of this node as identities the policy engine can judge: SPIFFE Kubernetes subject
// (spiffe://<domain>/ns/<namespace>/sa/<service account>) plus the pod attributes, vouched for
// by the pod attestor and this node's agent.
import { networkInterfaces } from 'node:os';
import { canonicalAddress } from '../../datapath/addresses.ts';
import type { AddressWorkload, LocalPods } from '../local-identity.ts';
import type { Attribute, VerifiedIdentity } from '../../token/identity-token.ts';
import type { PodWatcher } from './pod-watcher.ts';

/** The SPIFFE Kubernetes convention: spiffe://<domain>/ns/<namespace>/sa/<service account>. */
export function podSubject(trustDomain: string, attributes: ReadonlyMap<string, Attribute>): string {
  const namespace = attributes.get('k8s.namespace')?.value ?? 'default';
  const account = attributes.get('k8s.service-account')?.value ?? 'default';
  return `spiffe://${trustDomain}/ns/${namespace}/sa/${account}`;
}

/** The pods as address workloads of the local identity: each gets a token of its own. */
export function podWorkloads(watcher: PodWatcher, trustDomain: string): AddressWorkload[] {
  return watcher.entries().map(([address, attributes]) => ({
    address,
    name: `${attributes.get('k8s.namespace')?.value ?? ''}/${attributes.get('k8s.pod')?.value ?? address}`,
    subject: podSubject(trustDomain, attributes),
    attributes,
  }));
}

export class WatchedPods implements LocalPods {
  private readonly identities = new WeakMap<ReadonlyMap<string, Attribute>, VerifiedIdentity>();
  private nodeAddresses = new Set<string>();
  private nodeAddressesRead = 0;

  constructor(
    private readonly watcher: PodWatcher,
    private readonly trustDomain: string,
    private readonly agent: string,
  ) {}

  /** The node's own addresses, re-read at most every 10 s (interfaces rarely change). */
  isNodeAddress(address: string): boolean {
    const now = Date.now();
    if (now - this.nodeAddressesRead > 10_000) {
      this.nodeAddresses = new Set(
        Object.values(networkInterfaces())
          .flat()
          .filter((entry) => entry !== undefined)
          .map((entry) => canonicalAddress(entry.address)),
      );
      this.nodeAddressesRead = now;
    }
    return this.nodeAddresses.has(address);
  }

  identityOf(address: string): VerifiedIdentity | undefined {
    const attributes = this.watcher.attributesOf(address);
    if (attributes === undefined) return undefined;
    let identity = this.identities.get(attributes);
    if (identity === undefined) {
      const subject = podSubject(this.trustDomain, attributes);
      identity = {
        trustDomain: this.trustDomain,
        subject,
        attributes: {
          ...Object.fromEntries([...attributes].map(([name, attribute]) => [name, attribute.value])),
          'synpass.subject': subject,
          'synpass.trust-domain': this.trustDomain,
          'synpass.agent': this.agent,
        },
        provenance: Object.fromEntries([...attributes].map(([name, attribute]) => [name, attribute.attestor])),
        agent: this.agent,
        expiresAt: Number.POSITIVE_INFINITY,
      };
      this.identities.set(attributes, identity);
    }
    return identity;
  }
}
