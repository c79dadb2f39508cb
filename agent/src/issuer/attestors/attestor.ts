// Node attestors: how the issuer learns who a first-time agent is. Each takes one kind of
// evidence from the credential request and answers with the agent's name, the attribute
// namespaces it may assert, and the facts it vouches for (node.*, with its name as provenance),
// or refuses with a counted reason. Renewals need none: the current credential attests.
import type { CredentialRequest } from '../credential-request.ts';
import { IssuanceRefusal } from '../refusal.ts';

export interface NodeGrant {
  /** The credential names the agent spiffe://<domain>/agent/<agentId>. */
  agentId: string;
  namespaces: string[];
  node: Record<string, string>;
}

export interface NodeAttestor {
  /** The attestation `type` it reads. */
  readonly type: string;
  attest(evidence: Readonly<Record<string, unknown>>, request: CredentialRequest, nowSeconds: number): Promise<NodeGrant>;
}

/** A string field of the evidence, or a bad-request refusal naming it. */
export function evidenceText(evidence: Readonly<Record<string, unknown>>, field: string, type: string): string {
  const value = evidence[field];
  if (typeof value !== 'string' || value === '' || value.length > 16_384) throw new IssuanceRefusal('bad-request', `${type} attestation needs ${field}`);
  return value;
}

/** Agent names are path segments of a SPIFFE ID: a fact that is not one cannot name an agent. */
export function pathSegment(value: string, what: string): string {
  if (!/^[A-Za-z0-9._-]{1,253}$/.test(value)) throw new IssuanceRefusal('bad-request', `${what} "${value.slice(0, 64)}" cannot name an agent`);
  return value;
}
