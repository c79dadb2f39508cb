// The issuer's decision: attest a credential request, then sign the credential with the issuing
// key. Stateless but for the join-token directory, so replicas behind one address agree.
import { randomUUID, type KeyObject } from 'node:crypto';
import { issueCredential, verifyCredential } from '../token/credential.ts';
import { denialOf, type DenyList } from '../token/deny-list.ts';
import { TokenError } from '../token/errors.ts';
import type { CertifiedIssuer } from '../token/issuer-certificate.ts';
import type { TrustBundle } from '../token/trust-bundle.ts';
import { checkRenewalProof, CredentialRequestError, readCredentialRequest, type CredentialRequest } from './credential-request.ts';
import type { NodeAttestor } from './attestors/attestor.ts';
import { IssuanceRefusal } from './refusal.ts';

/** Below this much certificate life left, the issuer stops issuing (credentials would be useless). */
const MIN_CREDENTIAL_SECONDS = 60;

export interface IssuerOptions {
  trustDomain: string;
  issuingKey: KeyObject;
  certificate: CertifiedIssuer;
  /** The issuer's own domain's bundle: renewals present credentials it issued. */
  bundles: ReadonlyMap<string, TrustBundle>;
  /** First-time attestation, by the evidence type each reads (join-token, kubernetes, cloud-document). */
  attestors: readonly NodeAttestor[];
  ttlSeconds: number;
  /**
   * How long after its expiry a credential may still be renewed. Its key never left the node, so
   * an agent that rode out a long issuer outage comes back without a new join token.
   */
  renewalGraceSeconds: number;
  /** The deny list in force: a revoked credential or key is not renewed. */
  denyList?: () => DenyList;
}

export interface Issued {
  credential: string;
  subject: string;
  attestation: string;
  expiresAt: number;
  keyThumbprint: string;
  jti: string;
}

export class Issuer {
  constructor(readonly options: IssuerOptions) {}

  async issue(compactRequest: string, nowSeconds: number): Promise<Issued> {
    const { options } = this;
    const left = options.certificate.expiresAt - nowSeconds;
    if (left < MIN_CREDENTIAL_SECONDS) {
      throw new IssuanceRefusal('issuer-certificate-expired', `the certificate of issuing key ${options.certificate.name} expires in ${left} s; certify a new one`);
    }
    const request = await this.read(compactRequest, nowSeconds);
    const grant = await this.attest(request, nowSeconds);
    const ttlSeconds = Math.min(options.ttlSeconds, left);
    const jti = randomUUID();
    const credential = await issueCredential({
      signerKey: options.issuingKey,
      signerKid: options.certificate.kid,
      trustDomain: options.trustDomain,
      agentId: grant.agentId,
      signPublicKey: request.signKey,
      kexPublicKey: request.kexKey,
      namespaces: grant.namespaces,
      ttlSeconds,
      nowSeconds,
      node: grant.node,
      attestedBy: grant.attestedBy,
      jti,
    });
    return {
      credential,
      subject: `spiffe://${options.trustDomain}/agent/${grant.agentId}`,
      attestation: grant.attestation,
      expiresAt: nowSeconds + ttlSeconds,
      keyThumbprint: request.thumbprint,
      jti,
    };
  }

  private async read(compact: string, nowSeconds: number): Promise<CredentialRequest> {
    try {
      return await readCredentialRequest(compact, nowSeconds);
    } catch (error) {
      if (error instanceof CredentialRequestError) throw new IssuanceRefusal(error.code, error.message, error.context, { cause: error });
      throw error;
    }
  }

  /** `attestedBy`: how the node was first attested (a renewal keeps it); `attestation`: this request's. */
  private async attest(request: CredentialRequest, nowSeconds: number): Promise<{ agentId: string; namespaces: string[]; node: Record<string, string>; attestedBy: string; attestation: string }> {
    const { attestation } = request;
    if (attestation.type !== 'credential') {
      const attestor = this.options.attestors.find((candidate) => candidate.type === attestation.type);
      if (attestor === undefined) throw new IssuanceRefusal('unsupported-attestation', `this issuer takes no ${attestation.type} attestation`);
      const grant = await attestor.attest(attestation, request, nowSeconds);
      return { ...grant, attestedBy: attestor.type, attestation: attestor.type };
    }
    // Renewal: the old credential must be ours and current, and its key must vouch for the new one.
    let current;
    try {
      current = verifyCredential(attestation.credential, this.options.bundles, nowSeconds, this.options.renewalGraceSeconds);
    } catch (error) {
      if (error instanceof TokenError) throw new IssuanceRefusal('bad-credential', `current credential: ${error.message}`, { reason: error.code }, { cause: error });
      throw error;
    }
    if (current.trustDomain !== this.options.trustDomain) throw new IssuanceRefusal('bad-credential', `current credential belongs to ${current.trustDomain}`);
    const denial = this.options.denyList === undefined ? null : denialOf(this.options.denyList(), current);
    if (denial !== null) throw new IssuanceRefusal('revoked', `${current.subject}: its ${denial} is on the deny list`, { subject: current.subject });
    try {
      checkRenewalProof(attestation.proof, current.signKey, request.thumbprint, nowSeconds);
    } catch (error) {
      if (error instanceof CredentialRequestError) throw new IssuanceRefusal(error.code, error.message, {}, { cause: error });
      throw error;
    }
    return {
      agentId: current.subject.slice(`spiffe://${current.trustDomain}/agent/`.length),
      namespaces: [...current.namespaces],
      node: { ...current.node },
      attestedBy: current.attestedBy ?? 'ca',
      attestation: 'renewal',
    };
  }
}
