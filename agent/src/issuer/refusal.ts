// Why the issuer refused a request: a closed set, each a metric label and an audit reason.
import { SynpassError } from '../errors.ts';

export const REFUSAL_REASONS = [
  'bad-request',
  'bad-proof',
  'stale-request',
  'rate-limited',
  'unsupported-attestation',
  'malformed-join-token',
  'unknown-join-token',
  'join-token-expired',
  'join-token-revoked',
  'join-token-used',
  'k8s-bad-token',
  'k8s-unknown-key',
  'k8s-bad-signature',
  'k8s-wrong-audience',
  'k8s-wrong-issuer',
  'k8s-expired',
  'k8s-wrong-service-account',
  'k8s-no-node',
  'k8s-keys-unavailable',
  'cloud-bad-document',
  'cloud-bad-signature',
  'cloud-wrong-account',
  'cloud-document-too-old',
  'bad-credential',
  'revoked',
  'issuer-certificate-expired',
] as const;

export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export class IssuanceRefusal extends SynpassError<RefusalReason> {
  override readonly name = 'IssuanceRefusal';
}
