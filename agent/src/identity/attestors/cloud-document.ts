// A cloud instance-identity document (AWS field names; GCP/Azure documents map the same way).
import type { Attribute } from '../../token/identity-token.ts';
import { attestorKind, attributes, readJsonObject, text, type Attestor } from './attestor.ts';

export class CloudDocumentAttestor implements Attestor {
  readonly name = 'cloud';
  readonly namespaces = ['cloud'];
  constructor(private readonly path: string) {}
  async attest(): Promise<Map<string, Attribute>> {
    const doc = await readJsonObject(this.path);
    return attributes(this.name, {
      'cloud.provider': text(doc.provider) ?? 'aws',
      'cloud.account': text(doc.accountId),
      'cloud.region': text(doc.region),
      'cloud.zone': text(doc.availabilityZone),
      'cloud.instance-id': text(doc.instanceId),
      'cloud.image': text(doc.imageId),
      'cloud.instance-type': text(doc.instanceType),
    });
  }
}

export const cloudDocumentKind = attestorKind({
  key: 'cloudDocument',
  field: (types) => types.optionalPath('instance-identity document (JSON): cloud.provider, cloud.account, cloud.region, cloud.zone, ...'),
  create: (path: string | null) => (path === null ? null : new CloudDocumentAttestor(path)),
});
