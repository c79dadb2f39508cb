// A posture report (e.g. a vulnerability scanner's summary) so policy can require good posture.
import type { Attribute } from '../../token/identity-token.ts';
import { attestorKind, attributes, readJsonObject, text, type Attestor } from './attestor.ts';

export class PostureAttestor implements Attestor {
  readonly name = 'posture';
  readonly namespaces = ['posture'];
  constructor(private readonly path: string) {}
  async attest(): Promise<Map<string, Attribute>> {
    const doc = await readJsonObject(this.path);
    const cves = (doc.openCves ?? {}) as Record<string, unknown>;
    return attributes(this.name, {
      'posture.patch-level': text(doc.patchLevel),
      'posture.scanner': text(doc.scanner),
      'posture.scanned-at': text(doc.scannedAt),
      'posture.cves-critical': text(cves.critical),
      'posture.cves-high': text(cves.high),
    });
  }
}

export const postureKind = attestorKind({
  key: 'postureFile',
  field: (types) => types.optionalPath('posture report (JSON): posture.patch-level, posture.scanner, posture.cves-critical, ...'),
  create: (path: string | null) => (path === null ? null : new PostureAttestor(path)),
});
