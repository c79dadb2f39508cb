// The closed set of handshake verdict reasons; each is a metric label and a flow-log field.
import type { TokenErrorCode } from '../token/errors.ts';
import type { VerifiedIdentity } from '../token/identity-token.ts';

export const HANDSHAKE_REASONS = [
  'ok',
  'ok-fast',
  'ok-local',
  'unprotected-port',
  'allowed-without-identity',
  'peer-without-agent',
  'no-identity',
  'not-allowed',
  'observe-would-drop',
  'malformed-handshake',
  'unsupported-version',
  'malformed-token',
  'bad-alg',
  'missing-kid',
  'bad-signature',
  'bad-claims',
  'unknown-key',
  'untrusted-domain',
  'expired-token',
  'expired-credential',
  'not-yet-valid',
  'namespace-not-allowed',
  'token-credential-mismatch',
  'stale-timestamp',
  'replayed-syn',
  'replayed-ack',
  'bad-proof',
  'unproven-syn',
  'unknown-flow',
  'flow-table-full',
  'replay-cache-full',
] as const;
export type HandshakeReason = (typeof HANDSHAKE_REASONS)[number];

export class HandshakeReject extends Error {
  override readonly name = 'HandshakeReject';
  constructor(
    readonly reason: HandshakeReason,
    message: string = reason,
    /** The peer's verified identity, when the refusal came after verification (for the log). */
    readonly peer: VerifiedIdentity | null = null,
  ) {
    super(message);
  }
}

export function credentialReason(code: TokenErrorCode): HandshakeReason {
  switch (code) {
    case 'expired':
      return 'expired-credential';
    case 'unknown-kid':
      return 'unknown-key';
    default:
      return code;
  }
}

export function tokenReason(code: TokenErrorCode): HandshakeReason {
  switch (code) {
    case 'expired':
      return 'expired-token';
    case 'unknown-kid':
      return 'token-credential-mismatch';
    case 'untrusted-domain':
      return 'untrusted-domain';
    default:
      return code;
  }
}
