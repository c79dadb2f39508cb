// Cloud node attestation: the agent shows its instance-identity document and the provider's
// signature over it (AWS: the document and its RSA-SHA256 `signature`; GCP and Azure documents
// map the same way). The issuer verifies the signature against the provider certificates it is
// configured with, checks the account, and names the credential after the instance:
// spiffe://<domain>/agent/cloud/<account>/<instance>.
// Anyone on the instance can read its document, and it does not change: a stolen document is
// good for any key. `maxAgeSeconds` bounds that to the first minutes after launch (pendingTime).
import { verify, X509Certificate } from 'node:crypto';
import { IssuanceRefusal } from '../refusal.ts';
import { evidenceText, pathSegment, type NodeAttestor, type NodeGrant } from './attestor.ts';

export interface CloudAttestorOptions {
  /** The provider's signing certificates (PEM). */
  certificates: readonly X509Certificate[];
  /** Accounts whose instances may join (empty: any the certificates sign for). */
  accounts: readonly string[];
  /** Documents of instances launched longer ago are refused (null: no bound). */
  maxAgeSeconds: number | null;
  namespaces: string[];
}

interface InstanceDocument {
  instanceId: string;
  accountId: string;
  region: string;
  availabilityZone?: string;
  provider?: string;
  pendingTime?: string;
}

function parseDocument(text: string): InstanceDocument {
  let document: Partial<Record<keyof InstanceDocument, unknown>>;
  try {
    document = JSON.parse(text) as typeof document;
  } catch {
    throw new IssuanceRefusal('cloud-bad-document', 'the instance document is not JSON');
  }
  for (const field of ['instanceId', 'accountId', 'region'] as const) {
    if (typeof document[field] !== 'string') throw new IssuanceRefusal('cloud-bad-document', `the instance document has no ${field}`);
  }
  return document as InstanceDocument;
}

export class CloudDocumentAttestor implements NodeAttestor {
  readonly type = 'cloud-document';
  constructor(private readonly options: CloudAttestorOptions) {}

  attest(evidence: Readonly<Record<string, unknown>>, _request: unknown, nowSeconds: number): Promise<NodeGrant> {
    const text = evidenceText(evidence, 'document', this.type);
    const signature = Buffer.from(evidenceText(evidence, 'signature', this.type), 'base64');
    const now = new Date(nowSeconds * 1000);
    const signedBy = this.options.certificates.find(
      (certificate) => new Date(certificate.validFrom) <= now && now <= new Date(certificate.validTo) && verify('sha256', Buffer.from(text), certificate.publicKey, signature),
    );
    if (signedBy === undefined) throw new IssuanceRefusal('cloud-bad-signature', 'the instance document is not signed by a configured provider certificate');
    const document = parseDocument(text);
    if (this.options.accounts.length > 0 && !this.options.accounts.includes(document.accountId)) {
      throw new IssuanceRefusal('cloud-wrong-account', `account ${document.accountId} may not join`, { account: document.accountId });
    }
    if (this.options.maxAgeSeconds !== null) {
      const launched = typeof document.pendingTime === 'string' ? Date.parse(document.pendingTime) / 1000 : Number.NaN;
      if (!(nowSeconds - launched <= this.options.maxAgeSeconds)) {
        throw new IssuanceRefusal('cloud-document-too-old', `instance ${document.instanceId} launched more than ${this.options.maxAgeSeconds} s ago (pendingTime ${String(document.pendingTime)})`);
      }
    }
    const account = pathSegment(document.accountId, 'account');
    const instance = pathSegment(document.instanceId, 'instance id');
    return Promise.resolve({
      agentId: `cloud/${account}/${instance}`,
      namespaces: this.options.namespaces,
      node: {
        'node.name': instance,
        'node.cloud-provider': document.provider ?? 'aws',
        'node.cloud-account': account,
        'node.cloud-region': document.region,
        ...(document.availabilityZone === undefined ? {} : { 'node.cloud-zone': document.availabilityZone }),
      },
    });
  }
}
