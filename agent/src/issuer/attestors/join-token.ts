// Join-token attestation: the agent shows a single-use token an operator made for it.
import type { CredentialRequest } from '../credential-request.ts';
import { JoinTokenError, type JoinTokenStore } from '../join-tokens.ts';
import { IssuanceRefusal } from '../refusal.ts';
import { evidenceText, type NodeAttestor, type NodeGrant } from './attestor.ts';

export class JoinTokenAttestor implements NodeAttestor {
  readonly type = 'join-token';
  constructor(private readonly tokens: JoinTokenStore) {}

  attest(evidence: Readonly<Record<string, unknown>>, request: CredentialRequest, nowSeconds: number): Promise<NodeGrant> {
    const token = evidenceText(evidence, 'token', this.type);
    try {
      const record = this.tokens.redeem(token, request.thumbprint, nowSeconds);
      return Promise.resolve({ agentId: `join/${record.agent}`, namespaces: record.namespaces, node: { 'node.name': record.agent, 'node.join-token': record.id } });
    } catch (error) {
      if (error instanceof JoinTokenError) throw new IssuanceRefusal(error.code, error.message, error.context, { cause: error });
      throw error;
    }
  }
}
